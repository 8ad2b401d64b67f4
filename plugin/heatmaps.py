"""Heat maps of result tiles as semi-transparent raster layers over the tiles (engine/heatmap.py makes them).

The GeoTIFFs go into a ``heatmaps`` folder beside the index (or a temporary folder where the index's folder
is read-only), so a saved project finds them again. Cells are drawn with bilinear smoothing on a ramp
stretched over the map's own values (only their order within one tile means much): the coolest part of
the tile is left transparent, so the imagery shows through, and the hottest is opaque yellow.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qgis.core import (QgsBilinearRasterResampler, QgsColorRampShader, QgsRasterBandStats, QgsRasterLayer,
                       QgsRasterShader, QgsSingleBandPseudoColorRenderer)
from qgis.PyQt.QtGui import QColor

KIND_HEATMAP = "heatmap"
OPACITY = 0.8
#: (position from the map's minimum to its maximum, colour with alpha): transparent, then red to yellow.
RAMP = ((0.0, QColor(0, 0, 4, 0)), (0.35, QColor(120, 28, 109, 60)), (0.6, QColor(221, 81, 58, 150)),
        (0.8, QColor(252, 165, 10, 210)), (1.0, QColor(252, 255, 164, 240)))


def heatmap_folder(index_dir: str) -> str:
    """Where the plugin writes heat maps of an index."""
    folder = Path(index_dir) / "heatmaps"
    try:
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return str(folder)
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="rsclip-heatmaps-")


def heatmap_layer(path: str, name: str) -> QgsRasterLayer:
    """The GeoTIFF as a layer: pseudocolour over its min–max, smoothed, semi-transparent."""
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the heat map {path}.")
    stats = layer.dataProvider().bandStatistics(1, QgsRasterBandStats.Stats.Min | QgsRasterBandStats.Stats.Max)
    low, high = stats.minimumValue, stats.maximumValue
    if not high > low:
        high = low + 1e-6
    shader_fn = QgsColorRampShader(low, high)
    shader_fn.setColorRampType(QgsColorRampShader.Type.Interpolated)
    shader_fn.setColorRampItemList([QgsColorRampShader.ColorRampItem(low + f * (high - low), colour,
                                                                     f"{low + f * (high - low):.3f}")
                                    for f, colour in RAMP])
    shader = QgsRasterShader(low, high)
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)
    layer.resampleFilter().setZoomedInResampler(QgsBilinearRasterResampler())
    layer.resampleFilter().setZoomedOutResampler(QgsBilinearRasterResampler())
    layer.setOpacity(OPACITY)
    return layer
