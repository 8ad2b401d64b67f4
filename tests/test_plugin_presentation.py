"""How jobs and results look to an analyst, in a real headless QGIS: the progress bar, the result layers'
names, which of them are shown, their legends and their colours; and the layer actions going through
the dock's own requests. (Item 10 and the action half of item 9 of issue #14.)
"""
import re

import pytest
from qgis.core import (QgsFeature, QgsGeometry, QgsLayerTreeModel, QgsProject, QgsSettings, QgsVectorLayer)
from qgis.PyQt.QtWidgets import QApplication, QStyle, QStyleOptionProgressBar
from test_plugin import naip_layer, plugin, use_tiny_model, wait_idle, errors  # noqa: F401 (fixtures, helpers)

TINY = "tiny-clip.json + tiny-clip.pt"  # how the tests' custom checkpoint is named (engine.jobs.model_label)
#: ESA WorldCover's official legend colours, from the WorldCover Product User Manual v2.0 (legend table),
#: typed here from the source, not read from the plugin's palette file, so a wrong palette fails.
WORLDCOVER = {"tree cover": "#006400", "shrubland": "#ffbb22", "grassland": "#ffff4c", "cropland": "#f096ff",
              "built-up area": "#fa0000", "bare or sparse vegetation": "#b4b4b4", "snow and ice": "#f0f0f0",
              "permanent water bodies": "#0064c8", "herbaceous wetland": "#0096a0", "mangroves": "#00cf75",
              "moss and lichen": "#fae6a0"}


def results():
    """The result group's layer nodes, newest first."""
    return QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results").findLayers()


def legend_texts(node, qtbot):
    """The legend lines under a layer in the Layers panel, once QGIS has counted the features of each class."""
    model = QgsLayerTreeModel(QgsProject.instance().layerTreeRoot())

    def texts():
        return [legend.data(0) for legend in model.layerLegendNodes(node)]

    qtbot.waitUntil(lambda: texts() and not any(t.endswith("[N/A]") for t in texts()))
    return texts()


def without_count(text: str) -> str:
    return re.sub(r" \[\d+\]$", "", text)


def indexed_dock(plugin, tiny_model, folder, tile_px, qtbot):
    """The plugin's dock with NAIP indexed by the tiny model, as a user does it on the Index tab."""
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, folder, tile_px)
    dock.index_button.click()
    wait_idle(qtbot, plugin)
    return dock


def text_room(bar) -> int:
    """Where the style draws a progress bar's text, as QGIS's own style computes it."""
    option = QStyleOptionProgressBar()
    bar.initStyleOption(option)
    return bar.style().subElementRect(QStyle.SubElement.SE_ProgressBarLabel, option, bar).width()


def test_progress_bar_text_is_readable_at_the_docks_default_width(plugin_package, qgis_new_project, qtbot):
    from rsclip_search.ui.dock import SearchDock

    dock = SearchDock()
    qtbot.addWidget(dock)
    dock.show()
    dock.resize(dock.sizeHint())  # the width a new dock gets: its size hint
    dock.set_busy(True)
    bar = dock.progress
    qtbot.waitUntil(bar.isVisible)
    message = "naip_2016.tif: tile 12 of 63"  # as indexing reports it
    dock.set_progress(42, message)
    QApplication.processEvents()
    assert bar.width() >= 0.6 * dock.width(), "the bar takes the dock's width, not ~90 px"
    assert bar.text() == f"42%  {message}"
    assert bar.fontMetrics().horizontalAdvance(bar.text()) <= text_room(bar), "the whole text is drawn"

    long = "naip_m_4709963_se_14_20160816_from_a_provider_that_likes_long_names.tif: tile 12 of 63"
    dock.set_progress(57, long)
    QApplication.processEvents()
    shown = bar.text()
    assert bar.fontMetrics().horizontalAdvance(shown) <= text_room(bar), "a long message is fitted, not clipped"
    assert shown.startswith("57%  naip_m_") and shown.endswith("tile 12 of 63") and "…" in shown
    assert bar.toolTip() == long
    dock.resize(dock.width() * 3, dock.height())
    QApplication.processEvents()
    assert bar.text() == f"57%  {long}", "with room enough the message is whole again"
    dock.set_busy(False)
    assert not bar.isVisible()


def test_result_layers_are_named_shown_and_legended_as_an_analyst_expects(plugin, naip_layer, tiny_model, tmp_path,
                                                                          qtbot, qgis_iface):
    from rsclip_search.ui.params import SimilarParams

    dock = indexed_dock(plugin, tiny_model, tmp_path / "idx", 112, qtbot)
    dock.top_k_spin.setValue(10)
    dock.query_edit.setText("farm  fields ")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    [search] = results()
    layer = search.layer()
    assert layer.name() == f"farm fields — {TINY}"
    assert dock.results_caption.text() == "10 tiles for “farm fields”:"
    assert search.isExpanded() and search.itemVisibilityChecked() and search.parent().isExpanded()
    ranges = layer.renderer().ranges()
    labels = [r.label() for r in ranges]
    assert [without_count(t) for t in legend_texts(search, qtbot)] == labels, "the Layers panel lists the classes"
    bounds = [label.split(" – ") for label in labels]
    assert all(lower != upper for lower, upper in bounds) and len(set(labels)) == len(labels)
    decimals = {len(value.split(".")[1]) for pair in bounds for value in pair}
    assert len(decimals) == 1 and decimals.pop() <= 3, labels
    assert all(float(lower) == r.lowerValue() and float(upper) == r.upperValue()
               for (lower, upper), r in zip(bounds, ranges)), "the classes are the rounded values they say"

    # "Find tiles similar to selected" on two tiles of the layer: the dock's request, with its Top and Min. score
    asked = []
    dock.similarRequested.connect(asked.append)
    ids = sorted(f["tile_id"] for f in layer.getFeatures())[:2]
    layer.selectByExpression(f'"tile_id" IN ({ids[0]}, {ids[1]})')
    dock.top_k_spin.setValue(6)
    dock.min_score_spin.setValue(-0.5)
    qgis_iface.setActiveLayer(layer)
    plugin.layer_actions.similar_action.trigger()
    wait_idle(qtbot, plugin)
    assert asked == [SimilarParams(str(tmp_path / "idx"), ids, 6, -0.5)]
    similar, earlier = results()
    assert similar.layer().name() == "similar to 2 tiles of NAIP 2016"
    assert similar.layer().featureCount() == 6
    assert dock.results_caption.text() == "6 tiles similar to 2 tiles of NAIP 2016:", "what the list now shows"
    assert similar.isExpanded() and similar.itemVisibilityChecked()
    assert not earlier.isExpanded() and not earlier.itemVisibilityChecked(), "the earlier result is put away"
    assert earlier.layer() not in QgsProject.instance().layerTreeRoot().checkedLayers()

    # "Search within this layer…" opens the Search tab restricted to the raster, ready to type
    dock.tabs.setCurrentIndex(2)
    dock.query_edit.setText("farm fields")
    qgis_iface.setActiveLayer(naip_layer)
    plugin.layer_actions.search_action.trigger()
    assert dock.tabs.currentIndex() == 0 and dock.restrict_label.text() == "Within: NAIP 2016"
    assert dock.query_edit.selectedText() == "farm fields", "typing replaces the last query"
    qtbot.keyClicks(dock.query_edit, "road")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    nodes = results()
    assert [n.layer().name() for n in nodes] == [f"road in NAIP 2016 — {TINY}", "similar to 2 tiles of NAIP 2016",
                                                 f"farm fields — {TINY}"]
    assert [(n.itemVisibilityChecked(), n.isExpanded()) for n in nodes] == [(True, True), (False, False),
                                                                          (False, False)]


def test_legend_classes_are_rounded_and_distinct(plugin_package):
    """Scores of the kind that gave "-0.1121 – -0.1121" classes (Jenks on a handful of close scores)."""
    from rsclip_search.plugin.layers import style_by_score

    scores = [-0.1123, -0.1121, -0.1118, -0.1105, -0.09, -0.05, -0.002]
    layer = QgsVectorLayer("Polygon?crs=EPSG:32614&field=score:double", "scores", "memory")
    features = []
    for i, score in enumerate(scores):
        feature = QgsFeature(layer.fields())
        feature.setAttributes([score])
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({i} 0, {i + 1} 0, {i + 1} 1, {i} 1, {i} 0))"))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    style_by_score(layer)
    ranges = layer.renderer().ranges()
    labels = [r.label() for r in ranges]
    assert labels == ["-0.12 – -0.10", "-0.10 – -0.08", "-0.06 – -0.04", "-0.02 – 0.00"]
    for score in scores:  # each score in exactly one class, as QGIS draws them (first match)
        assert sum(r.lowerValue() <= score <= r.upperValue() for r in ranges) >= 1
        assert layer.renderer().rangeForValue(score) is not None
    colours = [r.symbol().color().name() for r in ranges]
    assert len(set(colours)) == len(colours) and colours[0] == "#fef0d9" and colours[-1] == "#b30000"
    assert "#ffff00" not in colours, "no class looks like QGIS's selection (the best tile is selected)"


def test_label_layers_use_their_class_sets_palette(plugin, naip_layer, tiny_model, tmp_path, qtbot, qgis_iface):
    dock = indexed_dock(plugin, tiny_model, tmp_path / "idx", 224, qtbot)
    dock.tabs.setCurrentIndex(1)
    dock.class_set_combo.setCurrentText("worldcover")
    dock.label_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    [node] = results()
    layer = node.layer()
    assert layer.name() == f"ESA WorldCover classes — {TINY}"
    counts = {}
    for feature in layer.getFeatures():
        counts[feature["label"]] = counts.get(feature["label"], 0) + 1
    found = [c for c in WORLDCOVER if c in counts]  # the classes the tiles have, in the set's order
    colours = {c.value(): c.symbol().color().name() for c in layer.renderer().categories()}
    assert colours == {c: WORLDCOVER[c] for c in found}, "WorldCover's own colours, for the classes found"
    assert node.isExpanded() and node.customProperty("showFeatureCount")
    texts = legend_texts(node, qtbot)
    assert texts == [f"{c} [{counts[c]}]" for c in found], "the legend: each class found, with its tile count"

    dock.class_set_combo.setCurrentText("eurosat")
    dock.label_button.click()
    wait_idle(qtbot, plugin)
    eurosat, worldcover = results()
    assert eurosat.layer().name() == f"EuroSAT classes — {TINY}"
    palette = {"annual crop land": "#e6c229", "forest": "#1b7837", "brushland or shrubland": "#a6761d",
               "highway or road": "#7f7f7f", "industrial buildings": "#8e44ad", "pasture land": "#b8e186",
               "permanent crop land": "#f4a582", "residential buildings": "#d7301f", "river": "#41b6c4",
               "lake or sea": "#08519c"}  # EuroSAT's fixed palette (resources/palettes/eurosat.json)
    colours = {c.value(): c.symbol().color().name() for c in eurosat.layer().renderer().categories()}
    assert colours and all(palette[name] == colour for name, colour in colours.items())
    assert not worldcover.itemVisibilityChecked() and not worldcover.isExpanded()


@pytest.mark.parametrize("class_set", ["worldcover", "eurosat", "ucmerced"])
def test_each_shipped_class_set_has_its_own_palette(plugin_package, class_set):
    from rsclip_search.engine.classsets import load_class_set
    from rsclip_search.plugin.layers import class_colours, shipped_palettes

    classes = load_class_set(class_set)
    palette = shipped_palettes()[class_set]
    assert sorted(palette["colours"]) == sorted(c.lower() for c in classes), "one colour per class, no more"
    colours = class_colours(classes)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours) and len(set(colours)) == len(colours)
    assert palette["title"] and palette["source"]
    if class_set == "worldcover":
        assert dict(zip(classes, colours)) == WORLDCOVER
        assert "WorldCover_PUM_V2.0.pdf" in palette["source"]


def test_a_users_own_classes_get_distinct_colours(plugin_package):
    from rsclip_search.plugin.layers import class_colours

    own = ["water", "forest", "cropland", "built-up area"]  # not all of one shipped set
    colours = class_colours(own)
    assert len(set(colours)) == 4 and colours != [WORLDCOVER.get(c) for c in own]
    assert class_colours(["Cropland", "tree cover"]) == ["#f096ff", "#006400"], "a WorldCover subset keeps them"


def test_the_dock_alone_writes_no_settings(qgis_iface, plugin_package, qgis_new_project):
    """The dock without the controller: every request leaves QGIS's settings as they were."""
    from rsclip_search.ui.dock import SearchDock

    QgsSettings().remove("rsclip_search")
    dock = SearchDock()
    dock.set_models(["remoteclip-vit-b-32"], "remoteclip-vit-b-32")
    dock.set_class_sets({"eurosat": ["forest", "river"]}, "eurosat")
    dock.top_k_spin.setValue(42)
    dock.templates_edit.setText("a photo of {}.")
    for request in (dock.request_search, dock.request_similar, dock.request_label, dock.request_index):
        request()
    dock.request_save("/tmp/nowhere.gpkg")
    settings = QgsSettings()
    settings.beginGroup("rsclip_search")
    assert settings.allKeys() == []
