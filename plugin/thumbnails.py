"""Small previews of result tiles for the dock, read from the rasters through the engine's tiler."""
from __future__ import annotations

from dataclasses import replace

from qgis.PyQt.QtGui import QImage

from ..engine.errors import EngineError
from ..engine.identity import exists
from ..engine.tiling import RasterTiler, TileWindow, TilingSpec


#: Results past this many get no thumbnail, so a huge top-k stays quick.
MAX_THUMBNAILS = 200


def missing_thumbnail(size: int = 64) -> QImage:
    """The picture shown for a tile whose raster is no longer at its indexed path: grey, crossed, "missing"."""
    from qgis.PyQt.QtCore import QRect, QRectF, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QPainter, QPen, QTextOption

    image = QImage(size, size, QImage.Format.Format_RGB888)
    image.fill(QColor(215, 215, 215))
    painter = QPainter(image)
    painter.setPen(QPen(QColor(164, 0, 0), max(1, size // 32)))
    painter.drawLine(0, 0, size - 1, size - 1)
    painter.drawLine(0, size - 1, size - 1, 0)
    font = QFont()
    font.setPixelSize(max(8, size // 6))
    painter.setFont(font)
    painter.fillRect(QRect(0, size // 2 - size // 8, size, size // 4), QColor(255, 255, 255))
    painter.drawText(QRectF(0, 0, size, size), "missing", QTextOption(Qt.AlignmentFlag.AlignCenter))
    painter.end()
    return image


def tile_thumbnails(hits, tiling: dict, size: int = 64) -> dict[int, QImage]:
    """tile id → QImage, read as the index reads tiles; a raster no longer at its path shows "missing".

    QImage (unlike QPixmap) may be made outside the GUI thread, so tasks call this in run().
    """
    out: dict[int, QImage] = {}
    tilers: dict[str, RasterTiler | None] = {}
    missing: dict[str, bool] = {}
    spec = replace(TilingSpec.from_dict(tiling), read_size=size, max_nodata=1.0)
    for hit in hits[:MAX_THUMBNAILS]:
        path = hit.tile.raster
        if path not in tilers:
            missing[path] = not exists(path)
            try:
                tilers[path] = None if missing[path] else RasterTiler(path, spec)
            except EngineError:
                tilers[path] = None
        tiler = tilers[path]
        if missing[path]:
            out[hit.tile.id] = missing_thumbnail(size)
            continue
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
