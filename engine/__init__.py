"""RS-CLIP Search engine: tiling, models, encoding, index, search and labelling.

Pure Python with no QGIS or Qt imports, so it runs from the command line
(``python -m engine``), from tests, and inside the QGIS plugin. Importing this package is
cheap: torch, open_clip and faiss load only when a function needs them.
"""
from pathlib import Path as _Path


def _plugin_version() -> str:
    """The version in the plugin's ``metadata.txt`` (beside this folder), the one file QGIS reads it from."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(_Path(__file__).resolve().parents[1] / "metadata.txt", encoding="utf-8")
        return parser.get("general", "version")
    except (OSError, configparser.Error):
        return "unknown"


__version__ = _plugin_version()
