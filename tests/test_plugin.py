"""The plugin in a real headless QGIS: load/unload, index through a task, search, click, cancel, actions."""
import dataclasses

import pytest
from qgis.core import (Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform,
                       QgsGraduatedSymbolRenderer, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings,
                       QgsVectorLayer)
from qgis.PyQt.QtCore import Qt

TIMEOUT = 180_000


@pytest.fixture
def plugin(qgis_iface, plugin_package, qgis_new_project):
    QgsSettings().remove("rsclip_search")  # each test starts from the defaults, not the last test's choices
    qgis_iface.messageBar().clear_messages()
    instance = plugin_package.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.fixture
def naip_layer(naip_raster, qgis_new_project):
    layer = QgsRasterLayer(str(naip_raster), "NAIP 2016")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def use_tiny_model(dock, tiny_model, folder, tile_px):
    dock.set_index_dir(str(folder))
    dock.model_combo.setCurrentText("Custom checkpoint…")
    dock.arch_edit.setText(str(tiny_model.config))
    dock.checkpoint_edit.setText(str(tiny_model.checkpoint))
    dock.tile_size_spin.setValue(tile_px)
    dock.units_combo.setCurrentIndex(0)
    dock.overlap_spin.setValue(0.0)


def wait_idle(qtbot, plugin):
    qtbot.waitUntil(lambda: not plugin.controller.tasks, timeout=TIMEOUT)


def errors(iface):
    return iface.messageBar().get_messages(Qgis.Critical)


def test_load_and_unload_twice_leaves_nothing_behind(qgis_iface, plugin_package, qgis_new_project, monkeypatch):
    from unittest.mock import MagicMock

    # the stub iface's toolbar/menu/dock methods do nothing: record them (tests only)
    for name in ("addToolBarIcon", "removeToolBarIcon", "addPluginToMenu", "removePluginMenu",
                 "addDockWidget", "removeDockWidget", "addCustomActionForLayerType",
                 "removeCustomActionForLayerType"):
        monkeypatch.setattr(qgis_iface, name, MagicMock(name=name))
    registry = QgsApplication.processingRegistry()
    project = QgsProject.instance()
    signals = (project.layersAdded, project.layersRemoved, project.readProject, project.cleared)
    connected = [project.receivers(signal) for signal in signals]
    for _ in range(2):
        for name in ("addToolBarIcon", "removeToolBarIcon", "addPluginToMenu", "removePluginMenu",
                     "addDockWidget", "removeDockWidget", "addCustomActionForLayerType",
                     "removeCustomActionForLayerType"):
            getattr(qgis_iface, name).reset_mock()
        plugin = plugin_package.classFactory(qgis_iface)
        plugin.initGui()
        assert registry.providerById("rsclip_search") is not None
        assert plugin.dock is not None and plugin.dock.isHidden()
        plugin.action.trigger()
        assert not plugin.dock.isHidden() and plugin.action.isChecked()
        plugin.action.trigger()
        assert plugin.dock.isHidden()
        added = [c.args[0] for c in qgis_iface.addCustomActionForLayerType.call_args_list]
        assert [a.text() for a in added] == ["Index this layer for semantic search", "Search within this layer…",
                                            "Find tiles similar to selected"]
        assert qgis_iface.addPluginToMenu.call_args.args == ("&RS-CLIP Search", plugin.action)
        assert qgis_iface.addToolBarIcon.call_args.args == (plugin.action,)
        action, dock = plugin.action, plugin.dock
        plugin.unload()
        assert [c.args[0] for c in qgis_iface.removeCustomActionForLayerType.call_args_list] == added
        assert qgis_iface.removePluginMenu.call_args.args == ("&RS-CLIP Search", action)
        assert qgis_iface.removeToolBarIcon.call_args.args == (action,)
        assert qgis_iface.removeDockWidget.call_args.args == (dock,)
        assert registry.providerById("rsclip_search") is None
        assert plugin.dock is None and plugin.action is None
        assert [project.receivers(signal) for signal in signals] == connected, "project signals left connected"


@pytest.mark.slow
def test_heavy_libraries_are_not_imported_by_loading_the_plugin(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "rsclip_search").symlink_to(root, target_is_directory=True)
    code = ("import sys; sys.path.insert(0, %r); import rsclip_search, rsclip_search.plugin.plugin;"
            "import rsclip_search.plugin.controller, rsclip_search.ui.dock;"
            "heavy = [m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules]; assert not heavy, heavy;"
            "assert sys.modules['triton'] is None, 'triton must be blocked before torch loads';"
            "import torch, open_clip; assert 'triton' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]"
            % str(tmp_path))
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin"}
    if "PYTHONPATH" in os.environ:  # where the packages live when they are not in this Python (make test-qgis340)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_index_search_click_and_replace(plugin, naip_layer, tiny_model, tmp_path, qtbot, qgis_iface):
    dock = plugin.show_dock()
    assert [dock.rasters_list.item(i).text() for i in range(dock.rasters_list.count())] == ["NAIP 2016"]
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 112)
    dock.index_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    assert "63 tiles from 1 raster(s)" in dock.status_label.text() and "built 20" in dock.status_label.text()

    dock.top_k_spin.setValue(7)
    qtbot.keyClicks(dock.query_edit, "farm fields")
    qtbot.keyClick(dock.query_edit, Qt.Key_Return)
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    group = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results")
    assert group is not None and len(group.findLayers()) == 1
    layer = group.findLayers()[0].layer()
    assert layer.featureCount() == 7
    assert [f.name() for f in layer.fields()] == ["rank", "score", "raster", "tile_id", "query", "model"]
    assert {(f["query"], f["model"]) for f in layer.getFeatures()} == {("farm fields", "tiny-clip.json + tiny-clip.pt")}
    assert layer.crs().authid() == "EPSG:26914"
    extent = naip_layer.extent().buffered(0.01)
    assert all(extent.contains(f.geometry().boundingBox()) for f in layer.getFeatures())
    assert layer.selectedFeatureCount() == 1 and layer.selectedFeatures()[0]["rank"] == 1
    renderer = layer.renderer()  # the shipped search_results.qml, with breaks fitted to these scores
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "score"
    scores = [f["score"] for f in layer.getFeatures()]
    assert len(renderer.ranges()) >= 2 and all(renderer.rangeForValue(s) is not None for s in scores)
    assert renderer.ranges()[0].lowerValue() <= min(scores) and renderer.ranges()[-1].upperValue() >= max(scores)
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"
    assert dock.results_list.count() == 7
    assert not dock.results_list.item(0).icon().isNull(), "each result shows a thumbnail"

    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(naip_layer.crs())
    canvas.setExtent(QgsRectangle(0, 0, 10, 10))
    dock.results_list.setCurrentRow(3)
    tile_id = dock.results_list.item(3).data(Qt.UserRole)
    feat = next(f for f in layer.getFeatures() if f["tile_id"] == tile_id)
    box = feat.geometry().boundingBox()
    assert canvas.extent().contains(box)
    assert canvas.extent().center().distance(box.center()) < 1.0

    from rsclip_search.engine import jobs
    from rsclip_search.plugin.thumbnails import tile_thumbnails

    hit = plugin.controller.hits[tile_id]
    gone = dataclasses.replace(hit, tile=dataclasses.replace(hit.tile, id=-1, raster=str(tmp_path / "gone.tif")))
    from rsclip_search.plugin.thumbnails import missing_thumbnail

    thumbs = tile_thumbnails([gone, hit], jobs.info(str(tmp_path / "idx")).tiling)
    assert set(thumbs) == {-1, tile_id} and thumbs[-1] == missing_thumbnail(64), "a raster that is gone says so"
    assert thumbs[tile_id] != missing_thumbnail(64)

    dock.request_save(str(tmp_path / "hits.gpkg"))
    wait_idle(qtbot, plugin)
    saved = QgsVectorLayer(str(tmp_path / "hits.gpkg"), "saved", "ogr")
    assert saved.isValid() and saved.featureCount() == 7
    assert sorted(f["rank"] for f in saved.getFeatures()) == list(range(1, 8))
    # the same GeoPackage rule as --out: the same layer again only when the user agrees to replace it
    asked = []
    dock.confirm = lambda question: asked.append(question) or False
    assert plugin.controller.save_results(str(tmp_path / "hits.gpkg")) is None
    assert "already has a layer named 'search_farm_fields'" in asked[0]
    dock.confirm = lambda question: True
    dock.request_save(str(tmp_path / "hits.gpkg"))
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    notes = tmp_path / "notes.gpkg"
    notes.write_text("field notes")
    dock.request_save(str(notes))
    wait_idle(qtbot, plugin)
    assert any("is not a GeoPackage" in m for m in errors(qgis_iface)) and notes.read_text() == "field notes"
    qgis_iface.messageBar().clear_messages()

    dock.query_edit.setText("Farm fields ")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert len(group.findLayers()) == 1, "the same query replaces its previous layer"
    assert group.findLayers()[0].layer().customProperty("rsclip/query") == "farm fields"

    dock.results_list.setCurrentRow(0)
    dock.similar_button.click()
    wait_idle(qtbot, plugin)
    assert len(group.findLayers()) == 2
    similar = group.findLayers()[0].layer()
    assert similar.featureCount() == 7 and similar.customProperty("rsclip/kind") == "similar"

    dock.tabs.setCurrentIndex(1)
    dock.class_set_combo.setCurrentText("eurosat")
    dock.label_button.click()
    wait_idle(qtbot, plugin)
    labels = group.findLayers()[0].layer()
    assert labels.featureCount() == 63
    from qgis.core import QgsCategorizedSymbolRenderer

    assert [f.name() for f in labels.fields()] == ["label", "probability", "margin", "raster", "tile_id", "classes",
                                                   "model"]
    renderer = labels.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert {f["label"] for f in labels.getFeatures()} == {c.value() for c in renderer.categories()}, \
        "the legend lists the classes the tiles have"

    dock.tabs.setCurrentIndex(0)
    dock.min_score_spin.setValue(0.999)
    dock.query_edit.setText("water")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert dock.results_list.count() == 0 and len(group.findLayers()) == 3
    assert any("No tiles matched" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))


def raster_items(dock):
    return {dock.rasters_list.item(i).text(): dock.rasters_list.item(i) for i in range(dock.rasters_list.count())}


def test_checked_rasters_in_two_crs_then_zoom_in_a_third(plugin, naip_layer, tiny_model, tmp_path, qtbot,
                                                         qgis_iface):
    from rasters import noise, write_raster
    from rsclip_search.engine import jobs

    def add_raster(name, seed, west):
        """224 x 224 px in WGS84 just east of the NAIP tile (EPSG:26914)."""
        step = 0.02 / 224
        path = write_raster(tmp_path / f"{name}.tif", noise(3, 224, 224, seed=seed), epsg=4326,
                            transform=(west, step, 0.0, 47.02, 0.0, -step))
        layer = QgsRasterLayer(str(path), name)
        QgsProject.instance().addMapLayer(layer)
        return layer

    east = add_raster("East", 1, -99.12)
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 112)
    assert set(raster_items(dock)) == {"NAIP 2016", "East"}
    assert all(item.checkState() == Qt.Checked for item in raster_items(dock).values())
    raster_items(dock)["East"].setCheckState(Qt.Unchecked)
    add_raster("Far east", 2, -99.10)
    items = raster_items(dock)
    assert items["East"].checkState() == Qt.Unchecked, "adding a layer keeps the user's choices"
    assert items["Far east"].checkState() == Qt.Checked
    items["Far east"].setCheckState(Qt.Unchecked)
    dock.index_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    folder = str(tmp_path / "idx")
    assert [r.path for r in jobs.info(folder).rasters] == [naip_layer.source()], "only checked rasters"

    qgis_iface.setActiveLayer(east)
    plugin.layer_actions.index_action.trigger()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    assert {r.path: r.tiles for r in jobs.info(folder).rasters} == {naip_layer.source(): 63, east.source(): 4}
    assert raster_items(dock)["East"].checkState() == Qt.Unchecked

    dock.top_k_spin.setValue(67)
    dock.query_edit.setText("anything at all")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    layer = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results").findLayers()[0].layer()
    assert layer.crs().authid() == "EPSG:26914", "results are drawn in the CRS most tiles are in"
    counts = {}
    for feat in layer.getFeatures():
        counts[feat["raster"]] = counts.get(feat["raster"], 0) + 1
    assert counts == {naip_layer.source(): 63, east.source(): 4}
    to_layer = QgsCoordinateTransform(east.crs(), layer.crs(), QgsProject.instance())
    for source, extent in ((naip_layer.source(), naip_layer.extent()),
                           (east.source(), to_layer.transformBoundingBox(east.extent()))):
        box = extent.buffered(1.0)
        assert all(box.contains(f.geometry().boundingBox()) for f in layer.getFeatures() if f["raster"] == source)

    canvas = qgis_iface.mapCanvas()
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(mercator)
    canvas.setExtent(QgsRectangle(0, 0, 10, 10))
    row = next(i for i in range(dock.results_list.count()) if "East" in dock.results_list.item(i).text())
    dock.results_list.setCurrentRow(row)
    tile_id = dock.results_list.item(row).data(Qt.UserRole)
    tile = plugin.controller.hits[tile_id].tile
    box = QgsCoordinateTransform(east.crs(), mercator, QgsProject.instance()).transformBoundingBox(
        QgsRectangle(*tile.bounds))
    assert canvas.extent().contains(box), "the tile, reprojected into the canvas CRS, is in view"
    assert canvas.extent().center().distance(box.center()) < 0.05 * box.width()


def test_cancel_midway_keeps_what_was_indexed(plugin, naip_layer, tiny_model, tmp_path, qtbot, qgis_iface):
    from rsclip_search.engine import jobs

    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 16)
    dock.index_button.click()
    task = plugin.controller.index_task
    assert task is not None
    qtbot.waitUntil(lambda: task.progress() > 20, timeout=TIMEOUT)
    dock.cancel_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    info = jobs.info(str(tmp_path / "idx"))
    planned = info.rasters[0].planned
    assert 0 < info.tile_count < planned and info.rasters[0].status == "partial"
    assert f"{info.tile_count} tiles" in dock.status_label.text()
    dock.top_k_spin.setValue(3)
    qtbot.keyClicks(dock.query_edit, "trees")
    qtbot.keyClick(dock.query_edit, Qt.Key_Return)
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    layer = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results").findLayers()[0].layer()
    indexed = {t.id for t in jobs.tiles(str(tmp_path / "idx"))}
    assert layer.featureCount() == 3 and {f["tile_id"] for f in layer.getFeatures()} <= indexed


def test_layer_actions_index_and_search_within(plugin, naip_layer, tiny_model, tmp_path, qtbot, qgis_iface):
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 224)
    qgis_iface.setActiveLayer(naip_layer)
    plugin.layer_actions.index_action.trigger()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    assert "20 tiles" in dock.status_label.text()
    plugin.layer_actions.search_action.trigger()
    assert "NAIP 2016" in dock.restrict_label.text()
    qtbot.keyClicks(dock.query_edit, "road")
    qtbot.keyClick(dock.query_edit, Qt.Key_Return)
    wait_idle(qtbot, plugin)
    layer = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results").findLayers()[0].layer()
    assert {f["raster"] for f in layer.getFeatures()} == {naip_layer.source()}
    qgis_iface.setActiveLayer(layer)
    layer.selectByIds([next(layer.getFeatures()).id()])
    qgis_iface.addCustomActionForLayer.assert_any_call(plugin.layer_actions.similar_action, layer)
    plugin.layer_actions.similar_action.trigger()
    wait_idle(qtbot, plugin)
    assert any(lyr.layer().customProperty("rsclip/kind") == "similar"
               for lyr in QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results").findLayers())


def test_user_errors_go_to_the_message_bar(plugin, tmp_path, qtbot, qgis_iface):
    dock = plugin.show_dock()
    dock.set_index_dir(str(tmp_path / "no-index-here"))
    dock.query_edit.setText("water")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert any("No index at" in m for m in errors(qgis_iface))
    dock.query_edit.setText("   ")
    dock.search_button.click()
    assert any("Type what to look for" in m for m in qgis_iface.messageBar().get_messages(Qgis.Warning))


def test_missing_dependencies_are_named_in_the_dock(qgis_iface, plugin_package, monkeypatch, qgis_new_project):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "faiss") else real(name, *a))
    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    try:
        import re

        text = plugin.dock.missing_label.text()
        assert "torch" in text and "faiss-cpu" in text and "Install dependencies…" in text
        python = re.search(r'"([^"]+)" -m rsclip_search\.engine deps install --profile', text).group(1)
        assert python == sys.executable, "the interpreter running the plugin (QGIS desktop: see test_devrun.py)"
        assert not plugin.dock.tabs.isEnabled() and not plugin.dock.install_button.isHidden()
    finally:
        plugin.unload()


@pytest.mark.slow
def test_plugin_loads_when_the_ml_packages_cannot_be_imported(tmp_path):
    """A QGIS whose Python lacks torch, torchvision, open_clip, faiss and shapely still loads the plugin and toolbox."""
    import subprocess
    import sys
    from pathlib import Path

    from plugin_fixtures import PROCESSING_PATH

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "rsclip_search").symlink_to(root, target_is_directory=True)
    code = f"""
import sys
for name in ("torch", "torchvision", "open_clip", "faiss", "shapely"):
    sys.modules[name] = None  # import fails, find_spec answers None: as if never installed
sys.path[:0] = [{str(tmp_path)!r}]
sys.path.append({PROCESSING_PATH!r})
from qgis.core import QgsApplication
app = QgsApplication([], True)
app.initQgis()
from unittest.mock import MagicMock
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtWidgets import QMainWindow
window = QMainWindow()
iface = MagicMock()
iface.mainWindow.return_value = window
iface.mapCanvas.return_value = QgsMapCanvas(window)
import rsclip_search
plugin = rsclip_search.classFactory(iface)
plugin.initGui()
assert QgsApplication.processingRegistry().providerById("rsclip_search") is not None
assert not plugin.dock.tabs.isEnabled()
sys.stdout.write(plugin.dock.missing_label.text())
plugin.unload()
"""
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin", "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path), "GDAL_PAM_ENABLED": "NO"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch, torchvision, open_clip_torch, faiss-cpu, shapely" in out.stdout
    assert "Install dependencies…" in out.stdout and "-m rsclip_search.engine deps install" in out.stdout


def test_unexpected_errors_are_logged_and_reported_briefly(plugin, qtbot, qgis_iface):
    from rsclip_search.plugin.log import get_logger
    from rsclip_search.plugin.tasks import BaseTask

    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda text, tag, level: logged.append((tag, text)))

    def broken(progress, cancel):
        progress(0.5, "half way")
        raise ZeroDivisionError("a bug")

    plugin.controller.start(BaseTask("Broken job", broken, plugin.controller._done))
    wait_idle(qtbot, plugin)
    assert errors(qgis_iface) == ["RS-CLIP Search:Broken job failed with an unexpected error; "
                                  "details are in the Log Messages panel."]
    qtbot.waitUntil(lambda: any("ZeroDivisionError: a bug" in text for _, text in logged))
    assert {tag for tag, text in logged if "ZeroDivisionError" in text} == {"RS-CLIP Search"}
    get_logger()
    handlers = [h for h in get_logger().handlers if type(h).__name__ == "QgsMessageLogHandler"]
    assert len(handlers) == 1


def test_index_folder_defaults_to_beside_the_project(plugin, naip_layer, tmp_path):
    project = QgsProject.instance()
    assert project.write(str(tmp_path / "farms.qgz"))
    project.clear()
    assert project.read(str(tmp_path / "farms.qgz"))
    dock = plugin.show_dock()
    assert dock.index_dir() == str(tmp_path / "farms_rsclip_index")
    assert [dock.rasters_list.item(i).text() for i in range(dock.rasters_list.count())] == ["NAIP 2016"]


def test_unload_while_indexing_cancels_quietly(qgis_iface, plugin_package, qgis_new_project, naip_layer, tiny_model,
                                               tmp_path, qtbot):
    import gc

    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    qgis_iface.messageBar().clear_messages()
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 16)
    dock.index_button.click()
    manager = QgsApplication.taskManager()
    task_id = manager.taskId(plugin.controller.index_task)
    qtbot.waitUntil(lambda: manager.task(task_id).progress() > 5, timeout=TIMEOUT)
    plugin.unload()
    gc.collect()
    qtbot.waitUntil(lambda: manager.task(task_id) is None, timeout=TIMEOUT)
    assert not qgis_iface.messageBar().get_messages(Qgis.Critical)
    from rsclip_search.engine import jobs

    assert jobs.info(str(tmp_path / "idx")).rasters[0].status == "partial", "unloading cancelled the task"


def test_dock_choices_persist_in_qgis_settings(qgis_iface, plugin_package, qgis_new_project, tmp_path):
    QgsSettings().remove("rsclip_search")
    first = plugin_package.classFactory(qgis_iface)
    first.initGui()
    try:
        dock = first.show_dock()
        dock.set_index_dir("")  # every request stops at "choose an index folder", after saving the choices
        dock.top_k_spin.setValue(42)
        dock.min_score_spin.setValue(0.25)
        dock.search_button.click()
        dock.class_set_combo.setCurrentText("ucmerced")
        dock.templates_edit.setText("a photo of {}.")
        dock.label_button.click()
        dock.model_combo.setCurrentText("Custom checkpoint…")
        dock.arch_edit.setText(str(tmp_path / "arch.json"))
        dock.checkpoint_edit.setText(str(tmp_path / "weights.pt"))
        dock.tile_size_spin.setValue(300)
        dock.units_combo.setCurrentIndex(dock.units_combo.findData("m"))
        dock.overlap_spin.setValue(0.25)
        dock.index_button.click()
    finally:
        first.unload()
    assert QgsSettings().value("rsclip_search/search/top_k", type=int) == 42
    second = plugin_package.classFactory(qgis_iface)
    second.initGui()
    try:
        dock = second.dock
        assert (dock.top_k_spin.value(), dock.min_score_spin.value()) == (42, 0.25)
        assert dock.class_set_combo.currentText() == "ucmerced" and dock.templates_edit.text() == "a photo of {}."
        assert "21 classes" in dock.classes_preview.toPlainText()
        assert dock.model_combo.currentText() == "Custom checkpoint…"
        assert dock.arch_edit.text() == str(tmp_path / "arch.json")
        assert dock.checkpoint_edit.text() == str(tmp_path / "weights.pt")
        assert (dock.tile_size_spin.value(), dock.units_combo.currentData(), dock.overlap_spin.value()) == \
            (300, "m", 0.25)
    finally:
        second.unload()


def test_missing_raster_is_named_in_the_status(plugin, tiny_model, tmp_path):
    from rsclip_search.engine import jobs
    from rsclip_search.engine.tiling import TilingSpec
    from rasters import noise, write_raster

    raster = write_raster(tmp_path / "moved away.tif", noise(3, 64, 64))
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=32))
    dock = plugin.show_dock()
    dock.set_index_dir(str(tmp_path / "idx"))
    plugin.controller.refresh_status()
    assert "missing" not in dock.status_label.text()
    raster.unlink()
    plugin.controller.refresh_status()
    assert "1 raster(s) missing (moved or deleted): moved away.tif" in dock.status_label.text()
