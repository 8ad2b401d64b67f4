"""The toolbox: 'Find change between dates', SCALES of 'Build semantic index' and SCALE of 'Search imagery by text'.

The same planted NAIP dates and planted model as tests/test_change.py, through processing.run: the
algorithm gives the same answer as the engine job it calls.
"""
import pytest
from planted_clip import make_planted_clip
from qgis.core import QgsProcessingException
from test_change import APPEARED, DISAPPEARED, NAIP_2009, TILE, planted_dates
from test_processing import provider  # noqa: F401 (the provider fixture, registered once per module)

pytestmark = pytest.mark.skipif(not NAIP_2009.exists(), reason="the NAIP dates of the shared test imagery are absent")


@pytest.fixture(scope="module")
def built(provider, tmp_path_factory):
    """Both dates indexed through the toolbox at 64 px, scales 1 and 2."""
    import processing

    work = tmp_path_factory.mktemp("change-proc")
    planted = make_planted_clip(work / "model")
    before, after = planted_dates(work)
    out = processing.run("rsclip_search:build_index", {
        "INPUT": [str(before), str(after)], "INDEX": str(work / "index"), "MODEL": "custom",
        "ARCH": str(planted.config), "CHECKPOINT": str(planted.checkpoint), "TILE_SIZE": TILE, "SCALES": "1,2",
        "OUTPUT": "TEMPORARY_OUTPUT"})
    return work / "index", str(before), str(after), out


def test_build_with_scales(built):
    from rsclip_search.engine import jobs

    index, _, _, out = built
    info = jobs.info(index)
    assert info.scales == {1: 360, 2: 96} and out["OUTPUT"].featureCount() == 456


def test_find_change(built):
    import processing

    from rsclip_search.engine import jobs
    from rsclip_search.engine.change import CHANGE_FIELDS

    index, before, after, _ = built
    out = processing.run("rsclip_search:find_change", {
        "INDEX": str(index), "BEFORE": [before], "AFTER": [after], "QUERY": "blue roofs", "DIRECTION": "appeared",
        "TOP_K": 3, "SCALE": 1, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    assert out.fields().names() == [name for name, _ in CHANGE_FIELDS]
    feats = sorted(out.getFeatures(), key=lambda f: f["rank"])
    engine = jobs.change(index, [before], [after], "blue roofs", top_k=3, scale=1)
    assert [(f["before_tile"], f["after_tile"]) for f in feats] == [(r.before.id, r.after.id) for r in engine.rows]
    assert sorted(r.after.window for r in engine.rows) == sorted(APPEARED)
    assert all(f["scale"] == 1 and f["direction"] == "appeared" for f in feats)
    assert out.crs().authid() == "EPSG:26914"

    gone = processing.run("rsclip_search:find_change", {
        "INDEX": str(index), "BEFORE": [before], "AFTER": [after], "QUERY": "blue roofs", "DIRECTION": 1,
        "TOP_K": 2, "SCALE": 1, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    tiles = {t.id: t.window for t in jobs.tiles(index)}
    assert sorted(tiles[f["before_tile"]] for f in gone.getFeatures()) == sorted(DISAPPEARED)
    changed = processing.run("rsclip_search:find_change", {
        "INDEX": str(index), "BEFORE": [before], "AFTER": [after], "TOP_K": 5, "SCALE": 1,
        "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    assert {f["direction"] for f in changed.getFeatures()} == {"changed"}


def test_find_change_refuses(built):
    import processing

    index, before, after, _ = built
    for params, why in (({"BEFORE": [before], "AFTER": [before]}, "both BEFORE and AFTER"),
                        ({"BEFORE": [before], "AFTER": [after], "SCALE": 3}, "not at ×3"),
                        ({"BEFORE": [before], "AFTER": [after], "DIRECTION": "grew"}, "DIRECTION must be one of")):
        with pytest.raises(QgsProcessingException, match=why):
            processing.run("rsclip_search:find_change", {"INDEX": str(index), "QUERY": "x", "TOP_K": 3,
                                                         "OUTPUT": "TEMPORARY_OUTPUT", **params})


def test_search_one_scale(built):
    import processing

    index = built[0]
    out = processing.run("rsclip_search:search_text", {"INDEX": str(index), "QUERY": "blue roofs", "TOP_K": 5,
                                                       "SCALE": 2, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    assert out.fields().names() == ["rank", "score", "raster", "tile_id", "query", "model", "scale"]
    assert [f["scale"] for f in out.getFeatures()] == [2] * 5
