"""Planning an indexing request (engine/planning.py): metre tiles of at least 32 px, the index's own settings.

The front ends' agreement (command line, toolbox, dock) is tests/test_one_rule.py.
"""
import json
from pathlib import Path

import pytest

from engine import jobs
from engine.cli import main
from engine.errors import EngineError
from engine.index import TileIndex
from engine.planning import plan_index, tile_request
from engine.tiling import TilingSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LANDSAT = DATA / "landsat" / "landsat_1985.tif"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
needs_data = pytest.mark.skipif(not (LANDSAT.exists() and NAIP.exists()), reason=f"shared test imagery not found at "
                                                                                  f"{DATA}")
TINY = "tiny-clip.json + tiny-clip.pt"


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@needs_data
@pytest.mark.slow
def test_500_m_tiles_on_landsat_are_enlarged_with_a_notice_and_info_shows_each_grid(tmp_path, tiny_model, capsys):
    """The issue's run: `--tile-m 500` on 89 m Landsat pixels made 7,371 tiles of 6 x 6 px per scene, silently."""
    idx = tmp_path / "idx"
    code, out, err = cli(capsys, "index", LANDSAT, NAIP, "--index", idx, "--arch", tiny_model.config,
                         "--checkpoint", tiny_model.checkpoint, "--tile-m", "500")
    assert code == 0, err
    notices = [line for line in err.splitlines() if "instead" in line]
    assert notices == ["rsclip: landsat_1985.tif has 89 m pixels, so 500 m tiles would be only 6 × 6 px; its tiles "
                       "are 32 × 32 px (2.85 km) instead, the least for tiles given in metres (32 px a side)."]
    info = jobs.info(idx)
    grids = {Path(p).name: g for p, g in info.grids.items()}
    landsat, naip = grids[LANDSAT.name], grids[NAIP.name]
    assert (landsat.crs, landsat.tile_px, naip.crs, naip.tile_px) == ("EPSG:4326", (32, 32), "EPSG:26914", (100, 100))
    assert landsat.pixel_m == pytest.approx((89.0, 89.4), abs=0.3) and naip.pixel_m == pytest.approx((5.0, 5.0),
                                                                                                     rel=1e-3)
    counts = {Path(r.path).name: r.tiles for r in info.rasters}
    assert counts == {LANDSAT.name: 22 * 12, NAIP.name: 10 * 8}, "not 7,371 Landsat tiles"
    code, out, err = cli(capsys, "info", "--index", idx)
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith(str(LANDSAT)))
    assert lines[at + 1].strip().startswith("EPSG:4326, 89") and \
        lines[at + 1].strip().endswith("m pixels, 32 × 32 px tiles (2.85 km)")
    at = next(i for i, line in enumerate(lines) if line.endswith(str(NAIP)))
    assert lines[at + 1].strip() == "EPSG:26914, 5 m pixels, 100 × 100 px tiles (500 m)"

    # the next run adds to the index with its recorded settings: no need to repeat them, no notice repeated
    code, out, err = cli(capsys, "index", LANDSAT, "--index", idx)
    assert code == 0 and "1 unchanged raster(s) skipped" in out and "instead" not in err
    # the same request through the engine: the same notice, in the report
    report = jobs.index_rasters(tmp_path / "again", [str(LANDSAT)], model=info.model,
                                tiling=tile_request(500, "m"))
    assert report.notices == [notices[0][len("rsclip: "):]]


def built_index(folder: Path, tiling: dict) -> Path:
    """An index without tiles, recording ``tiling`` (as an older version may have written it)."""
    TileIndex.create(folder, {"kind": "registry", "name": "remoteclip-vit-b-32", "arch": "ViT-B-32-quickgelu"},
                     tiling, 512).close()
    return folder


def test_a_new_index_takes_what_was_given_and_the_defaults(tmp_path):
    plan = plan_index(tmp_path / "new", None, tile_request(500, "m", 0.25))
    assert not plan.existing and plan.model["name"] == "remoteclip-vit-b-32", "the default model"
    assert plan.tiling == TilingSpec(size=500, units="m", overlap=0.25), "32 px minimum recorded"
    assert plan.describe() == \
        f"A new index at {tmp_path / 'new'}, with remoteclip-vit-b-32 and 500 m tiles, overlap 0.25."
    assert not (tmp_path / "new").exists(), "planning writes nothing"
    with pytest.raises(EngineError, match="positive number"):
        plan_index(tmp_path / "new", None, tile_request(0, "px"))


def test_an_existing_index_keeps_its_settings_and_refuses_others_by_name(tmp_path):
    recorded = TilingSpec(size=500, units="m", overlap=0.25).to_dict()
    folder = built_index(tmp_path / "idx", recorded)
    plan = plan_index(folder, None, None)
    assert plan.existing and plan.tiling.to_dict() == recorded and plan.model["name"] == "remoteclip-vit-b-32"
    for same in ({}, tile_request(500, "m"), tile_request(overlap=0.25), TilingSpec.from_dict(recorded)):
        assert plan_index(folder, None, same).tiling.to_dict() == recorded, same
    with pytest.raises(EngineError) as refused:
        plan_index(folder, None, tile_request(overlap=0.5))  # only the overlap given: only the overlap compared
    assert str(refused.value) == (
        f"The index at {folder} was built with other tile settings (500 m tiles, overlap 0.25), not 500 m tiles, "
        "overlap 0.5; an index cuts all its rasters alike: add to it with its own settings, or use a new index "
        "folder for other tile settings.")
    with pytest.raises(EngineError, match=r"not 500 m tiles, overlap 0.25, bands 4,3,2;"):
        plan_index(folder, None, tile_request(bands=(4, 3, 2)))
    with pytest.raises(EngineError, match=r"not 500 m tiles, overlap 0.25, read at 112 px;"):
        plan_index(folder, None, TilingSpec(size=500, units="m", overlap=0.25, read_size=112))
    with pytest.raises(EngineError, match="must be a positive number"):  # a wrong value says so, not "other tiles"
        plan_index(folder, None, tile_request(size=-1, units="m"))
    other = {"kind": "registry", "name": "georsclip-vit-b-32", "arch": "ViT-B-32-quickgelu"}
    with pytest.raises(EngineError) as refused:
        plan_index(folder, other, tile_request(224, "px"))
    assert str(refused.value) == (
        f"The index at {folder} was built with remoteclip-vit-b-32 and other tile settings (500 m tiles, overlap "
        "0.25), not georsclip-vit-b-32 and 224 px tiles, overlap 0.25; an index keeps one model so that its vectors "
        "stay comparable and cuts all its rasters alike: add to it with its own settings, or use a new index folder "
        "for another model or other tile settings.")
    with pytest.raises(EngineError, match="was built with remoteclip-vit-b-32, not georsclip-vit-b-32"):
        jobs.resolve_model(folder, "georsclip-vit-b-32")  # the same rule for the model alone
    with pytest.raises(EngineError, match="was built with remoteclip-vit-b-32, not georsclip-vit-b-32"):
        jobs.index_rasters(folder, [str(tmp_path / "any.tif")], model=other)  # refused before any raster is read


@needs_data
def test_an_index_made_before_the_minimum_says_its_tiles_are_tiny_but_cuts_them_as_before(tmp_path):
    folder = built_index(tmp_path / "old", {"size": 500.0, "units": "m", "overlap": 0.0, "bands": None,
                                             "max_nodata": 0.5, "read_size": 224})  # no min_px: an older version
    plan = plan_index(folder, None, tile_request(500, "m"), [str(LANDSAT), str(NAIP)])
    assert plan.tiling.min_px == 1 and [r.tile_px for r in plan.rasters] == [(6, 6), (100, 100)]
    assert plan.notices == ("landsat_1985.tif has 89 m pixels, so its 500 m tiles are only 6 × 6 px, too few for the "
                            "model to see much; this index was built before such tiles were enlarged, so they are cut "
                            "as before. For larger tiles, index it into a new folder.",)
    new = plan_index(tmp_path / "new", None, tile_request(500, "m"), [str(LANDSAT), str(NAIP)])
    assert [r.tile_px for r in new.rasters] == [(32, 32), (100, 100)] and len(new.notices) == 1


@needs_data
def test_unusable_rasters_are_planned_as_skipped_with_their_sentence(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    plan = plan_index(tmp_path / "idx", None, None, [str(NAIP), str(text), str(NAIP)])
    assert [Path(r.info.path).name for r in plan.rasters] == [NAIP.name], "each raster once"
    assert len(plan.skipped) == 1 and "not a raster GDAL can read" in plan.skipped[0][1]


@needs_data
@pytest.mark.slow
def test_cli_overlap_alone_is_compared_alone(tmp_path, tiny_model, capsys):
    """Before, `--overlap` alone meant "224 px tiles with this overlap" and was refused on a 500 m index."""
    idx = tmp_path / "idx"
    assert cli(capsys, "index", NAIP, "--index", idx, "--arch", tiny_model.config, "--checkpoint",
               tiny_model.checkpoint, "--tile-m", "1000", "--overlap", "0.5")[0] == 0
    code, out, err = cli(capsys, "index", NAIP, "--index", idx, "--overlap", "0.5")
    assert code == 0 and "1 unchanged raster(s) skipped" in out
    code, out, err = cli(capsys, "index", NAIP, "--index", idx, "--overlap", "0")
    assert code == 2 and "not 1000 m tiles, overlap 0;" in err and err.count("\n") == 1
    code, out, err = cli(capsys, "search", "fields", "--index", idx, "--top-k", "1", "--json")
    assert json.loads(out)["model"] == TINY
