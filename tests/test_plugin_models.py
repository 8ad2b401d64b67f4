"""The dock and the registry models: licence and attribution in the model list, the templates in use,
and the status line of an index made before the activation fix."""
from qgis.PyQt.QtCore import Qt

from test_plugin import plugin  # noqa: F401  (the loaded plugin, as in the plugin tests)

OLD_MODEL = {"kind": "registry", "name": "remoteclip-vit-b-32", "arch": "ViT-B-32", "checkpoint": None,
             "checkpoint_sha256": None}  # what the last release recorded for its remoteclip-vit-b-32 indexes


def make_index(folder, model: dict) -> None:
    """An empty index recording ``model`` (the status line needs no tiles and no weights)."""
    from rsclip_search.engine.index import TileIndex
    from rsclip_search.engine.tiling import TilingSpec

    TileIndex.create(folder, model, TilingSpec().to_dict(), 512).close()


def test_model_list_shows_config_activation_licence_and_attribution(plugin):
    dock = plugin.dock
    index = dock.model_combo.findText("georsclip-vit-b-32")
    tip = dock.model_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert "ViT-B-32-quickgelu (QuickGELU)" in tip and "CC-BY-4.0" in tip and "Zhang, Z." in tip
    dock.model_combo.setCurrentText("skyclip-vit-b-32")
    assert "ViT-B-32 (GELU)" in dock.model_details.text() and "MIT" in dock.model_details.text()
    assert "Wang et al. (2024)" in dock.model_details.text() and "Wang, Z." in dock.model_details.toolTip()
    dock.model_combo.setCurrentText("Custom checkpoint…")
    assert "-quickgelu" in dock.model_details.text()


def test_old_index_status_line_and_templates_in_use(plugin, tmp_path):
    dock, controller = plugin.dock, plugin.controller
    old, new = tmp_path / "old", tmp_path / "new"
    make_index(old, OLD_MODEL)
    make_index(new, {**OLD_MODEL, "arch": "ViT-B-32-quickgelu"})

    dock.set_index_dir(str(old))
    controller.refresh_status()
    status = dock.status_label.text()
    assert "Model remoteclip-vit-b-32" in status and "predates the fix of remoteclip-vit-b-32's activation" in status
    assert "choose a new index folder and index the rasters again" in status
    dock.templates_edit.setText("")
    assert dock.templates_note.text() == "In use: remoteclip-vit-b-32's own prompt templates: a satellite photo of {}."
    assert "a satellite photo of {}." in dock.templates_edit.placeholderText()
    assert "a satellite photo of {}." in dock.query_edit.toolTip()
    dock.templates_edit.setText("an aerial photo of {}")
    assert "your templates" in dock.templates_note.text()

    dock.set_index_dir(str(new))
    controller.refresh_status()
    assert "predates" not in dock.status_label.text()
