"""Fixtures for tests that run the plugin in a real headless QGIS (via pytest-qgis).

pytest-qgis starts one QGIS for the session with its profile in ``.qgis-settings`` at the
repository root (git-ignored; ``make test`` empties it first so every run starts clean), a
stub ``iface`` and a real map canvas. The repository is exposed as the importable plugin package
``rsclip_search`` exactly as QGIS would install it.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "rsclip_search"
SHARED_DATA = ROOT.parent / "shared" / "data"
NAIP = SHARED_DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
PROCESSING_PATH = "/usr/share/qgis/python/plugins"
#: Folders this session made outside pytest's tmp_path; removed by remove_scratch() when the run ends.
_SCRATCH: list[Path] = []


def _scratch(prefix: str) -> str:
    folder = tempfile.mkdtemp(prefix=prefix)
    _SCRATCH.append(Path(folder))
    return folder


def remove_scratch() -> None:
    """Remove the session's folders (the run ends with os._exit, so no atexit handler would)."""
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def prepare_environment() -> None:
    """Make QGIS's Processing plugin importable; keep GDAL from writing beside the shared data."""
    os.environ["GDAL_PAM_ENABLED"] = "NO"  # never write .aux.xml sidecars next to the shared rasters
    if "XDG_RUNTIME_DIR" not in os.environ:
        os.environ["XDG_RUNTIME_DIR"] = _scratch("rsclip-xdg-")
    if "RSCLIP_WEB_CACHE" not in os.environ:
        os.environ["RSCLIP_WEB_CACHE"] = _scratch("rsclip-web-cache-")  # never ~/.cache
    if PROCESSING_PATH not in sys.path:
        sys.path.append(PROCESSING_PATH)


@pytest.fixture(scope="session")
def plugin_package():
    """Import the repository as the installed plugin package ``rsclip_search``."""
    folder = Path(_scratch("rsclip-plugins-"))
    (folder / PLUGIN_NAME).symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(folder))
    import importlib

    return importlib.import_module(PLUGIN_NAME)


@pytest.fixture
def naip_raster():
    if not NAIP.exists():
        pytest.skip(f"shared test imagery not found at {NAIP} (../shared/data is absent)")
    return NAIP
