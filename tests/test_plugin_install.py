"""The dock's "Install dependencies…" dialog and "Diagnostics" button, driven as a user would in a real QGIS."""
import importlib
import sys

import pytest
from qgis.core import Qgis, QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication

from wheels import mini_bundle


@pytest.fixture
def plugin(qgis_iface, plugin_package, qgis_new_project):
    QgsSettings().remove("rsclip_search")
    qgis_iface.messageBar().clear_messages()
    instance = plugin_package.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


def test_install_dependencies_from_the_dock_with_a_bundle(qgis_iface, plugin_package, qgis_new_project, tmp_path,
                                                         qtbot, monkeypatch):
    """A package the engine needs is missing; the user installs it from a bundle and the dock comes alive."""
    from rsclip_search.engine.deps import probe_host
    from rsclip_search.plugin import deps, install

    monkeypatch.setattr(deps, "REQUIRED", {**deps.REQUIRED, "rsclipdemo": "rsclipdemo"})
    monkeypatch.setattr(install, "profile_dir", lambda: tmp_path / "profile")
    bundle = mini_bundle(tmp_path / "bundle", probe_host(sys.executable))
    QgsSettings().remove("rsclip_search")
    qgis_iface.messageBar().clear_messages()
    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    added = str(tmp_path / "profile")
    try:
        dock = plugin.dock
        assert "rsclipdemo" in dock.missing_label.text() and not dock.tabs.isEnabled()
        assert not dock.install_button.isHidden()
        qtbot.mouseClick(dock.install_button, Qt.LeftButton)
        dialog = plugin.controller.installer.dialog
        assert dialog.isVisible()
        plan = dialog.plan_view.text()
        assert "torch==2.14.1" in plan and "Kept as QGIS has it: numpy" in plan and dialog.install_button.isEnabled()

        dialog.bundle_edit.setText(str(tmp_path / "nowhere"))
        dialog.bundle_radio.setChecked(True)
        assert "No bundle at" in dialog.plan_view.text() and not dialog.install_button.isEnabled()
        dialog.bundle_edit.setText(str(bundle))
        dialog.bundle_edit.editingFinished.emit()
        assert f"From: offline bundle {bundle}" in dialog.plan_view.text() and "(exact)" in dialog.plan_view.text()

        qtbot.mouseClick(dialog.install_button, Qt.LeftButton)
        assert dialog.cancel_button.isVisible() and not dialog.install_button.isEnabled()
        qtbot.waitUntil(lambda: plugin.controller.installer.task is None, timeout=120_000)
        assert "Installed 1 packages" in dialog.result_label.text(), dialog.result_label.text()
        assert "no restart is needed" in dialog.result_label.text()
        assert "rsclipdemo-1.0" in dialog.log_view.toPlainText().split("Successfully installed")[-1]
        assert dialog.progress.value() == 100 and not dialog.cancel_button.isVisible()
        assert importlib.import_module("rsclipdemo").ANSWER == 42
        assert dock.missing_label.isHidden() and dock.tabs.isEnabled() and dock.install_button.isHidden()
        assert qgis_iface.messageBar().get_messages(Qgis.Success)
        assert QgsSettings().value("rsclip_search/deps/bundle") == str(bundle)
    finally:
        plugin.unload()
        sys.modules.pop("rsclipdemo", None)
        sys.path[:] = [p for p in sys.path if not p.startswith(added)]


def test_diagnostics_button_copies_a_report(plugin, qtbot, tmp_path):
    import platform

    import numpy
    from rsclip_search.plugin.log import get_logger

    get_logger().error("Indexing failed: the disk is full (test)")
    plugin.dock.set_index_dir(str(tmp_path))
    qtbot.mouseClick(plugin.dock.diagnostics_button, Qt.LeftButton)
    text = QApplication.clipboard().text()
    for expected in ("QGIS: 3.", f"Python: {platform.python_version()}", f"NumPy: {numpy.__version__}", "GDAL: 3.", "torch: 2.14.1", "device: cpu",
                     "Private packages:", "Model cache:", f"Index folder: {tmp_path} (no index yet)",
                     "error: Indexing failed: the disk is full (test)"):
        assert expected in text, f"{expected!r} missing from:\n{text}"
