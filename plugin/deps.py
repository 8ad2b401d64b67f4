"""Which Python packages the engine needs are missing from QGIS's Python, and how to get them."""
from __future__ import annotations

import importlib.util
import sys

#: import name → pip package name
REQUIRED = {"torch": "torch", "open_clip": "open_clip_torch", "faiss": "faiss-cpu", "shapely": "shapely",
            "osgeo": "GDAL"}


def missing_packages() -> list[str]:
    """pip names of required packages that cannot be imported here."""
    return [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]


def install_hint(missing: list[str]) -> str:
    """A sentence the dock shows: what is missing and the command that installs it."""
    pins = {"torch": "torch", "open_clip_torch": "open_clip_torch", "faiss-cpu": "faiss-cpu", "shapely": "shapely",
            "GDAL": "GDAL"}
    packages = " ".join(pins[m] for m in missing if m != "GDAL")
    text = (f"RS-CLIP Search needs these Python packages, missing from QGIS's Python: {', '.join(missing)}. "
            f"Install them with QGIS's own Python: \"{sys.executable}\" -m pip install \"numpy<2\" {packages}")
    if "GDAL" in missing:
        text += " (GDAL's Python bindings come with QGIS; reinstall QGIS with Python support)"
    return text + ", then restart QGIS."
