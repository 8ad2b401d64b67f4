"""Heat maps of result tiles as semi-transparent raster layers over the tiles (engine/heatmap.py makes them).

The GeoTIFFs go into a ``heatmaps`` folder beside the index (or a temporary folder where the index's folder
is read-only), so a saved project finds them again. Cells are drawn with bilinear smoothing and an
Inferno ramp stretched over the map's own values: only their order within one tile means much.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qgis.core import (QgsBilinearRasterResampler, QgsColorRampShader, QgsGradientColorRamp, QgsRasterBandStats,
                       QgsRasterLayer, QgsRasterShader, QgsSingleBandPseudoColorRenderer, QgsStyle)
from qgis.PyQt.QtGui import QColor

KIND_HEATMAP = "heatmap"
OPACITY = 0.6


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
    ramp = QgsStyle.defaultStyle().colorRamp("Inferno") or QgsGradientColorRamp(QColor("#000004"), QColor("#fcffa4"))
    shader_fn = QgsColorRampShader(low, high, ramp, QgsColorRampShader.Type.Interpolated)
    shader_fn.classifyColorRamp(8, -1)
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
