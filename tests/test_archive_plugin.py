"""The QGIS dock searches an index in the archive layout like any other."""
from qgis.core import QgsProject
from qgis.PyQt.QtCore import Qt

from engine import jobs
from planted_archive import planted_model_index
from test_plugin import errors, plugin, wait_idle  # noqa: F401 (the loaded plugin fixture; waiting for its tasks)


def test_the_dock_searches_an_archived_index(plugin, tiny_model, tmp_path, qtbot, qgis_iface):
    folder = tmp_path / "idx"
    twin = planted_model_index(folder, tiny_model)
    jobs.archive_index(folder)
    dock = plugin.show_dock()
    dock.set_index_dir(str(folder))
    dock.top_k_spin.setValue(5)
    qtbot.keyClicks(dock.query_edit, "airport runway")
    qtbot.keyClick(dock.query_edit, Qt.Key.Key_Return)
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    group = QgsProject.instance().layerTreeRoot().findGroup("RS-CLIP results")
    layer = group.findLayers()[0].layer()
    assert layer.featureCount() == 5
    best = min(layer.getFeatures(), key=lambda f: f["rank"])
    assert best["tile_id"] == twin and abs(best["score"] - 1.0) < 2e-3
    assert dock.results_list.item(0).data(Qt.ItemDataRole.UserRole) == twin
