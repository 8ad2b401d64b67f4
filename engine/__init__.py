"""RS-CLIP Search engine: tiling, models, encoding, index, search and labelling.

Pure Python with no QGIS or Qt imports, so it runs from the command line
(``python -m engine``), from tests, and inside the QGIS plugin. Importing this package is
cheap: torch, open_clip and faiss load only when a function needs them.
"""

__version__ = "0.1.0"
