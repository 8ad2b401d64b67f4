"""'Find all areas of a concept' through processing.run on the real shared rasters with the tiny model.

Same loop as the dock and the command line (concept created and marked through the engine's jobs,
areas through the toolbox); rankings mean nothing with random weights, the mechanics are checked.
"""
from pathlib import Path

import pytest
from qgis.core import QgsProcessingException, QgsProject
from test_processing import provider  # noqa: F401 (the provider fixture, registered once per module)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
LANDSAT = DATA / "landsat" / "landsat_1990.tif"
pytestmark = pytest.mark.skipif(not (NAIP.exists() and LANDSAT.exists()),
                                reason=f"shared test imagery not found at {DATA}")
# 224 px tiles: NAIP 5 x 4 = 20 tiles (UTM 14N), Landsat 4 x 2 = 8 (EPSG:4326)
TILES = 28


def run(params: dict) -> dict:
    import processing

    return processing.run("rsclip_search:concept_areas", {"OUTPUT": "TEMPORARY_OUTPUT", **params})


@pytest.fixture(scope="module")
def marked(provider, tiny_model, tmp_path_factory):
    """An index of NAIP + Landsat with a concept 'fields' of 5 accepted and 5 rejected tiles."""
    from rsclip_search.engine import jobs
    from rsclip_search.engine.models import resolve_model_ref

    folder = tmp_path_factory.mktemp("concept-proc") / "idx"
    model = resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)).to_dict()
    jobs.index_rasters(folder, [str(NAIP), str(LANDSAT)], model=model)
    jobs.concept_create(folder, "fields", query="crop fields", negative="water")
    best = [h.tile.id for h in jobs.concept_score(folder, "fields", top_k=10).best]
    jobs.concept_mark(folder, "fields", accept=best[:5], reject=best[5:10])
    return folder


def test_areas_of_a_stored_concept(marked):
    from rsclip_search.engine import jobs

    rnd = jobs.concept_score(marked, "fields", top_k=TILES, hide_marked=False)
    assert rnd.method == "logistic"
    threshold = sorted(h.score for h in rnd.best)[-8]
    out = run({"INDEX": str(marked), "CONCEPT": "fields", "THRESHOLD": threshold, "TILES": "TEMPORARY_OUTPUT"})
    areas, tiles = out["OUTPUT"], out["TILES"]
    assert [f.name() for f in areas.fields()] == ["area_id", "tiles", "best_score", "mean_score", "area_m2", "area_ha",
                                                  "rasters", "concept", "query", "negative", "method", "examples",
                                                  "accepted", "rejected", "marks", "threshold", "model"]
    feats = list(areas.getFeatures())
    assert sum(f["tiles"] for f in feats) == tiles.featureCount() == rnd.count_above(threshold) >= 8
    assert [f["area_id"] for f in feats] == list(range(1, len(feats) + 1))
    assert [f["area_m2"] for f in feats] == sorted((f["area_m2"] for f in feats), reverse=True)
    for f in feats:
        assert (f["concept"], f["query"], f["negative"], f["method"], f["accepted"], f["rejected"]) == \
            ("fields", "crop fields", "water", "logistic", 5, 5)
        assert f["threshold"] == pytest.approx(threshold, abs=1e-9) and f["best_score"] >= f["mean_score"] >= threshold
        assert f["area_ha"] == pytest.approx(f["area_m2"] / 1e4)
    assert areas.crs().authid() == "EPSG:26914" and areas.wkbType() == 6  # MultiPolygon
    assert {f["tile_id"] for f in tiles.getFeatures()} == {h.tile.id for h in rnd.best if h.score >= threshold}
    assert {f["verdict"] for f in tiles.getFeatures()} <= {"accepted", "rejected", ""}


def test_text_only_areas_and_the_default_threshold(marked):
    out = run({"INDEX": str(marked), "QUERY": "crop fields", "NEGATIVE": "water"})
    feats = list(out["OUTPUT"].getFeatures())
    assert feats and {f["method"] for f in feats} == {"text"} and {f["marks"] for f in feats} == {0}
    assert {f["concept"] for f in feats} == {"crop fields"}
    assert sum(f["tiles"] for f in feats) >= 1


def test_loaded_areas_are_styled(marked, qgis_new_project):
    import processing

    out = processing.runAndLoadResults("rsclip_search:concept_areas", {
        "INDEX": str(marked), "CONCEPT": "fields", "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayer(out["OUTPUT"])
    assert layer.labelsEnabled() and layer.renderer().type() == "singleSymbol"
    assert layer.renderer().symbol().color().name() == "#dd3497"


@pytest.mark.parametrize("params,message", [
    ({"CONCEPT": "no such"}, "There is no concept 'no such'"),
    ({"CONCEPT": "fields", "THRESHOLD": 2.0}, "is outside the scores"),
    ({"CONCEPT": "fields", "QUERY": "water"}, "not both"),
    ({}, "Give CONCEPT"),
    ({"QUERY": "   "}, "Give CONCEPT"),
    ({"CONCEPT": "fields", "NEGATIVE": "roads"}, "NEGATIVE goes with QUERY"),
])
def test_bad_input_fails_with_a_readable_message(marked, params, message):
    with pytest.raises(QgsProcessingException) as err:
        run({"INDEX": str(marked), **params})
    assert message in str(err.value) and "Traceback" not in str(err.value)
