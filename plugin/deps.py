"""The plugin's side of its Python packages: the private folder in the QGIS profile, what is missing, the hint.

The folder is activated when the plugin is constructed, before anything imports torch, so
packages installed by "Install dependencies…" (or ``engine deps install``) are used by the
dock, the toolbox and qgis_process alike.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from qgis.core import QgsApplication

from ..engine.deps import Activation, activate, current_host, deps_dir
from ..engine.deps.host import running_python
from ..engine.deps.pins import IMPORTS

#: import name → pip package name of everything the engine needs; GDAL comes with QGIS.
REQUIRED = {**IMPORTS, "osgeo": "GDAL"}
PACKAGE = Path(__file__).absolute().parents[1]  # not resolved: the folder QGIS imports it by


def qgis_python() -> str:
    """QGIS's own Python interpreter (inside QGIS, ``sys.executable`` is just the first python3 on PATH)."""
    return running_python()[0]


def profile_dir() -> Path:
    """The active QGIS profile folder (``QGIS_CUSTOM_CONFIG_PATH`` moves it)."""
    return Path(QgsApplication.qgisSettingsDirPath())


def private_folder() -> Path:
    """Where the installer puts packages for this QGIS's Python."""
    return deps_dir(profile_dir(), current_host(qgis_python()))


def activate_private_packages() -> Activation:
    return activate(private_folder())


def missing_packages() -> list[str]:
    """pip names of required packages that cannot be imported here."""
    return [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]


def install_hint(missing: list[str]) -> str:
    """A sentence for the user: what is missing and the two ways to install it."""
    text = f"RS-CLIP Search needs these Python packages, missing from QGIS's Python: {', '.join(missing)}."
    if "GDAL" in missing:
        return text + " GDAL's Python bindings come with QGIS: reinstall QGIS with Python support."
    return (text + " Install them with \"Install dependencies…\" in the RS-CLIP Search panel, or from a terminal: "
            f"cd \"{PACKAGE.parent}\" && \"{qgis_python()}\" -m {PACKAGE.name}.engine deps install "
            f"--profile \"{profile_dir()}\" (it uses pip install --target into the profile; add --bundle PATH "
            "to install offline).")
