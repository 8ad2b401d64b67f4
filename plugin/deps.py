"""Which Python packages the engine needs are missing from QGIS's Python, and how to get them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: import name → pip package name
REQUIRED = {"torch": "torch", "open_clip": "open_clip_torch", "faiss": "faiss-cpu", "shapely": "shapely",
            "osgeo": "GDAL"}


def missing_packages() -> list[str]:
    """pip names of required packages that cannot be imported here."""
    return [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]


def qgis_python() -> str:
    """QGIS's own Python interpreter: inside QGIS, ``sys.executable`` is the QGIS program itself."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python"):
        return str(exe)
    major, minor = sys.version_info[:2]
    prefix = Path(sys.exec_prefix)
    for candidate in (prefix / "python.exe", prefix / "bin" / f"python{major}.{minor}", prefix / "bin" / "python3"):
        if candidate.is_file():
            return str(candidate)
    return f"python{major}"


def install_hint(missing: list[str]) -> str:
    """A sentence the dock shows: what is missing and the command that installs it."""
    pins = {"torch": "torch", "open_clip_torch": "open_clip_torch", "faiss-cpu": "faiss-cpu", "shapely": "shapely",
            "GDAL": "GDAL"}
    packages = " ".join(pins[m] for m in missing if m != "GDAL")
    text = (f"RS-CLIP Search needs these Python packages, missing from QGIS's Python: {', '.join(missing)}. "
            f"Install them with QGIS's own Python: \"{qgis_python()}\" -m pip install \"numpy<2\" {packages}")
    if "GDAL" in missing:
        text += " (GDAL's Python bindings come with QGIS; reinstall QGIS with Python support)"
    return text + ", then restart QGIS."
