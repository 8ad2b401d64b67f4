"""Search and labelling results as styled vector layers in a "RS-CLIP results" group."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from qgis.core import (QgsCategorizedSymbolRenderer, QgsCoordinateReferenceSystem, QgsCoordinateTransform,
                       QgsFeature, QgsField, QgsFillSymbol, QgsGeometry, QgsGraduatedSymbolRenderer, QgsMapLayer,
                       QgsProject, QgsRendererCategory, QgsVectorLayer)

from ..engine.export import tile_geometry_wkt
from ..engine.results import ResultTable
from .qgis_compat import FIELD_TYPES

SEARCH_STYLE = Path(__file__).resolve().parent.parent / "resources" / "styles" / "search_results.qml"
GROUP_NAME = "RS-CLIP results"
KIND_PROPERTY = "rsclip/kind"
KEY_PROPERTY = "rsclip/query"
INDEX_PROPERTY = "rsclip/index"
#: Colours for land-cover classes, in class order (cycled past the end).
CLASS_COLOURS = ("#1f78b4", "#33a02c", "#b2df8a", "#e31a1c", "#ff7f00", "#6a3d9a", "#fdbf6f", "#a6cee3",
                 "#fb9a99", "#cab2d6", "#b15928", "#ffff99", "#8dd3c7", "#bebada", "#80b1d3", "#fccde5",
                 "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f", "#666666")


def tile_geometry(tile, target_crs_wkt: str) -> QgsGeometry:
    return QgsGeometry.fromWkt(tile_geometry_wkt(tile, target_crs_wkt))


def build_layer(data: ResultTable, name: str) -> QgsVectorLayer:
    """A styled memory layer of a result table's tiles (its fields, query and model included): graduated by score,
    or categorised by class."""
    crs = QgsCoordinateReferenceSystem.fromWkt(data.crs_wkt)
    layer = QgsVectorLayer(f"Polygon?crs={crs.authid() or 'EPSG:4326'}", name, "memory")
    if not crs.authid():
        layer.setCrs(crs)
    layer.dataProvider().addAttributes([QgsField(n, FIELD_TYPES[k]) for n, k in data.fields])
    layer.updateFields()
    feats = []
    for attributes, wkt in data.rows:
        feat = QgsFeature(layer.fields())
        feat.setAttributes(attributes)
        feat.setGeometry(QgsGeometry.fromWkt(wkt))
        feats.append(feat)
    layer.dataProvider().addFeatures(feats)
    layer.updateExtents()
    if data.kind == "labels":
        style_by_class(layer, data.classes)
    else:
        style_by_score(layer)
    return layer


def style_by_score(layer: QgsVectorLayer, classes: int = 5, style: Path = SEARCH_STYLE) -> None:
    """Apply resources/styles/search_results.qml (or ``style``), then compute its breaks from this layer's scores.

    The style lives in a .qml so it can be tuned in QGIS's style dock and saved back; its
    class breaks are data-dependent (scores of different models and queries differ), so
    they are recomputed here with the style's own method and colour ramp.
    """
    message, ok = layer.loadNamedStyle(str(style), QgsMapLayer.StyleCategory.Symbology
                                       | QgsMapLayer.StyleCategory.Labeling | QgsMapLayer.StyleCategory.Rendering)
    renderer = layer.renderer()
    if not ok or not isinstance(renderer, QgsGraduatedSymbolRenderer):
        raise RuntimeError(f"Cannot apply the plugin's style {style}: {message}")
    renderer.updateClasses(layer, max(1, min(classes, layer.featureCount())))
    layer.triggerRepaint()


def style_by_class(layer: QgsVectorLayer, classes: Sequence[str]) -> None:
    categories = []
    for i, cls in enumerate(classes):
        symbol = QgsFillSymbol.createSimple({"color": CLASS_COLOURS[i % len(CLASS_COLOURS)], "outline_style": "no"})
        categories.append(QgsRendererCategory(cls, symbol, cls))
    layer.setRenderer(QgsCategorizedSymbolRenderer("label", categories))
    layer.setOpacity(0.55)


def results_group(project: QgsProject | None = None):
    """The "RS-CLIP results" group at the top of the layer tree (created on first use)."""
    root = (project or QgsProject.instance()).layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    return group if group is not None else root.insertGroup(0, GROUP_NAME)


def result_layers(kind: str | None = None, key: str | None = None, project: QgsProject | None = None):
    project = project or QgsProject.instance()
    return [lyr for lyr in project.mapLayers().values()
            if lyr.customProperty(KIND_PROPERTY) and (kind is None or lyr.customProperty(KIND_PROPERTY) == kind)
            and (key is None or lyr.customProperty(KEY_PROPERTY) == key)]


def add_result_layer(layer: QgsVectorLayer, kind: str, key: str, index_dir: str,
                     project: QgsProject | None = None) -> QgsVectorLayer:
    """Add a result layer to the group, replacing the previous layer of the same kind and key."""
    project = project or QgsProject.instance()
    old = result_layers(kind, key, project)
    if old:
        project.removeMapLayers([lyr.id() for lyr in old])
    layer.setCustomProperty(KIND_PROPERTY, kind)
    layer.setCustomProperty(KEY_PROPERTY, key)
    layer.setCustomProperty(INDEX_PROPERTY, index_dir)
    project.addMapLayer(layer, False)
    results_group(project).insertLayer(0, layer)
    return layer


def is_result_layer(layer) -> bool:
    return isinstance(layer, QgsVectorLayer) and bool(layer.customProperty(KIND_PROPERTY))


def tile_extent_in(tile, crs: QgsCoordinateReferenceSystem, project: QgsProject | None = None):
    """The tile's bounding box in ``crs`` (e.g. the canvas CRS)."""
    geom = QgsGeometry.fromWkt(tile.footprint_wkt)
    src = QgsCoordinateReferenceSystem.fromWkt(tile.crs_wkt)
    if src != crs:
        geom.transform(QgsCoordinateTransform(src, crs, project or QgsProject.instance()))
    return geom.boundingBox()
