"""`python -m engine concept …`: the find-every-X loop on the real shared rasters with the tiny model.

The tiny model has random weights, so rankings mean nothing here: these tests check the loop's
mechanics (marks stored, method changes, ranking changes, areas and exports written with the right
fields); tests/test_concepts.py checks quality on planted embeddings.
"""
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
pytestmark = pytest.mark.skipif(not (NAIP.exists() and NAIP_2009.exists()),
                                reason=f"shared test imagery not found at {DATA}")


def run(*args):
    out = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    return out.returncode, out.stdout, out.stderr


def cli(capsys, *args):
    """The CLI in this process (the model stays loaded between calls): exit code, stdout, stderr."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def two_dates(tmp_path_factory, tiny_model):
    """NAIP 2016 and 2009 (the same place) indexed at 112 px with the tiny model: 63 + 63 tiles."""
    folder = tmp_path_factory.mktemp("concepts-cli") / "idx"
    code, out, err = run("index", NAIP, NAIP_2009, "--index", folder, "--arch", tiny_model.config,
                         "--checkpoint", tiny_model.checkpoint, "--tile-size", "112")
    assert code == 0, err
    return folder


def test_the_loop_create_score_mark_refine_areas_export(two_dates, tmp_path, capsys):
    from osgeo import gdal, ogr

    idx = two_dates
    code, out, err = cli(capsys, "concept", "create", "farms", "--index", idx, "--query", "farm fields",
                         "--not", "roads")
    assert code == 0, err
    assert "Created concept 'farms', text “farm fields”, but not “roads”" in out
    code, out, err = cli(capsys, "concept", "score", "farms", "--index", idx, "--top-k", "10", "--next", "5", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["method"] == "text" and first["tiles"] == 126 and len(first["results"]) == 10
    assert len(first["next"]) == 5 and sum(first["histogram"]["counts"]) == 126
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)
    ids = [r["tile_id"] for r in first["results"]]

    code, out, err = cli(capsys, "concept", "mark", "farms", "--index", idx, "--accept", ",".join(map(str, ids[:3])),
                         "--reject", " ".join(map(str, ids[3:5])))
    assert code == 0, err
    assert "3 accepted, 2 rejected" in out
    code, out, err = cli(capsys, "concept", "refine", "farms", "--index", idx, "--top-k", "10", "--json")
    rocchio = json.loads(out)
    assert rocchio["method"] == "rocchio" and (rocchio["accepted"], rocchio["rejected"]) == (3, 2)
    assert not set(ids[:5]) & {r["tile_id"] for r in rocchio["results"]}, "marked tiles leave the list"
    fresh = [r["tile_id"] for r in rocchio["results"] if r["tile_id"] not in ids[5:7]]
    code, out, err = cli(capsys, "concept", "mark", "farms", "--index", idx,
                         "--accept", ",".join(map(str, ids[5:7] + fresh[:1])),
                         "--reject", ",".join(map(str, fresh[1:4])))
    assert code == 0 and "6 accepted, 5 rejected" in out
    code, out, err = cli(capsys, "concept", "refine", "farms", "--index", idx, "--top-k", "10", "--show-marked")
    assert code == 0, err
    assert "logistic regression on 6 positive and 5 rejected tiles" in out and "Least certain" in out
    assert "[accepted]" in out or "[rejected]" in out, "--show-marked lists marked tiles with their mark"
    code, out, err = cli(capsys, "concept", "refine", "farms", "--index", idx, "--top-k", "126", "--json",
                         "--show-marked")
    refined = json.loads(out)
    assert refined["method"] == "logistic" and refined["threshold"] == 0.5
    assert [r["tile_id"] for r in refined["results"]][:10] != ids, "the ranking changed"
    assert all(0 <= r["score"] <= 1 for r in refined["results"])
    marks = {r["tile_id"]: r["mark"] for r in refined["results"] if r["mark"]}
    assert sorted(marks.values()) == ["accepted"] * 6 + ["rejected"] * 5

    # every tile at the lowest score: one place, the two dates' overlapping tiles counted once
    lowest = min(r["score"] for r in refined["results"])
    gpkg = tmp_path / "farms.gpkg"
    code, out, err = cli(capsys, "concept", "areas", "farms", "--index", idx, "--threshold", repr(lowest),
                         "--out", gpkg, "--json")
    assert code == 0, err
    areas = json.loads(out)
    assert areas["tiles"] == 126 and len(areas["areas"]) == 1
    whole = areas["areas"][0]
    assert whole["rasters"] == sorted([str(NAIP), str(NAIP_2009)])
    assert whole["area_m2"] == pytest.approx(934 * 724 * 25, rel=3e-3), "not 2 x the scene"
    ds = ogr.Open(str(gpkg))
    lyr = ds.GetLayerByName("areas")
    feat = lyr.GetNextFeature()
    assert (feat["concept"], feat["query"], feat["negative"], feat["accepted"], feat["rejected"], feat["marks"]) == \
        ("farms", "farm fields", "roads", 6, 5, 11)
    assert feat["threshold"] == pytest.approx(lowest, abs=1e-6) and feat["method"] == "logistic"
    assert ds.GetLayerByName("tiles").GetFeatureCount() == 126
    assert lyr.GetSpatialRef().GetAuthorityCode(None) == "26914"

    code, out, err = cli(capsys, "concept", "areas", "farms", "--index", idx)
    assert code == 0 and "area(s) of 'farms'" in out and "ha in all" in out

    code, out, err = cli(capsys, "concept", "export", "farms", "--index", idx, "--out", tmp_path / "train.gpkg",
                         "--chips", tmp_path / "chips")
    assert code == 0, err
    assert "Wrote 11 marked tile(s) (6 accepted, 5 rejected)" in out and "11 chip(s)" in out
    ds = ogr.Open(str(tmp_path / "train.gpkg"))
    lyr = ds.GetLayer(0)
    names = [lyr.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(lyr.GetLayerDefn().GetFieldCount())]
    assert names == ["tile_id", "verdict", "label", "concept", "raster", "col_off", "row_off", "width", "height",
                     "chip"]
    for f in lyr:
        chip = gdal.Open(f["chip"])
        assert (chip.RasterXSize, chip.RasterYSize, chip.RasterCount) == (f["width"], f["height"], 4)
        assert f["label"] == (1 if f["verdict"] == "accepted" else 0)
        assert f.GetGeometryRef().GetArea() == pytest.approx(f["width"] * f["height"] * 25, rel=1e-6)


def test_list_rename_delete_and_persistence(two_dates, capsys):
    idx = two_dates
    assert cli(capsys, "concept", "create", "quarries", "--index", idx, "--query", "open pit quarry")[0] == 0
    code, out, err = cli(capsys, "concept", "list", "--index", idx)
    assert "'quarries', text “open pit quarry”, 0 example(s), 0 accepted, 0 rejected" in out
    assert cli(capsys, "concept", "mark", "quarries", "--index", idx, "--reject", "7")[0] == 0
    code, out, err = cli(capsys, "concept", "rename", "quarries", "pits", "--index", idx)
    assert code == 0 and "'pits'" in out
    code, out, err = run("concept", "list", "--index", idx)  # a fresh process reads them from the index
    assert "'pits', text “open pit quarry”, 0 example(s), 0 accepted, 1 rejected" in out
    code, out, err = cli(capsys, "concept", "delete", "pits", "--index", idx)
    assert code == 0 and "Deleted concept 'pits' and its 1 mark(s)" in out
    assert "pits" not in cli(capsys, "concept", "list", "--index", idx)[1]


def test_bad_input_gets_one_line(two_dates, tmp_path):
    idx = two_dates
    assert run("concept", "create", "empty-marks", "--index", idx, "--query", "lake")[0] == 0
    cases = [
        (["concept", "mark", "empty-marks", "--index", idx, "--accept", "999999"], "Tile 999999 is not in the index"),
        (["concept", "refine", "empty-marks", "--index", idx], "has no accepted or rejected tiles yet"),
        (["concept", "score", "no-such", "--index", idx], "There is no concept 'no-such'"),
        (["concept", "areas", "empty-marks", "--index", idx, "--threshold", "7"], "is outside the scores"),
        (["concept", "mark", "empty-marks", "--index", idx, "--accept", "12,abc"], "'abc' is not a tile id"),
        (["concept", "export", "empty-marks", "--index", idx, "--out", tmp_path / "x.gpkg"], "no marked tiles"),
        (["concept", "list", "--index", tmp_path / "nothing"], "No index at"),
    ]
    for args, expected in cases:
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        said = [line for line in err.splitlines() if line.startswith("rsclip:")]  # not the progress lines
        assert len(said) == 1 and said[0].startswith("rsclip: error: ") and expected in said[0], (args, err)
        assert "Traceback" not in err
