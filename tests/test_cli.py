"""The command line end to end, as a newcomer would use it, on the real shared rasters."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
NAIP_2009 = DATA / "naip" / "naip_m_4709963_se_14_20090818.tif"
LANDSAT = DATA / "landsat" / "landsat_1985.tif"
DSM = DATA / "elevation" / "dsm.tif"

needs_data = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {DATA}")


def run(*args):
    """The real `python -m engine` in a subprocess: exit code, stdout, stderr."""
    out = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    return out.returncode, out.stdout, out.stderr


def model_args(tiny_model):
    return ["--arch", tiny_model.config, "--checkpoint", tiny_model.checkpoint]


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_model):
    """One index over NAIP (UTM) and Landsat (EPSG:4326), built through the CLI."""
    if not NAIP.exists():
        pytest.skip(f"shared test imagery not found at {DATA}")
    folder = tmp_path_factory.mktemp("cli") / "idx"
    code, out, err = run("index", NAIP, LANDSAT, "--index", folder, *model_args(tiny_model), "--tile-size", "112")
    assert code == 0, err
    return folder


@pytest.mark.slow
@needs_data
def test_index_then_info_reports_model_rasters_and_tiles(built_index, tiny_model):
    code, out, err = run("info", "--index", built_index)
    assert code == 0, err
    assert "tiny-clip.json + tiny-clip.pt" in out
    assert "naip_m_4709963_se_14_20160816.tif" in out and "landsat_1985.tif" in out
    # NAIP 934x723 at 112 px → 9 x 7 windows (last ones snapped to the edge), no nodata tiles to skip.
    assert "63 tiles" in out
    assert "112.0 px" in out


@pytest.mark.slow
@needs_data
def test_search_json_and_geopackage(built_index, tmp_path):
    from osgeo import ogr

    gpkg = tmp_path / "runway.gpkg"
    code, out, err = run("search", "airport runway", "--index", built_index, "--top-k", "5", "--json", "--out", gpkg)
    assert code == 0, err
    answer = json.loads(out)
    results = answer["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert all(results[i]["score"] >= results[i + 1]["score"] for i in range(4))
    assert answer["model"] == "tiny-clip.json + tiny-clip.pt"
    ds = ogr.Open(str(gpkg))
    lyr = ds.GetLayer(0)
    assert lyr.GetFeatureCount() == 5
    names = [lyr.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(lyr.GetLayerDefn().GetFieldCount())]
    assert names == ["rank", "score", "raster", "tile_id", "query", "model"]
    rows = [(f.GetField("tile_id"), f.GetField("query"), f.GetField("model")) for f in lyr]
    assert rows == [(r["tile_id"], "airport runway", "tiny-clip.json + tiny-clip.pt") for r in results], \
        "every row says what it answers and which model made it"


@pytest.mark.slow
@needs_data
def test_top_k_larger_than_index_returns_every_tile(built_index):
    code, out, err = run("info", "--index", built_index)
    total = int(out.split("Tiles:")[1].split()[0])
    code, out, err = run("search", "farmland", "--index", built_index, "--top-k", 100000, "--json")
    assert code == 0, err
    assert len(json.loads(out)["results"]) == total


@pytest.mark.slow
@needs_data
def test_label_with_shipped_set_and_file(built_index, tmp_path):
    from osgeo import ogr

    gpkg = tmp_path / "labels.gpkg"
    code, out, err = run("label", "--index", built_index, "--classes", "eurosat", "--out", gpkg)
    assert code == 0, err
    ds = ogr.Open(str(gpkg))
    lyr = ds.GetLayer(0)
    feats = list(lyr)
    from engine.classsets import load_class_set

    assert {f.GetField("label") for f in feats} <= set(load_class_set("eurosat"))
    assert all(0 < f.GetField("probability") <= 1 and 0 <= f.GetField("margin") <= 1 for f in feats)
    classes = tmp_path / "classes.txt"
    classes.write_text("water\nforest\ncropland\n")
    code, out, err = run("label", "--index", built_index, "--classes-file", classes, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["classes"] == ["water", "forest", "cropland"]
    assert len(data["results"]) == len(feats)


@pytest.mark.slow
@needs_data
def test_reindex_unchanged_is_skipped_and_new_raster_is_added(built_index, tiny_model):
    code, out, err = run("index", NAIP, "--index", built_index)
    assert code == 0, err
    assert "1 unchanged raster(s) skipped" in out and "0 new tiles" in out
    code, out, err = run("index", NAIP_2009, "--index", built_index)
    assert code == 0, err
    assert "63 new tiles from 1 raster(s)" in out
    code, out, err = run("index", "--index", built_index, "--remove", NAIP_2009)
    assert code == 0 and "63 tiles" in out


@pytest.mark.slow
def test_reindexing_unchanged_rasters_needs_no_model_and_a_new_one_names_the_missing_checkpoint(tmp_path):
    """Nothing to embed, nothing to load: a re-run over unchanged rasters neither loads the model nor needs its
    checkpoint where the index recorded it. Embedding a new raster does, and says which file is missing."""
    import shutil

    from rasters import noise, write_raster
    from tinymodel import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    first = write_raster(tmp_path / "first.tif", noise(3, 64, 64, seed=1))
    second = write_raster(tmp_path / "second.tif", noise(3, 64, 64, seed=2), transform=(503000.0, 10, 0, 6e6, 0, -10))
    code, out, err = run("index", first, "--index", tmp_path / "idx", *model_args(model), "--tile-size", "32")
    assert code == 0 and "4 new tiles" in out, err
    shutil.move(model.checkpoint, tmp_path / "elsewhere.pt")
    code, out, err = run("index", first, "--index", tmp_path / "idx")
    assert code == 0 and "1 unchanged raster(s) skipped" in out and "4 tiles in total" in out, err
    code, out, err = run("index", first, second, "--index", tmp_path / "idx")
    assert code == 2 and f"The checkpoint {model.checkpoint} of this index's model is missing" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, out, err = run("info", "--index", tmp_path / "idx")
    assert code == 0 and "4 tiles" in out and "second.tif" not in out, out


@pytest.mark.slow
@needs_data
def test_index_refuses_another_model_and_other_tiles(built_index, tmp_path):
    from tinymodel import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)
    code, out, err = run("index", NAIP, "--index", built_index, "--arch", other.config,
                         "--checkpoint", other.checkpoint)
    assert code == 2 and "was built with" in err and "Traceback" not in err
    code, out, err = run("index", NAIP, "--index", built_index, "--tile-size", "64")
    assert code == 2 and "other tile settings" in err


@pytest.mark.slow
@needs_data
def test_metre_tiles_on_a_raster_in_degrees(tmp_path, tiny_model):
    code, out, err = run("index", LANDSAT, "--index", tmp_path / "ll", *model_args(tiny_model), "--tile-m", "3000",
                         "--overlap", "0.5")
    assert code == 0, err
    code, out, err = run("search", "river", "--index", tmp_path / "ll", "--top-k", "1", "--json")
    hit = json.loads(out)["results"][0]
    from shapely import wkt

    minx, miny, maxx, maxy = wkt.loads(hit["footprint_wgs84"]).bounds
    import math

    width_m = (maxx - minx) * 111320 * math.cos(math.radians((miny + maxy) / 2))
    height_m = (maxy - miny) * 110574
    assert width_m == pytest.approx(3000, rel=0.05) and height_m == pytest.approx(3000, rel=0.05)


@pytest.mark.slow
@needs_data
def test_single_band_float_dsm_is_indexed_as_grey(tmp_path, tiny_model):
    code, out, err = run("index", DSM, "--index", tmp_path / "dsm", *model_args(tiny_model), "--tile-size", "64")
    assert code == 0, err
    assert "new tiles from 1 raster(s)" in out


@pytest.mark.slow
def test_bad_inputs_give_one_line_and_leave_the_index_alone(tmp_path, tiny_model, capsys):
    from osgeo import gdal

    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    nocrs = tmp_path / "nocrs.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(nocrs), 64, 64, 3, gdal.GDT_Byte)
    ds.FlushCache()
    del ds  # closes the file
    cases = [
        (["index", text, "--index", tmp_path / "a", *model_args(tiny_model)], "not a raster GDAL can read"),
        (["index", nocrs, "--index", tmp_path / "a", *model_args(tiny_model)], "no coordinate reference system"),
        (["index", tmp_path / "missing.tif", "--index", tmp_path / "a", *model_args(tiny_model)], "does not exist"),
        (["index", nocrs, "--index", tmp_path / "a", "--model", "no-such-model"], "Unknown model"),
        (["search", "water", "--index", tmp_path / "a"], "No index"),
        (["search", "   ", "--index", tmp_path / "a"], "empty"),
        (["search", "water", "--index", tmp_path / "a", "--top-k", "0"], "at least 1"),
        (["label", "--index", tmp_path / "a", "--classes", "water"], "at least two"),
        (["index", nocrs, "--index", tmp_path / "a", "--arch", "ViT-B-32"], "needs --checkpoint"),
    ]
    for args, expected in cases:
        assert main([str(a) for a in args]) == 2, args
        assert expected in capsys.readouterr().err, args
    for args, expected in cases[:3]:
        code, out, err = run(*args)
        assert code == 2 and expected in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a").exists(), "a failed first index run must not leave a folder behind"


@pytest.mark.slow
@needs_data
def test_empty_index_and_bad_raster_keep_an_existing_index(tmp_path, tiny_model, capsys):
    from engine.index import TileIndex

    folder = tmp_path / "idx"
    TileIndex.create(folder, {"kind": "registry", "name": "x"}, {"size": 224.0}, 32).close()
    code, out, err = run("search", "water", "--index", folder)
    assert code == 2 and "has no tiles yet" in err
    good = tmp_path / "good"
    assert run("index", NAIP, "--index", good, *model_args(tiny_model), "--tile-size", "224")[0] == 0
    before = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file() and p.suffix in (".faiss", ".json")}
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"\x00" * 100)
    code, out, err = run("index", junk, "--index", good)
    assert code == 2 and "junk.tif" in err
    after = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file() and p.suffix in (".faiss", ".json")}
    assert before == after
    code, out, err = run("index", junk, NAIP_2009, "--index", good)
    assert code == 1 and "skipped" in err and "junk.tif" in err and "new tiles from 1 raster(s)" in out


def test_models_lists_the_registry_with_cache_state(tmp_path, monkeypatch, capsys):
    from engine.models import REGISTRY, cached_weights_path, get_spec

    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path))
    spec = get_spec("remoteclip-rn50")
    path = cached_weights_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    (path.parent / (path.name + ".sha256")).write_text(spec.sha256)  # as recorded after verification
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
    assert "remoteclip-vit-b-32 (default)" in out
    assert f"cached at {path}" in out
    assert out.count("not downloaded") == len(REGISTRY) - 1
