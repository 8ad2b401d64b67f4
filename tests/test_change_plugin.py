"""The Change tab, heat maps from the results list and the scale choice, in a real headless QGIS.

Two NAIP dates with planted blue paint (tests/test_change.py) are indexed with the planted model
(tests/planted_clip.py), at two scales; a user picks the dates in the Change tab and finds what changed,
then searches, asks where in a tile the text matches, and restricts a search to one scale.
"""
import pytest
from planted_clip import make_planted_clip
from qgis.core import (Qgis, QgsGraduatedSymbolRenderer, QgsProject, QgsRasterLayer, QgsRectangle,
                       QgsSingleBandPseudoColorRenderer, QgsVectorLayer)
from qgis.PyQt.QtCore import Qt
from test_change import APPEARED, DISAPPEARED, NAIP_2009, TILE, planted_dates
from test_plugin import plugin, wait_idle  # noqa: F401 (the loaded plugin fixture; waiting for its tasks)

pytestmark = pytest.mark.skipif(not NAIP_2009.exists(), reason="the NAIP dates of the shared test imagery are absent")


@pytest.fixture(scope="module")
def two_dates(tmp_path_factory, plugin_package):
    from rsclip_search.engine import jobs
    from rsclip_search.engine.models import resolve_model_ref
    from rsclip_search.engine.tiling import TilingSpec

    work = tmp_path_factory.mktemp("change-plugin")
    planted = make_planted_clip(work / "model")
    before, after = planted_dates(work)
    model = resolve_model_ref(arch=str(planted.config), checkpoint=str(planted.checkpoint)).to_dict()
    jobs.index_rasters(work / "index", [after, before], model=model, tiling=TilingSpec(size=TILE, scales=(1, 2)))
    return work / "index", str(before), str(after)


def messages(iface, level):
    return iface.messageBar().get_messages(level)


def group_layers():
    group = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results")
    return [node.layer() for node in group.findLayers()] if group else []


def open_index(plugin, folder):
    dock = plugin.show_dock()
    dock.set_index_dir(str(folder))
    dock.indexFolderChanged.emit(str(folder))
    return dock


def test_the_change_tab(plugin, two_dates, qtbot, qgis_iface, qgis_new_project, tmp_path):
    from osgeo import ogr

    from rsclip_search.engine.change import CHANGE_FIELDS

    index, before, after = two_dates
    dock = open_index(plugin, index)
    panel = dock.change_panel
    dock.tabs.setCurrentWidget(panel)
    assert dock.tabs.tabText(dock.tabs.currentIndex()) == "Change"
    names = [panel.before_list.item(i).text() for i in range(panel.before_list.count())]
    assert names == ["2009-08-18 · naip_20090818.tif", "2016-08-16 · naip_20160816.tif"], "oldest first, dated"
    assert panel.before() == [before] and panel.after() == [after], "the earliest date before, the latest after"
    assert not panel.direction_combo.isEnabled(), "a direction only means something with a text"
    assert not panel.scale_combo.isHidden() and panel.scale_combo.count() == 3

    # 1. no text: the places that changed most
    panel.top_k_spin.setValue(len(APPEARED) + len(DISAPPEARED))
    panel.scale_combo.setCurrentIndex(1)  # ×1 (64 px)
    panel.find_button.click()
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    result = plugin.controller.change.result
    assert sorted(tuple(r.after.window) for r in result.rows) == sorted(APPEARED + DISAPPEARED)
    assert panel.results_list.count() == 5 and "the tiles that changed most" in panel.summary_label.text()
    assert not panel.results_list.item(0).icon().isNull(), "each place shows its before and after tiles"
    assert panel.results_list.iconSize().width() == 2 * panel.results_list.iconSize().height()
    layer = group_layers()[0]
    assert layer.name() == "RS-CLIP change: changed, naip_20090818 → naip_20160816"
    assert [f.name() for f in layer.fields()] == [name for name, _ in CHANGE_FIELDS]
    assert layer.featureCount() == 5 and layer.crs().authid() == "EPSG:26914"
    renderer = layer.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "change"
    assert {f["scale"] for f in layer.getFeatures()} == {1}

    # 2. choosing a place zooms to it
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(QgsRectangle(0, 0, 10, 10))
    panel.results_list.setCurrentRow(2)
    place = next(f for f in layer.getFeatures() if f["rank"] == 3).geometry().boundingBox()
    assert canvas.extent().contains(place) and canvas.extent().center().distance(place.center()) < 1.0

    # 3. with a text: where it disappeared
    qtbot.keyClicks(panel.query_edit, "blue roofs")
    assert panel.direction_combo.isEnabled()
    panel.direction_combo.setCurrentIndex(panel.direction_combo.findData("disappeared"))
    panel.top_k_spin.setValue(len(DISAPPEARED))
    qtbot.keyClick(panel.query_edit, Qt.Key.Key_Return)
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    rows = plugin.controller.change.result.rows
    assert sorted(tuple(r.before.window) for r in rows) == sorted(DISAPPEARED)
    assert "score 1.000 →" in panel.results_list.item(0).text()
    assert len(group_layers()) == 2
    text_layer = group_layers()[0]
    assert text_layer.name().startswith("RS-CLIP change: 'blue roofs' disappeared")
    assert all(f["difference"] < 0 and f["query"] == "blue roofs" for f in text_layer.getFeatures())

    # 4. saving, and a raster checked for one date leaves the other
    panel.request_save(str(tmp_path / "gone.gpkg"))
    wait_idle(qtbot, plugin)
    ds = ogr.Open(str(tmp_path / "gone.gpkg"))
    assert ds.GetLayer(0).GetFeatureCount() == len(DISAPPEARED)
    ds = None
    panel.before_list.item(1).setCheckState(Qt.CheckState.Checked)
    assert panel.after() == [] and panel.before() == [before, after]
    panel.find_button.click()
    assert any("under After" in m for m in messages(qgis_iface, Qgis.Warning))
    assert not plugin.controller.tasks


def test_heat_map_from_the_results_list_and_one_scale(plugin, two_dates, qtbot, qgis_iface, qgis_new_project):
    index, before, after = two_dates
    QgsProject.instance().addMapLayer(QgsRasterLayer(after, "NAIP 2016"))
    dock = open_index(plugin, index)
    assert "at 2 scales" in dock.status_label.text()
    assert not dock.scale_combo.isHidden() and [dock.scale_combo.itemText(i) for i in range(3)] == [
        "all scales", "×1 (64 px)", "×2 (128 px)"]
    dock.heatmap_button.click()
    assert any("Select a result" in m for m in messages(qgis_iface, Qgis.Warning))

    dock.top_k_spin.setValue(4)
    dock.query_edit.setText("blue roofs")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert "×1" in dock.results_list.item(0).text()
    first = plugin.controller.hits[dock.results_list.item(0).data(Qt.ItemDataRole.UserRole)]
    assert first.tile.window in APPEARED + DISAPPEARED and first.scale == 1
    dock.results_list.setCurrentRow(0)
    dock.heatmap_button.click()
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    heat = group_layers()[0]
    assert isinstance(heat, QgsRasterLayer) and heat.name() == f"RS-CLIP heat map: “blue roofs” in tile {first.tile.id}"
    assert heat.opacity() < 1 and isinstance(heat.renderer(), QgsSingleBandPseudoColorRenderer)
    ramp = heat.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert ramp[0].color.alpha() == 0 and ramp[-1].color.alpha() > 200, "cool cells clear, hot cells opaque"
    box = first.tile.bounds
    assert heat.extent().toRectF().getCoords() == pytest.approx((box[0], box[1], box[2], box[3]))
    assert heat.crs().authid() == "EPSG:26914" and heat.width() == 4
    assert heat.source().startswith(str(index / "heatmaps"))
    hits_layer = group_layers()[1]
    assert isinstance(hits_layer, QgsVectorLayer), "the heat map lies over the result tiles"
    node = QgsProject.instance().layerTreeRoot().findLayer(hits_layer.id())
    assert not node.isVisible(), "the result tiles' fill is hidden so the imagery shows under the heat map"
    assert any("is hidden so the imagery shows" in m for m in messages(qgis_iface, Qgis.Success))

    dock.scale_combo.setCurrentIndex(2)
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    hits = [plugin.controller.hits[dock.results_list.item(i).data(Qt.ItemDataRole.UserRole)]
            for i in range(dock.results_list.count())]
    assert len(hits) == 4 and {h.scale for h in hits} == {2}
    layer = group_layers()[0]
    assert layer.name().startswith("blue roofs at ×2 — ") and [f["scale"] for f in layer.getFeatures()] == [2] * 4
