"""Small previews of result tiles for the dock, read from the rasters through the engine's tiler."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qgis.PyQt.QtGui import QImage

from ..engine.errors import EngineError
from ..engine.sources import is_remote
from ..engine.tiling import RasterTiler, TileWindow, TilingSpec


#: Results past this many get no thumbnail, so a huge top-k stays quick.
MAX_THUMBNAILS = 200


def tile_thumbnails(hits, tiling: dict, size: int = 64) -> dict[int, QImage]:
    """tile id → QImage, read as the index reads tiles; a raster that is gone gives no thumbnail.

    QImage (unlike QPixmap) may be made outside the GUI thread, so tasks call this in run().
    """
    out: dict[int, QImage] = {}
    tilers: dict[str, RasterTiler | None] = {}
    spec = replace(TilingSpec.from_dict(tiling), read_size=size, max_nodata=1.0)
    for hit in hits[:MAX_THUMBNAILS]:
        path = hit.tile.raster
        if path not in tilers:
            try:
                tilers[path] = RasterTiler(path, spec) if is_remote(path) or Path(path).exists() else None
            except EngineError:
                tilers[path] = None
        tiler = tilers[path]
        if tiler is None:
            continue
        try:
            pixels = tiler.read(TileWindow(*hit.tile.window))
        except EngineError:
            continue
        if pixels is None:
            continue
        data = pixels.copy(order="C")
        image = QImage(data.data, size, size, 3 * size, QImage.Format.Format_RGB888)
        out[hit.tile.id] = image.copy()
    for tiler in tilers.values():
        if tiler is not None:
            tiler.close()
    return out
