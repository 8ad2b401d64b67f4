"""One rule per job: the command line, the toolbox and the dock given the same request give the same answer.

Indexing: another tile size or model than an existing index holds is refused with the same sentence by all
three; leaving them out adds to the index with its own (the dock shows them locked). Results: a search saved
by each front end has the same fields, with the query and the model on every row.
"""
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsProcessingException, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import Qt

from test_plugin import errors, plugin, use_tiny_model, wait_idle  # noqa: F401 (plugin: a fixture)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "naip"
NAIP = DATA / "naip_m_4709963_se_14_20160816.tif"
NAIP_2009 = DATA / "naip_m_4709963_se_14_20090818.tif"
NAIP_2010 = DATA / "naip_m_4709963_se_14_20100629.tif"
NAIP_2012 = DATA / "naip_m_4709963_se_14_20120731.tif"
pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {DATA}")


def cli(capsys, *args) -> tuple[int, str]:
    """``python -m engine`` in this process: exit status and the error it printed (without "rsclip: error: ")."""
    from rsclip_search.engine.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rsclip: error: ")]
    return code, lines[-1][len("rsclip: error: "):] if lines else ""


def toolbox(params: dict) -> str:
    """Build semantic index through processing.run: the sentence it refused with ("" when it ran)."""
    import processing

    try:
        processing.run("rsclip_search:build_index", {"OUTPUT": "TEMPORARY_OUTPUT", **params})
    except QgsProcessingException as exc:
        return str(exc).strip().splitlines()[-1]
    return ""


def dock_click(plugin, qtbot, qgis_iface) -> str:
    """The dock's Index button: the critical message it showed ("" when it indexed)."""
    qgis_iface.messageBar().clear_messages()
    plugin.dock.index_button.click()
    wait_idle(qtbot, plugin)
    shown = errors(qgis_iface)
    return shown[-1].split(":", 1)[-1] if shown else ""


def tile_sizes(folder) -> dict:
    from rsclip_search.engine import jobs

    return {Path(path).name: grid.tile_px for path, grid in jobs.info(folder).grids.items()}


@pytest.mark.slow
def test_another_tile_size_or_model_gets_the_same_refusal_everywhere(plugin, qgis_processing, tiny_model,
                                                                     tmp_path, qtbot, qgis_iface, capsys):
    folder = tmp_path / "idx"
    arch, checkpoint = str(tiny_model.config), str(tiny_model.checkpoint)
    custom = {"MODEL": "custom", "ARCH": arch, "CHECKPOINT": checkpoint}
    for path in (NAIP, NAIP_2010, NAIP_2012):
        QgsProject.instance().addMapLayer(QgsRasterLayer(str(path), path.stem))
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, folder, 112)  # the dock shows the folder before there is an index in it
    for i in range(dock.rasters_list.count()):  # index the 2012 image only
        item = dock.rasters_list.item(i)
        item.setCheckState(Qt.CheckState.Checked if "2012" in item.text() else Qt.CheckState.Unchecked)

    # the command line builds the index with 224 px tiles
    assert cli(capsys, "index", NAIP, "--index", folder, "--arch", arch, "--checkpoint", checkpoint)[0] == 0
    assert tile_sizes(folder) == {NAIP.name: (224, 224)}

    # 112 px tiles, the same model: the same sentence from all three
    refusal = (f"The index at {folder} was built with other tile settings (224 px tiles, overlap 0), not 112 px "
               "tiles, overlap 0; an index cuts all its rasters alike: add to it with its own settings, or use a new "
               "index folder for other tile settings.")
    code, said = cli(capsys, "index", NAIP_2009, "--index", folder, "--arch", arch, "--checkpoint", checkpoint,
                     "--tile-size", "112", "--overlap", "0")
    assert (code, said) == (2, refusal)
    assert toolbox({"INPUT": [str(NAIP_2009)], "INDEX": str(folder), **custom, "TILE_SIZE": 112,
                    "TILE_UNITS": "pixels", "OVERLAP": 0.0}) == refusal
    assert dock_click(plugin, qtbot, qgis_iface) == refusal  # its fields were not locked yet: it asked for 112 px

    # another model, the tiles left out: refused alike (before any download)
    refusal = (f"The index at {folder} was built with tiny-clip.json + tiny-clip.pt, not remoteclip-vit-b-32; an "
               "index keeps one model so that its vectors stay comparable: add to it with its own settings, or use "
               "a new index folder for another model.")
    assert cli(capsys, "index", NAIP_2009, "--index", folder, "--model", "remoteclip-vit-b-32") == (2, refusal)
    assert toolbox({"INPUT": [str(NAIP_2009)], "INDEX": str(folder), "MODEL": "remoteclip-vit-b-32"}) == refusal
    dock.tile_size_spin.setValue(224)
    dock.model_combo.setCurrentText("remoteclip-vit-b-32")
    assert dock_click(plugin, qtbot, qgis_iface) == refusal
    assert tile_sizes(folder) == {NAIP.name: (224, 224)}, "nothing was added"

    # the settings left out: each adds its raster with the index's own model and 224 px tiles
    assert cli(capsys, "index", NAIP_2009, "--index", folder) == (0, "")
    assert toolbox({"INPUT": [str(NAIP_2010)], "INDEX": str(folder)}) == ""
    dock.indexFolderChanged.emit(str(folder))  # the dock looks at the folder again: its fields show the index's own
    assert not dock.model_combo.isEnabled() and not dock.tile_size_spin.isEnabled()
    assert not dock.units_combo.isEnabled() and not dock.overlap_spin.isEnabled()
    assert (dock.model_combo.currentText(), dock.arch_edit.text(), dock.checkpoint_edit.text()) == \
        ("Custom checkpoint…", arch, checkpoint)
    assert (dock.tile_size_spin.value(), dock.units_combo.currentData(), dock.overlap_spin.value()) == (224, "px", 0)
    note = dock.index_settings_note
    assert not note.isHidden() and "built with tiny-clip.json + tiny-clip.pt and 224 px tiles, overlap 0" in \
        note.text() and "choose a new index folder" in note.text()
    assert dock_click(plugin, qtbot, qgis_iface) == ""
    assert tile_sizes(folder) == {p.name: (224, 224) for p in (NAIP, NAIP_2009, NAIP_2010, NAIP_2012)}

    # a new folder gives the fields back, with what the user had chosen
    dock.set_index_dir(str(tmp_path / "new"))
    dock.indexFolderChanged.emit(str(tmp_path / "new"))
    assert dock.tile_size_spin.isEnabled() and dock.model_combo.isEnabled() and note.isHidden()
    assert (dock.model_combo.currentText(), dock.tile_size_spin.value()) == ("remoteclip-vit-b-32", 224)


@pytest.mark.slow
def test_a_search_saved_by_each_front_end_has_the_same_fields_with_its_query_and_model(
        plugin, qgis_processing, tiny_model, tmp_path, qtbot, qgis_iface, capsys):
    import processing
    from rsclip_search.engine import jobs
    from rsclip_search.engine.tiling import TilingSpec

    folder = tmp_path / "idx"
    model = jobs.resolve_model(folder, arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    jobs.index_rasters(folder, [str(NAIP)], model=model, tiling=TilingSpec(size=112))
    out = tmp_path / "results.gpkg"
    assert cli(capsys, "search", "farm fields", "--index", folder, "--top-k", "5", "--out", out,
               "--layer", "cli")[0] == 0
    processing.run("rsclip_search:search_text", {"INDEX": str(folder), "QUERY": "farm fields", "TOP_K": 5,
                                                 "OUTPUT": f"ogr:dbname='{out}' table=\"toolbox\" (geom)"})
    dock = plugin.show_dock()
    dock.set_index_dir(str(folder))
    dock.top_k_spin.setValue(5)
    dock.query_edit.setText("farm fields")
    dock.search_button.click()
    wait_idle(qtbot, plugin)
    plugin.controller.last_layer_name = "dock"
    dock.request_save(str(out))
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    shown = plugin.controller.last_layer  # the dock's map layer

    def rows(layer) -> list:
        return sorted(tuple(f.attributes()[1:]) for f in layer.getFeatures())  # every field but the GeoPackage fid

    expected = ["rank", "score", "raster", "tile_id", "query", "model"]
    layers = {name: QgsVectorLayer(f"{out}|layername={name}", name, "ogr") for name in ("cli", "toolbox", "dock")}
    for name, layer in layers.items():
        assert layer.isValid() and [f.name() for f in layer.fields()][1:] == expected, name
    assert [f.name() for f in shown.fields()] == expected
    assert rows(layers["cli"]) == rows(layers["toolbox"]) == rows(layers["dock"])
    assert sorted(tuple(f.attributes()) for f in shown.getFeatures()) == rows(layers["dock"])
    assert {(f["query"], f["model"]) for f in layers["toolbox"].getFeatures()} == \
        {("farm fields", "tiny-clip.json + tiny-clip.pt")}
    assert qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success), "the dock said it saved"

