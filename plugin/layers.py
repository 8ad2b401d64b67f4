"""Search and labelling results as styled vector layers in a "RS-CLIP results" group.

How a result looks to an analyst: named from what was asked ("farm fields — remoteclip-vit-b-32",
"similar to 2 tiles of NAIP 2016"), the newest on top with its legend open and the earlier ones hidden
and collapsed, scores in classes with round bounds, land-cover labels in their class set's own colours.
"""
from __future__ import annotations

import bisect
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from qgis.core import (QgsCategorizedSymbolRenderer, QgsCoordinateReferenceSystem, QgsCoordinateTransform,
                       QgsFeature, QgsField, QgsFillSymbol, QgsGeometry, QgsGraduatedSymbolRenderer, QgsMapLayer,
                       QgsProject, QgsRendererCategory, QgsRendererRange, QgsVectorLayer)

from ..engine.export import tile_geometry_wkt
from ..engine.results import ResultTable
from .qgis_compat import FIELD_TYPES

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SEARCH_STYLE = RESOURCES / "styles" / "search_results.qml"
#: Styles of graduated result kinds other than search hits (their breaks are recomputed from the layer's values).
SCORE_STYLES = {"change": RESOURCES / "styles" / "change.qml"}
#: Colours of the shipped class sets (resources/palettes/<class set>.json, each citing its source).
PALETTES = RESOURCES / "palettes"
GROUP_NAME = "RS-CLIP results"
KIND_PROPERTY = "rsclip/kind"
KEY_PROPERTY = "rsclip/query"
INDEX_PROPERTY = "rsclip/index"
#: Colours for classes no shipped palette names (a user's own list), in class order (cycled past the end).
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
        style_by_score(layer, style=SCORE_STYLES.get(data.kind, SEARCH_STYLE))
    return layer


def style_by_score(layer: QgsVectorLayer, classes: int = 5, style: Path = SEARCH_STYLE) -> None:
    """Apply resources/styles/search_results.qml (or ``style``), then compute its classes from this layer's scores.

    The style lives in a .qml so it can be tuned in QGIS's style dock and saved back; its
    class breaks are data-dependent (scores of different models and queries differ), so
    they are recomputed here with the style's own method and colour ramp, then rounded
    (``round_classes``) so the legend reads "0.21 – 0.24", never "-0.112 – -0.112".
    """
    message, ok = layer.loadNamedStyle(str(style), QgsMapLayer.StyleCategory.Symbology
                                       | QgsMapLayer.StyleCategory.Labeling | QgsMapLayer.StyleCategory.Rendering)
    renderer = layer.renderer()
    if not ok or not isinstance(renderer, QgsGraduatedSymbolRenderer):
        raise RuntimeError(f"Cannot apply the plugin's style {style}: {message}")
    field = layer.fields().indexOf(renderer.classAttribute())
    scores = [float(f.attribute(field)) for f in layer.getFeatures() if f.attribute(field) is not None]
    if scores:
        renderer.updateClasses(layer, max(1, min(classes, len(set(scores)))))
        breaks = [r.upperValue() for r in renderer.ranges()[:-1]]
        bounds, decimals = round_classes(scores, breaks, len(renderer.ranges()))
        renderer.deleteAllClasses()
        for lower, upper in bounds:
            renderer.addClassRange(QgsRendererRange(lower, upper, renderer.sourceSymbol().clone(),
                                                    f"{lower:.{decimals}f} – {upper:.{decimals}f}"))
        renderer.classificationMethod().setLabelPrecision(decimals)
        renderer.updateColorRamp(renderer.sourceColorRamp().clone())
    layer.triggerRepaint()


def round_classes(scores: Sequence[float], breaks: Sequence[float],
                  wanted: int) -> tuple[list[tuple[float, float]], int]:
    """Class bounds rounded to the decimals that tell ``wanted`` classes over the scores' range apart.

    ``breaks`` are the inner breaks of a classification (the style's pretty breaks, or any other
    method). They are rounded to ``d`` decimals, where 10^-d is finer than a ``wanted``-th of the
    range; the outer bounds are rounded outwards (to the breaks' own step when they are evenly
    spaced, as pretty breaks are); classes that rounding merged or that hold no score are dropped.
    Every score falls in a class (the first holds [lower, upper], the others (lower, upper], as QGIS
    draws them) and no class has the same bound twice. Returns the bounds and ``d``.
    """
    ordered = sorted(scores)
    lo, hi = ordered[0], ordered[-1]
    spread = (hi - lo) / max(wanted, 1)
    decimals = 3 if spread <= 0 else min(6, max(1, math.ceil(-math.log10(spread))))
    def rounded(value: float) -> float:
        return round(value, decimals) + 0.0  # + 0.0: never "-0.0"

    step = 10.0 ** -decimals
    inner = sorted({rounded(b) for b in breaks})
    gaps = {rounded(b - a) for a, b in zip(inner, inner[1:])}
    if len(inner) >= 3 and len(gaps) == 1 and gaps.pop() > step:  # evenly spaced: outer classes as wide
        step = rounded(inner[1] - inner[0])

    floor = rounded(math.floor(round(lo / step, 6)) * step)
    ceil = rounded(math.ceil(round(hi / step, 6)) * step)
    if ceil <= floor:
        ceil = rounded(floor + step)
    edges = sorted({floor, ceil, *(rounded(b) for b in breaks if floor < rounded(b) < ceil)})
    bounds = []
    for i, (lower, upper) in enumerate(zip(edges, edges[1:])):
        first = bisect.bisect_left(ordered, lower) if i == 0 else bisect.bisect_right(ordered, lower)
        if bisect.bisect_right(ordered, upper) > first:
            bounds.append((lower, upper))
    return bounds, decimals


@lru_cache(maxsize=None)
def shipped_palettes() -> dict[str, dict]:
    """The palettes of resources/palettes by class set name: title, source and colour per class."""
    palettes = {}
    for path in sorted(PALETTES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["colours"] = {name.lower(): colour for name, colour in data["colours"].items()}
        palettes[path.stem] = data
    return palettes


def class_colours(classes: Sequence[str]) -> list[str]:
    """A colour per class: the palette of the shipped class set that names them all (ESA WorldCover's
    official colours, EuroSAT's and UC Merced's fixed ones), else a generic cycle in class order."""
    for palette in shipped_palettes().values():
        colours = palette["colours"]
        if all(c.lower() in colours for c in classes):
            return [colours[c.lower()] for c in classes]
    return [CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in range(len(classes))]


def style_by_class(layer: QgsVectorLayer, classes: Sequence[str]) -> None:
    """One category per class the layer's tiles have, in the class set's order and colours (a class no tile
    has is left out of the legend; the colours stay those of the whole set, so every map of it agrees)."""
    field = layer.fields().indexOf("label")
    present = {f.attribute(field) for f in layer.getFeatures()} if field >= 0 else set(classes)
    categories = []
    for cls, colour in zip(classes, class_colours(classes)):
        if cls not in present:
            continue
        symbol = QgsFillSymbol.createSimple({"color": colour, "outline_color": "#303030", "outline_width": "0.1",
                                             "outline_width_unit": "MM"})
        categories.append(QgsRendererCategory(cls, symbol, cls))
    layer.setRenderer(QgsCategorizedSymbolRenderer("label", categories))
    layer.setOpacity(0.6)


# -- names ---------------------------------------------------------------------------------------
def search_layer_name(query: str, model_label: str, within: str | None = None) -> str:
    """E.g. "airport runway — remoteclip-vit-b-32", "farm fields in NAIP 2016 — …"."""
    text = " ".join(query.split()) + (f" in {within}" if within else "")
    return f"{text} — {model_label}" if model_label else text


def similar_layer_name(count: int, rasters: Sequence[str]) -> str:
    """E.g. "similar to 2 tiles of naip_2019"; ``rasters``: the names of the example tiles' rasters."""
    names = list(dict.fromkeys(rasters))
    text = f"similar to {count} tile{'s' if count != 1 else ''}"
    if not names:
        return text
    if len(names) > 2:
        return f"{text} of {len(names)} rasters"
    return f"{text} of {' and '.join(names)}"


def labels_layer_name(class_set: str, classes: Sequence[str], model_label: str) -> str:
    """E.g. "ESA WorldCover classes — remoteclip-vit-b-32", "classes water, forest, cropland — …"."""
    palette = shipped_palettes().get(class_set)
    if palette is not None:
        text = f"{palette['title']} classes"
    else:
        shown = ", ".join(classes[:3]) + ("…" if len(classes) > 3 else "")
        text = f"{class_set} classes" if class_set else f"classes {shown}"
    return f"{text} — {model_label}" if model_label else text


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
    """Add a result layer on top of the group, replacing the previous layer of the same kind and key.

    The new layer is shown with its legend open (and a count per class); the earlier results of other
    queries are hidden and their legends collapsed, so the map and the Layers panel show the latest
    answer. Layers of the same query or concept (a concept's tiles and its areas) stay visible together.
    """
    project = project or QgsProject.instance()
    old = result_layers(kind, key, project)
    if old:
        project.removeMapLayers([lyr.id() for lyr in old])
    layer.setCustomProperty(KIND_PROPERTY, kind)
    layer.setCustomProperty(KEY_PROPERTY, key)
    layer.setCustomProperty(INDEX_PROPERTY, index_dir)
    group = results_group(project)
    for earlier in group.findLayers():
        earlier.setExpanded(False)
        if earlier.layer() is not None and earlier.layer().customProperty(KEY_PROPERTY) != key:
            earlier.setItemVisibilityChecked(False)
    project.addMapLayer(layer, False)
    node = group.insertLayer(0, layer)
    node.setCustomProperty("showFeatureCount", True)
    node.setItemVisibilityChecked(True)
    group.setItemVisibilityChecked(True)
    for item in (group, node):
        # collapsed, then expanded: QGIS 3.22's Layers panel misses the state of a group it has just been given
        item.setExpanded(False)
        item.setExpanded(True)
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
