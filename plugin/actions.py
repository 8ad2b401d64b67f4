"""Right-click actions in the Layers panel: index or search a raster, find tiles like the selected ones.

They go through the dock's own requests (``request_index``, ``focus_search_within``, ``request_similar``),
so an action asks exactly what the same choice in the dock would, with the dock's Top and Min. score.
"""
from __future__ import annotations

from qgis.core import Qgis, QgsMapLayerType, QgsProject
from qgis.PyQt.QtWidgets import QAction

from .layers import INDEX_PROPERTY, is_result_layer

MENU = "RS-CLIP Search"


class LayerActions:
    def __init__(self, iface, controller, dock_opener) -> None:
        self.iface = iface
        self.controller = controller
        self.open_dock = dock_opener
        parent = iface.mainWindow()
        self.index_action = QAction("Index this layer for semantic search", parent)
        self.index_action.triggered.connect(self.index_layer)
        self.search_action = QAction("Search within this layer…", parent)
        self.search_action.triggered.connect(self.search_in_layer)
        self.similar_action = QAction("Find tiles similar to selected", parent)
        self.similar_action.triggered.connect(self.similar_to_selected)
        self.installed: list[QAction] = []

    def install(self) -> None:
        """Raster actions on every raster layer; "similar" only on RS-CLIP result layers, as they come."""
        for action, kind, all_layers in ((self.index_action, QgsMapLayerType.RasterLayer, True),
                                         (self.search_action, QgsMapLayerType.RasterLayer, True),
                                         (self.similar_action, QgsMapLayerType.VectorLayer, False)):
            self.iface.addCustomActionForLayerType(action, MENU, kind, all_layers)
            self.installed.append(action)
        project = QgsProject.instance()
        self.attach(list(project.mapLayers().values()))
        project.layersAdded.connect(self.attach)

    def attach(self, layers) -> None:
        for layer in layers:
            if is_result_layer(layer):
                self.iface.addCustomActionForLayer(self.similar_action, layer)

    def remove(self) -> None:
        try:
            QgsProject.instance().layersAdded.disconnect(self.attach)
        except TypeError:
            pass
        for action in self.installed:
            self.iface.removeCustomActionForLayerType(action)
        self.installed.clear()

    def _raster(self):
        layer = self.iface.activeLayer()
        if layer is None or layer.type() != QgsMapLayerType.RasterLayer:
            self.controller.notify("Choose a raster layer in the Layers panel first.", Qgis.MessageLevel.Warning)
            return None
        return layer

    def index_layer(self) -> None:
        from .webmap import is_web_layer

        layer = self._raster()
        if layer is None:
            return
        if is_web_layer(layer):  # a web map needs an extent and a resolution: its dialog asks for them
            self.open_dock()
            self.controller.open_web_indexer(layer)
            return
        self.open_dock().request_index([layer.source()])

    def search_in_layer(self) -> None:
        layer = self._raster()
        if layer is None:
            return
        self.open_dock().focus_search_within(layer.name(), layer.source())

    def similar_to_selected(self) -> None:
        layer = self.iface.activeLayer()
        if not is_result_layer(layer):
            self.controller.notify("Choose an RS-CLIP result layer and select some of its tiles.",
                                   Qgis.MessageLevel.Warning)
            return
        field = layer.fields().indexOf("tile_id")
        ids = sorted({int(f.attribute(field)) for f in layer.selectedFeatures()})
        if not ids:
            self.controller.notify("Select one or more tiles of the result layer first.", Qgis.MessageLevel.Warning)
            return
        self.open_dock().request_similar(ids, layer.customProperty(INDEX_PROPERTY))
