"""The find-every-X loop in the dock's Concepts tab, in a real headless QGIS, as a user drives it.

The tiny random-weight model makes rankings meaningless, so this checks the mechanics: marks from
the list and from map selections are stored, the method and the ranking change on Refine, areas and
training data are written with their fields, and the concept comes back with the project.
"""
import pytest
from qgis.core import NULL, Qgis, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from test_plugin import plugin, wait_idle  # noqa: F401 (the loaded plugin fixture; waiting for its tasks)


@pytest.fixture
def project_with_index(naip_raster, tiny_model, tmp_path, qgis_new_project):
    """A saved project with NAIP, and its default index (beside the project) built with the tiny model."""
    from rsclip_search.engine import jobs
    from rsclip_search.engine.models import resolve_model_ref
    from rsclip_search.engine.tiling import TilingSpec

    layer = QgsRasterLayer(str(naip_raster), "NAIP 2016")
    QgsProject.instance().addMapLayer(layer)
    model = resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)).to_dict()
    folder = tmp_path / "farms_rsclip_index"
    jobs.index_rasters(folder, [str(naip_raster)], model=model, tiling=TilingSpec(size=112))
    assert QgsProject.instance().write(str(tmp_path / "farms.qgz"))
    return tmp_path / "farms.qgz", folder


def messages(iface, level):
    return iface.messageBar().get_messages(level)


def group_layers():
    group = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results")
    return {node.layer().name(): node.layer() for node in group.findLayers()} if group else {}


def test_the_loop_in_the_dock(plugin, project_with_index, qtbot, qgis_iface, tmp_path):
    from osgeo import ogr

    from rsclip_search.engine import jobs

    project_file, folder = project_with_index
    project = QgsProject.instance()
    project.clear()
    assert project.read(str(project_file))
    dock = plugin.show_dock()
    assert dock.index_dir() == str(folder)
    panel = dock.concepts_panel
    dock.tabs.setCurrentWidget(panel)
    assert panel.concept_combo.count() == 0 and not panel.refine_button.isEnabled()

    # 1. search by text: the concept is created, named after the text
    qtbot.keyClicks(panel.query_edit, "farm fields")
    panel.negative_edit.setText("roads")
    panel.top_k_spin.setValue(12)
    panel.search_button.click()
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    assert panel.concept() == "farm fields" and [c.name for c in jobs.concept_list(folder)] == ["farm fields"]
    assert "text + negative text" in panel.method_label.text()
    assert panel.results_list.count() == 12
    first = [row.tile_id for row in panel.rows()]
    layer = group_layers()["RS-CLIP concept: farm fields"]
    assert layer.featureCount() == 12
    assert [f.name() for f in layer.fields()] == ["rank", "score", "raster", "tile_id", "mark", "concept", "model"]
    assert {(f["concept"], f["model"]) for f in layer.getFeatures()} == \
        {("farm fields", "tiny-clip.json + tiny-clip.pt")}
    assert layer.renderer().type() == "RuleRenderer", "the shipped concept_tiles.qml"
    assert panel.histogram.counts and sum(panel.histogram.counts) == 63
    rnd = plugin.controller.concepts.round
    assert panel.count_label.text() == f"{rnd.count_above(panel.threshold()):,} of 63 tiles at or above"

    # 2. accept and reject rows of the list
    for i in (0, 1, 2):
        panel.row(i).accept_button.click()
    for i in (3, 4):
        panel.row(i).reject_button.click()
    concept = jobs.concept_list(folder)[0]
    assert (concept.accepted, concept.rejected) == (3, 2)
    assert [row.mark for row in panel.rows()[:6]] == ["accepted"] * 3 + ["rejected"] * 2 + [""]
    assert "✓ accepted" in panel.row(0).label.text() and panel.row(0).accept_button.isChecked()
    marks_on_map = {f["tile_id"]: f["mark"] for f in layer.getFeatures()}
    assert marks_on_map[first[0]] == "accepted" and marks_on_map[first[3]] == "rejected"
    panel.row(2).accept_button.click()  # a second click unmarks
    assert jobs.concept_list(folder)[0].accepted == 2 and panel.row(2).mark == ""
    panel.row(2).accept_button.click()

    # 3. accept and reject the tiles selected on the map
    by_tile = {f["tile_id"]: f.id() for f in layer.getFeatures()}
    layer.selectByIds([by_tile[t] for t in first[5:8]])
    panel.accept_selected_button.click()
    layer.selectByIds([by_tile[t] for t in first[8:11]])
    panel.reject_selected_button.click()
    concept = jobs.concept_list(folder)[0]
    assert (concept.accepted, concept.rejected) == (6, 5)
    assert {f["tile_id"]: f["mark"] for f in layer.getFeatures()}[first[9]] == "rejected"
    assert "6 accepted, 5 rejected" in panel.method_label.text()

    # 4. refine: the classifier takes over and the ranking changes
    panel.refine_button.click()
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    assert "logistic regression on 6 positive and 5 rejected tiles" in panel.method_label.text()
    refined = [row.tile_id for row in panel.rows()]
    assert refined != first and not set(refined) & set(first[:11]), "marked tiles leave the list"
    assert plugin.controller.concepts.round.method == "logistic"
    assert len(group_layers()) == 1, "the concept's layer is replaced, not duplicated"
    layer = group_layers()["RS-CLIP concept: farm fields"]
    on_map = {f["tile_id"]: (f["mark"], f["rank"]) for f in layer.getFeatures()}
    assert layer.featureCount() == 12 + 11, "the listed tiles and the marked ones"
    assert sorted(m for m, _ in on_map.values() if m) == ["accepted"] * 6 + ["rejected"] * 5
    assert all(rank is None or rank == NULL for m, rank in on_map.values() if m), "marked tiles have no rank"
    panel.next_button.click()
    wait_idle(qtbot, plugin)
    nxt = plugin.controller.concepts.round
    assert [row.tile_id for row in panel.rows()] == [h.tile.id for h in nxt.next]
    assert "label these next" in panel.method_label.text()

    # 5. the live threshold count (typed, or clicked on the histogram), then areas
    from qgis.PyQt.QtCore import QPoint

    histogram = panel.histogram
    qtbot.mouseClick(histogram, Qt.MouseButton.LeftButton, pos=QPoint(int(histogram.width() * 0.75), 10))
    clicked = panel.threshold()
    edges = histogram.edges
    assert edges[0] < clicked < edges[-1] and histogram.threshold == pytest.approx(clicked)
    assert panel.count_label.text() == f"{nxt.count_above(clicked):,} of 63 tiles at or above"
    panel.set_threshold(0.5)
    assert panel.count_label.text() == f"{nxt.count_above(0.5):,} of 63 tiles at or above"
    lowest = float(nxt.scores.scores.min())
    panel.set_threshold(lowest)
    assert panel.count_label.text() == "63 of 63 tiles at or above"
    panel.request_areas(str(tmp_path / "farm_areas.gpkg"))
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    layers = group_layers()
    areas, tiles = layers["RS-CLIP areas: farm fields"], layers["RS-CLIP area tiles: farm fields"]
    assert areas.source().startswith(str(tmp_path / "farm_areas.gpkg"))
    assert areas.featureCount() == 1 and tiles.featureCount() == 63
    area = next(areas.getFeatures())
    assert (area["concept"], area["query"], area["negative"], area["accepted"], area["rejected"], area["marks"]) == \
        ("farm fields", "farm fields", "roads", 6, 5, 11)
    assert area["threshold"] == pytest.approx(lowest, abs=1e-6) and area["tiles"] == 63
    assert area["area_m2"] == pytest.approx(934 * 723 * 25, rel=3e-3) and area["area_ha"] == pytest.approx(
        area["area_m2"] / 1e4)
    assert areas.labelsEnabled() and tiles.renderer().symbol().symbolLayer(0).brushStyle() == 0  # outlines only
    assert {f["verdict"] for f in tiles.getFeatures()} == {"accepted", "rejected", ""}
    panel.request_areas(str(tmp_path / "farm_areas.gpkg"))  # again into the same file: replaced, not duplicated
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical) and len(group_layers()) == 3

    # 6. training data
    panel.request_export(str(tmp_path / "farm_training.gpkg"), str(tmp_path / "chips"))
    wait_idle(qtbot, plugin)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    ds = ogr.Open(str(tmp_path / "farm_training.gpkg"))
    lyr = ds.GetLayerByName("training_tiles")
    feats = list(lyr)
    assert sorted(f["verdict"] for f in feats) == ["accepted"] * 6 + ["rejected"] * 5
    assert {f["concept"] for f in feats} == {"farm fields"} and all(f["chip"] for f in feats)
    assert len(list((tmp_path / "chips" / "accepted").glob("*.tif"))) == 6
    assert any("11 chip(s)" in m for m in messages(qgis_iface, Qgis.Success))

    # 7. close and reopen the project: the concept and its marks are there
    assert project.write(str(project_file))
    project.clear()
    dock.set_index_dir(str(tmp_path / "elsewhere"))
    dock.indexFolderChanged.emit(str(tmp_path / "elsewhere"))
    assert panel.concept_combo.count() == 0 and panel.results_list.count() == 0
    assert project.read(str(project_file))
    assert panel.concept() == "farm fields"
    assert not project.isDirty(), "opening the project with its concept does not modify it"
    assert (panel.query_edit.text(), panel.negative_edit.text()) == ("farm fields", "roads")
    assert "6 accepted, 5 rejected" in panel.method_label.text()
    panel.refine_button.click()
    wait_idle(qtbot, plugin)
    assert "logistic regression on 6 positive and 5 rejected tiles" in panel.method_label.text()


def test_concepts_new_rename_delete_and_bad_input(plugin, project_with_index, qtbot, qgis_iface, tmp_path):
    from rsclip_search.engine import jobs

    _, folder = project_with_index
    dock = plugin.show_dock()
    dock.set_index_dir(str(folder))
    dock.indexFolderChanged.emit(str(folder))
    panel = dock.concepts_panel
    panel.query_edit.setText("rivers")
    panel.request_new("water")
    wait_idle(qtbot, plugin)
    assert panel.concept() == "water" and jobs.concept_list(folder)[0].query == "rivers"

    # refine with no marks: one sentence in the message bar
    panel.refine_button.click()
    wait_idle(qtbot, plugin)
    assert any("has no accepted or rejected tiles yet" in m for m in messages(qgis_iface, Qgis.Critical))

    # a map selection with a tile that is not in the index
    stranger = QgsVectorLayer("Polygon?crs=EPSG:26914&field=tile_id:integer", "stranger", "memory")
    from qgis.core import QgsFeature, QgsGeometry, QgsRectangle

    feat = QgsFeature(stranger.fields())
    feat.setAttributes([999999])
    feat.setGeometry(QgsGeometry.fromRect(QgsRectangle(0, 0, 1, 1)))
    stranger.dataProvider().addFeatures([feat])
    from rsclip_search.plugin.layers import add_result_layer

    add_result_layer(stranger, "search", "stranger", str(folder))
    stranger.selectAll()
    panel.accept_selected_button.click()
    assert any("Tile 999999 is not in the index" in m for m in messages(qgis_iface, Qgis.Critical))
    stranger.removeSelection()
    qgis_iface.messageBar().clear_messages()
    panel.reject_selected_button.click()
    assert any("Select tiles on the map first" in m for m in messages(qgis_iface, Qgis.Warning))

    # a threshold outside the scores
    panel.search_button.click()
    wait_idle(qtbot, plugin)
    from rsclip_search.ui.concept_params import ConceptAreasParams

    plugin.controller.concepts.areas(ConceptAreasParams(str(folder), "water", 5.0, str(tmp_path / "a.gpkg")))
    wait_idle(qtbot, plugin)
    assert any("is outside the scores" in m for m in messages(qgis_iface, Qgis.Critical))

    # tiles selected on the map as examples: Search then uses them with the text
    layer = group_layers()["RS-CLIP concept: water"]
    layer.selectByIds([f.id() for f in layer.getFeatures()][:2])
    panel.example_selected_button.click()
    assert jobs.concept_list(folder)[0].examples == 2
    panel.search_button.click()
    wait_idle(qtbot, plugin)
    assert "text + example tiles" in panel.method_label.text()

    # an unknown concept (deleted behind the dock's back)
    jobs.concept_delete(folder, "water")
    panel.row(0).accept_button.click()
    assert any("There is no concept 'water'" in m for m in messages(qgis_iface, Qgis.Critical))
    assert panel.row(0).mark == "", "a refused mark is not shown as made"

    jobs.concept_create(folder, "water", "rivers")
    plugin.controller.concepts.refresh()
    panel.request_rename("lakes")
    assert panel.concept() == "lakes" and [c.name for c in jobs.concept_list(folder)] == ["lakes"]
    panel.request_delete(confirm=False)
    assert jobs.concept_list(folder) == [] and panel.concept_combo.count() == 0
    assert not panel.refine_button.isEnabled()
