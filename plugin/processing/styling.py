"""Styles applied to algorithm outputs once QGIS has loaded them (as QGIS's own algorithms do)."""
from __future__ import annotations

from collections import deque
from typing import Callable

from qgis.core import QgsFillSymbol, QgsProcessingLayerPostProcessorInterface, QgsSingleSymbolRenderer, QgsVectorLayer


class LayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Calls ``style(layer)`` on a loaded output layer."""

    #: QGIS holds only the C++ side of a post-processor; without a Python reference the Python
    #: part is collected and nothing happens, possibly after the algorithm object is gone.
    #: A short queue keeps the recent ones alive.
    _alive: deque = deque(maxlen=64)

    def __init__(self, style: Callable[[QgsVectorLayer], None]) -> None:
        super().__init__()
        self.style = style

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            self.style(layer)


def style_on_load(context, dest: str, style: Callable[[QgsVectorLayer], None]) -> None:
    """Style the output ``dest`` when QGIS loads it into the project (no-op when it is not loaded)."""
    if context.willLoadLayerOnCompletion(dest):
        styler = LayerStyler(style)
        LayerStyler._alive.append(styler)
        context.layerToLoadOnCompletionDetails(dest).setPostProcessor(styler)


def style_footprints(layer: QgsVectorLayer) -> None:
    """Outlines only, so the indexed imagery stays visible under the tile grid."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": "#ff7f00", "outline_width": "0.3"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
