"""The plugin in a real headless QGIS: load/unload, index through a task, search, click, cancel, actions."""
import pytest
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import Qt

TIMEOUT = 180_000


@pytest.fixture
def plugin(qgis_iface, plugin_package, qgis_new_project):
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


def test_load_and_unload_twice_leaves_nothing_behind(qgis_iface, plugin_package, qgis_new_project):
    registry = QgsApplication.processingRegistry()
    for _ in range(2):
        qgis_iface.addCustomActionForLayerType.reset_mock()
        qgis_iface.removeCustomActionForLayerType.reset_mock()
        plugin = plugin_package.classFactory(qgis_iface)
        plugin.initGui()
        assert registry.providerById("rsclip_search") is not None
        assert {a.algorithmId() if hasattr(a, "algorithmId") else a.id()
                for a in registry.providerById("rsclip_search").algorithms()} == {
            "rsclip_search:build_index", "rsclip_search:search_text", "rsclip_search:label_tiles",
            "rsclip_search:similar_tiles"}
        assert plugin.dock is not None and plugin.dock.isHidden()
        plugin.action.trigger()
        assert not plugin.dock.isHidden() and plugin.action.isChecked()
        added = [c.args[0] for c in qgis_iface.addCustomActionForLayerType.call_args_list]
        assert len(added) == 3
        plugin.unload()
        removed = [c.args[0] for c in qgis_iface.removeCustomActionForLayerType.call_args_list]
        assert removed == added
        assert registry.providerById("rsclip_search") is None
        assert plugin.dock is None and plugin.action is None


def test_heavy_libraries_are_not_imported_by_loading_the_plugin(tmp_path):
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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr


def test_index_search_click_and_replace(plugin, naip_layer, tiny_model, tmp_path, qtbot, qgis_iface):
    dock = plugin.show_dock()
    assert [dock.rasters_list.item(i).text() for i in range(dock.rasters_list.count())] == ["NAIP 2016"]
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 112)
    dock.index_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    assert "63 tiles from 1 raster(s)" in dock.status_label.text()

    dock.top_k_spin.setValue(7)
    qtbot.keyClicks(dock.query_edit, "farm fields")
    qtbot.keyClick(dock.query_edit, Qt.Key_Return)
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    group = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results")
    assert group is not None and len(group.findLayers()) == 1
    layer = group.findLayers()[0].layer()
    assert layer.featureCount() == 7
    assert [f.name() for f in layer.fields()] == ["rank", "score", "raster", "tile_id"]
    assert layer.crs().authid() == "EPSG:26914"
    extent = naip_layer.extent().buffered(0.01)
    assert all(extent.contains(f.geometry().boundingBox()) for f in layer.getFeatures())
    assert layer.selectedFeatureCount() == 1 and layer.selectedFeatures()[0]["rank"] == 1
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

    dock.query_edit.setText("Farm fields ")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    assert len(group.findLayers()) == 1, "the same query replaces its previous layer"

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

    renderer = labels.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and len(renderer.categories()) == 10
    assert {f["label"] for f in labels.getFeatures()} <= {c.value() for c in renderer.categories()}


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
    assert len(jobs.search(str(tmp_path / "idx"), "trees", top_k=3)) == 3


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

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "faiss") else real(name, *a))
    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    try:
        text = plugin.dock.missing_label.text()
        assert "torch" in text and "faiss-cpu" in text and "pip install" in text
        assert not plugin.dock.tabs.isEnabled()
    finally:
        plugin.unload()
