"""Concepts end to end in the engine, on planted embeddings with a known answer (no model, no QGIS).

The planted world (tests/planted_concepts.py): a hidden concept covers compact spatial clusters of
tiles; the text vector is at cosine 0.3 to the concept and points mostly at two other land covers.
A simulated analyst marks the best 20 unmarked tiles each round from the truth.
"""

import math
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from engine import jobs
from engine.areas import components, make_areas, touching_pairs
from engine.concepts import list_concepts, parse_tile_ids
from engine.errors import EngineError
from engine.index import TileIndex
from engine.scoring import (
    METHOD_LOGISTIC,
    METHOD_ROCCHIO,
    METHOD_TEXT,
    MIN_EACH,
    IndexMatrix,
    RasterGeo,
    index_matrix,
    score_concept,
)
from planted_concepts import (
    TILE_PX,
    UTM14_WKT,
    analyst_round,
    build_index,
    cluster_recall,
    planted_world,
    recall_at_truth,
)


@pytest.fixture(scope="module")
def world():
    return planted_world(rasters=6, grid=(50, 50), dim=128, clusters_per_raster=6, seed=1)


class PlantedEncoder:
    """Text → the vector the test planted for it (the index's model is never loaded)."""

    def __init__(self, vectors: dict):
        self.vectors = vectors
        self.loaded = SimpleNamespace(context_length=77)

    def is_truncated(self, text):
        return False

    def encode_prompts(self, phrases, templates=()):
        return np.stack([self.vectors[p] for p in phrases]).astype(np.float32)


@pytest.fixture
def planted_index(world, tmp_path, monkeypatch):
    """A real index holding a small planted world; its 'model' encodes the planted texts."""
    small = planted_world(rasters=2, grid=(12, 12), dim=32, clusters_per_raster=3, seed=2)
    build_index(small, tmp_path / "idx").close()
    rng = np.random.default_rng(5)
    other = rng.standard_normal(32).astype(np.float32)
    encoder = PlantedEncoder(
        {"hidden thing": small.text, "other land cover": other / np.linalg.norm(other), "confuser": small.confusers[0]}
    )
    monkeypatch.setattr(jobs, "get_encoder", lambda *a, **k: encoder)
    return tmp_path / "idx", small


def simulate(world, rounds, use_marks=True):
    """Recall (R-precision) after each round; the analyst marks 20 top unmarked tiles per round."""
    scores = score_concept(world.matrix, text=world.text)
    recalls, methods = [recall_at_truth(scores.scores, world.truth)], [scores.method]
    marked, accepted, rejected = set(), [], []
    for _ in range(rounds):
        analyst_round(world, scores, marked, accepted, rejected)
        scores = score_concept(
            world.matrix, text=world.text, accepted_rows=accepted, rejected_rows=rejected, use_marks=use_marks
        )
        recalls.append(recall_at_truth(scores.scores, world.truth))
        methods.append(scores.method)
    return recalls, methods, scores, accepted, rejected


def oracle_areas(world, scores):
    """Areas at the threshold that keeps as many tiles as the concept has (the same rule for every method)."""
    k = int(world.truth.sum())
    threshold = float(np.sort(scores.scores)[-k])
    return make_areas(world.matrix, scores.scores, threshold)


# -- quality on the planted world ---------------------------------------------------------------
def test_the_planted_text_points_only_partly_at_the_concept(world):
    assert float(world.text @ world.concept) == pytest.approx(0.3, abs=1e-5)
    ideal = world.matrix.vectors @ world.concept
    assert recall_at_truth(ideal, world.truth) > 0.9, "the concept is learnable from the embeddings"


def test_feedback_raises_recall_above_text_only(world):
    recalls, methods, _, accepted, rejected = simulate(world, 3)
    text_only = recalls[0]
    assert methods[0] == METHOD_TEXT and text_only < 0.4, recalls
    assert methods[-1] == METHOD_LOGISTIC and len(accepted) >= MIN_EACH and len(rejected) >= MIN_EACH
    assert recalls[1] > text_only + 0.2 and recalls[3] > 0.85, recalls
    assert recalls[3] >= recalls[1] - 0.02, "more marks do not make it worse"


def test_rocchio_alone_beats_text_only(world):
    """With fewer marks than the classifier needs, the Rocchio query already moves towards the concept."""
    text = score_concept(world.matrix, text=world.text)
    best = text.best(40)
    accepted = [int(r) for r in best if world.truth[r]][:4]
    rejected = [int(r) for r in best if not world.truth[r]][:3]
    rocchio = score_concept(world.matrix, text=world.text, accepted_rows=accepted, rejected_rows=rejected)
    assert rocchio.method == METHOD_ROCCHIO and "Rocchio" in rocchio.description
    assert recall_at_truth(rocchio.scores, world.truth) > recall_at_truth(text.scores, world.truth) + 0.1


def test_areas_match_the_planted_clusters(world):
    text_areas = oracle_areas(world, score_concept(world.matrix, text=world.text))
    assert cluster_recall(world, text_areas.area_of_row()) < 0.5
    _, _, scores, _, _ = simulate(world, 3)
    areas = oracle_areas(world, scores)
    assert cluster_recall(world, areas.area_of_row()) >= 0.9
    # each found cluster lies in one area, and the biggest areas are planted clusters
    by_row = areas.area_of_row()
    for c in range(world.clusters):
        ids = {by_row.get(int(r)) for r in np.flatnonzero(world.cluster == c)} - {None}
        assert len(ids) <= 1, f"cluster {c} split over areas {ids}"
    for area in areas.areas[:10]:
        assert world.truth[area.rows].mean() > 0.8


def test_areas_of_the_truth_are_exactly_the_clusters(world):
    result = make_areas(world.matrix, world.truth.astype(np.float32), 1.0)
    assert len(result.areas) == world.clusters
    sizes = sorted(np.bincount(world.cluster[world.truth]).tolist(), reverse=True)
    assert sorted((a.tiles for a in result.areas), reverse=True) == sizes
    for area in result.areas:
        assert len(set(world.cluster[area.rows].tolist())) == 1
        # 100 m tiles in UTM: planar area of the tiles, within the UTM scale factor near the central meridian
        assert area.area_m2 == pytest.approx(area.tiles * (TILE_PX * 1.0) ** 2, rel=2e-3)
        assert area.area_ha == pytest.approx(area.area_m2 / 1e4)
        assert area.best_score == 1.0 and area.mean_score == 1.0


def test_a_handful_of_contradicting_marks_cannot_flip_the_concept(world):
    text = score_concept(world.matrix, text=world.text)
    rng = np.random.default_rng(3)
    concept_tiles = rng.choice(np.flatnonzero(world.truth), MIN_EACH, replace=False)
    others = rng.choice(np.flatnonzero(~world.truth), MIN_EACH, replace=False)
    wrong = score_concept(world.matrix, text=world.text, accepted_rows=others, rejected_rows=concept_tiles)
    assert wrong.method == METHOD_LOGISTIC
    logits = np.log(wrong.scores) - np.log1p(-wrong.scores)
    assert np.corrcoef(logits, text.scores)[0, 1] > 0.6, "still mostly the text's concept"
    assert float(wrong.direction @ text.direction) / np.linalg.norm(wrong.direction) > 0.6


def test_negative_text_and_example_tiles_combine_with_the_text(world):
    text = score_concept(world.matrix, text=world.text)
    minus = score_concept(world.matrix, text=world.text, negative=world.confusers[0])
    assert "negative text" in minus.description
    assert recall_at_truth(minus.scores, world.truth) > recall_at_truth(text.scores, world.truth)
    examples = np.flatnonzero(world.truth)[:3]
    seeded = score_concept(world.matrix, text=world.text, example_rows=examples)
    assert seeded.method == METHOD_TEXT and "example tiles" in seeded.description
    assert recall_at_truth(seeded.scores, world.truth) > recall_at_truth(text.scores, world.truth) + 0.2
    only_examples = score_concept(world.matrix, example_rows=examples)
    assert recall_at_truth(only_examples.scores, world.truth) > recall_at_truth(text.scores, world.truth)


def test_least_certain_tiles_sit_at_the_threshold_and_are_unmarked(world):
    _, _, scores, accepted, rejected = simulate(world, 1)
    assert scores.method == METHOD_LOGISTIC and scores.threshold == 0.5
    nxt = scores.least_certain(15)
    assert len(nxt) == 15 and not set(nxt.tolist()) & set(accepted + rejected)
    gaps = np.abs(scores.scores[nxt] - 0.5)
    unmarked = np.setdiff1d(np.arange(len(scores.scores)), accepted + rejected)
    assert gaps.max() <= np.sort(np.abs(scores.scores[unmarked] - 0.5))[14] + 1e-12
    assert list(gaps) == sorted(gaps)


# -- areas: the dissolving rule -----------------------------------------------------------------
def matrix_of(windows, rasters=None, affine=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), crs=UTM14_WKT, raster_ids=None):
    windows = np.asarray(windows, dtype=np.int64)
    n = len(windows)
    raster_ids = np.ones(n, np.int64) if raster_ids is None else np.asarray(raster_ids, np.int64)
    rasters = rasters or {1: RasterGeo(1, "/r1.tif", crs, affine)}
    return IndexMatrix(np.arange(1, n + 1), np.zeros((n, 4), np.float32), raster_ids, windows, rasters)


def test_touching_means_an_edge_or_a_corner_or_an_overlap():
    windows = [
        (0, 0, 10, 10),
        (10, 0, 10, 10),  # edge
        (30, 0, 10, 10),
        (40, 10, 10, 10),  # corner
        (60, 0, 10, 10),
        (75, 0, 10, 10),  # gap of 5 px: apart
        (100, 0, 10, 10),
        (105, 5, 10, 10),
    ]  # overlap
    a, b = touching_pairs(np.array(windows))
    pairs = {tuple(sorted(p)) for p in zip(a.tolist(), b.tolist())}
    assert pairs == {(0, 1), (2, 3), (6, 7)}
    labels = components(len(windows), a, b)
    assert len(set(labels.tolist())) == 5


def test_overlapping_tiles_are_not_counted_twice():
    # 100 px tiles cut with 50 % overlap (stride 50), 1 m pixels: a 3 x 3 block covers 200 m x 200 m
    windows = [(c * 50, r * 50, 100, 100) for r in range(3) for c in range(3)]
    m = matrix_of(windows, affine=(500000.0, 1.0, 0.0, 5200000.0, 0.0, -1.0))
    result = make_areas(m, np.ones(9, np.float32), 1.0)
    assert len(result.areas) == 1 and result.areas[0].tiles == 9
    assert result.areas[0].area_m2 == pytest.approx(200 * 200, rel=2e-3)


def test_union_find_handles_long_chains_in_any_order():
    n = 5000
    perm = np.random.default_rng(0).permutation(n)
    labels = components(n, perm[:-1], perm[1:])
    assert (labels == 0).all()
    labels = components(6, np.array([0, 2, 4]), np.array([1, 3, 5]))
    assert len(set(labels.tolist())) == 3


def test_areas_of_neighbouring_rasters_merge_and_degrees_give_square_metres():
    wgs84 = (
        'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
        'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]'
    )
    px = 0.001  # degrees
    rasters = {
        1: RasterGeo(1, "/west.tif", wgs84, (10.0, px, 0.0, 50.0, 0.0, -px)),
        2: RasterGeo(2, "/east.tif", wgs84, (10.1, px, 0.0, 50.0, 0.0, -px)),
    }
    # the last tile column of the west raster ends where the east raster starts
    windows = [(90, 0, 10, 10), (0, 0, 10, 10), (50, 50, 10, 10)]
    m = matrix_of(windows, rasters, raster_ids=[1, 2, 2])
    result = make_areas(m, np.array([0.9, 0.8, 0.7], np.float32), 0.7)
    assert sorted(a.tiles for a in result.areas) == [1, 2]
    merged = next(a for a in result.areas if a.tiles == 2)
    assert merged.rasters == ("/east.tif", "/west.tif")
    assert merged.best_score == pytest.approx(0.9) and merged.mean_score == pytest.approx(0.85)
    # 0.02° x 0.01° at 50° N: about 1.433 km x 1.112 km
    expected = (0.02 * 111_320 * math.cos(math.radians(49.995))) * (0.01 * 111_230)
    assert merged.area_m2 == pytest.approx(expected, rel=5e-3)


def test_a_rotated_raster_gives_rotated_outlines():
    from shapely import wkt

    angle = math.radians(30)
    affine = (1000.0, math.cos(angle), math.sin(angle), 2000.0, math.sin(angle), -math.cos(angle))
    m = matrix_of([(0, 0, 10, 10), (10, 0, 10, 10)], affine=affine)
    result = make_areas(m, np.ones(2, np.float32), 1.0)
    outline = wkt.loads(result.areas[0].outline_wkt)
    assert outline.area == pytest.approx(200.0)
    assert outline.minimum_rotated_rectangle.area == pytest.approx(200.0)
    assert not outline.equals(outline.envelope)


def test_a_threshold_outside_the_scores_is_refused():
    m = matrix_of([(0, 0, 10, 10), (10, 0, 10, 10)])
    for bad in (0.95, 0.05, float("nan")):
        with pytest.raises(EngineError, match="outside the scores, which run from 0.2000 to 0.9000"):
            make_areas(m, np.array([0.2, 0.9], np.float32), bad)


# -- storage and the jobs, on a real planted index ------------------------------------------------
def test_concepts_are_stored_listed_renamed_and_deleted(planted_index):
    folder, small = planted_index
    assert jobs.concept_list(folder) == []
    made = jobs.concept_create(folder, "  Hidden   things ", query="hidden thing", negative="confuser")
    assert (made.name, made.query, made.negative, made.marks) == ("Hidden things", "hidden thing", "confuser", 0)
    np.testing.assert_allclose(made.query_vec, small.text)
    jobs.concept_create(folder, "other", query="other land cover")
    with pytest.raises(EngineError, match="already a concept called 'hidden things'"):
        jobs.concept_create(folder, "hidden things", query="hidden thing")
    assert [c.name for c in jobs.concept_list(folder)] == ["Hidden things", "other"]
    renamed = jobs.concept_rename(folder, "HIDDEN THINGS", "hidden")
    assert renamed.name == "hidden" and renamed.query == "hidden thing"
    with pytest.raises(EngineError, match="There is no concept 'hidden things' in .*its concepts are: hidden, other"):
        jobs.concept_score(folder, "hidden things")
    jobs.concept_delete(folder, "other")
    assert [c.name for c in jobs.concept_list(folder)] == ["hidden"]
    with TileIndex.open(folder) as idx:
        assert [c.name for c in list_concepts(idx.conn)] == ["hidden"]


def test_the_loop_through_the_jobs_and_marks_surviving_a_reindex(planted_index):
    folder, small = planted_index
    jobs.concept_create(folder, "hidden", query="hidden thing")
    first = jobs.concept_score(folder, "hidden", top_k=10, next_k=5)
    assert first.method == METHOD_TEXT and len(first.best) == 10 and len(first.next) == 5
    assert first.tile_count == len(small.matrix) and first.count_above(float(first.scores.scores.min())) == len(
        small.matrix
    )
    truth_ids = set((np.flatnonzero(small.truth) + 1).tolist())
    for _ in range(3):
        rnd = jobs.concept_score(folder, "hidden", top_k=10)
        good = [h.tile.id for h in rnd.best if h.tile.id in truth_ids]
        bad = [h.tile.id for h in rnd.best if h.tile.id not in truth_ids]
        concept = jobs.concept_mark(folder, "hidden", accept=good, reject=bad)
    assert concept.accepted >= MIN_EACH and concept.rejected >= MIN_EACH
    refined = jobs.concept_score(folder, "hidden", top_k=10, use_marks=True)
    assert refined.method == METHOD_LOGISTIC and "logistic regression" in refined.summary()
    assert [h.tile.id for h in refined.best] != [h.tile.id for h in first.best], "the ranking changed"
    assert not {h.tile.id for h in refined.best} & set(refined.marks), "marked tiles are hidden from the list"
    assert recall_at_truth(refined.scores.scores, small.truth) > recall_at_truth(first.scores.scores, small.truth)

    # re-index the first raster: its tiles get new ids, the marks find them by raster + window
    with TileIndex.open(folder) as idx:
        geo = index_matrix(idx).rasters[1]
        marks_before = len(jobs.concept_score(folder, "hidden").marks)
        from planted_concepts import tile_records

        rows, tiles = tile_records(small, 1)
        idx.remove_raster(geo.path)
        rid, _ = idx.begin_raster(geo.path, "fp1-again", geo.crs_wkt, 1200, 1200, (1, 2, 3), len(rows))
        idx.add_tiles(rid, tiles, small.matrix.vectors[rows])
        idx.finish_raster(rid)
    again = jobs.concept_score(folder, "hidden", use_marks=True)
    assert len(again.marks) == marks_before and again.dropped_marks == 0
    assert min(again.marks) > len(small.matrix) or max(again.marks) > len(small.matrix), "new tile ids"
    assert again.method == METHOD_LOGISTIC
    # remove the second raster: its marks leave the computation and the round says so
    with TileIndex.open(folder) as idx:
        idx.remove_raster(index_matrix(idx).rasters[2].path)
    rest = jobs.concept_score(folder, "hidden")
    assert rest.dropped_marks > 0 and "no longer in the index" in rest.summary()
    assert rest.tile_count == len(small.matrix) // 2


def test_areas_gpkg_records_the_concept(planted_index, tmp_path):
    from osgeo import ogr

    folder, small = planted_index
    jobs.concept_create(folder, "hidden", query="hidden thing", examples=[int(np.flatnonzero(small.truth)[0]) + 1])
    jobs.concept_mark(folder, "hidden", reject=[int(np.flatnonzero(~small.truth)[0]) + 1])
    rnd = jobs.concept_score(folder, "hidden")
    threshold = float(np.sort(rnd.scores.scores)[-30])
    out = jobs.concept_areas(folder, "hidden", threshold, tmp_path / "areas.gpkg")
    assert out.path == tmp_path / "areas.gpkg" and "area(s) of 'hidden'" in out.summary()
    ds = ogr.Open(str(out.path))
    areas, tiles = ds.GetLayerByName("areas"), ds.GetLayerByName("tiles")
    names = [areas.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(areas.GetLayerDefn().GetFieldCount())]
    assert names == [
        "area_id",
        "tiles",
        "best_score",
        "mean_score",
        "area_m2",
        "area_ha",
        "rasters",
        "concept",
        "query",
        "negative",
        "method",
        "examples",
        "accepted",
        "rejected",
        "marks",
        "threshold",
        "model",
    ]
    feats = list(areas)
    assert len(feats) == len(out.result.areas) and sum(f["tiles"] for f in feats) == tiles.GetFeatureCount() == 30
    for f in feats:
        assert (f["concept"], f["query"], f["examples"], f["rejected"], f["marks"]) == (
            "hidden",
            "hidden thing",
            1,
            1,
            2,
        )
        assert f["threshold"] == pytest.approx(threshold) and f["method"] == METHOD_ROCCHIO
        assert f["area_ha"] == pytest.approx(f["area_m2"] / 1e4)
        assert f.GetGeometryRef().GetArea() == pytest.approx(f["tiles"] * TILE_PX**2, rel=1e-9)
    assert areas.GetMetadataItem("RSCLIP_CONCEPT") == "hidden" and "hidden thing" in areas.GetMetadataItem(
        "RSCLIP_QUERY"
    )
    verdicts = {t["verdict"] for t in tiles}
    assert verdicts <= {"", "example", "rejected"}
    with pytest.raises(EngineError, match="outside the scores"):
        jobs.concept_areas(folder, "hidden", 2.0)
    text_only = jobs.concept_areas(folder, query="hidden thing")
    assert text_only.round.method == METHOD_TEXT and text_only.path is None
    assert len(text_only.result.tile_rows) == text_only.round.count_above(text_only.round.threshold) > 0


def test_training_export_with_chips(planted_index, tmp_path):
    """Marks → GeoPackage + GeoTIFF chips cut from the real raster file (here written to match the index)."""
    from osgeo import gdal, ogr

    from rasters import write_raster

    folder, small = planted_index
    with TileIndex.open(folder) as idx:
        geo = index_matrix(idx).rasters[1]
        idx.conn.execute("UPDATE rasters SET path=? WHERE id=1", (str(tmp_path / "scene.tif"),))
        idx.conn.commit()
    a, b, c, d, e, f = geo.affine
    pixels = np.random.default_rng(0).integers(1, 255, (4, 1200, 1200)).astype(np.uint8)
    write_raster(tmp_path / "scene.tif", pixels, transform=(a, b, c, d, e, f), crs_wkt=geo.crs_wkt, epsg=None)
    jobs.concept_create(folder, "hidden", query="hidden thing")
    jobs.concept_mark(folder, "hidden", accept=[1, 2], reject=[200], example=[3])  # tile 200 is in raster 2
    out = jobs.concept_export(folder, "hidden", tmp_path / "train.gpkg", chips=tmp_path / "chips")
    assert out.counts == {"accepted": 2, "rejected": 1, "example": 1} and out.chips == 3
    assert out.missing_rasters == [small.matrix.rasters[2].path] and "cannot be read" in out.summary()
    ds = ogr.Open(str(out.path))
    lyr = ds.GetLayerByName("training_tiles")
    feats = {f["tile_id"]: f for f in lyr}
    assert {i: (f["verdict"], f["label"]) for i, f in feats.items()} == {
        1: ("accepted", 1),
        2: ("accepted", 1),
        3: ("example", 1),
        200: ("rejected", 0),
    }
    assert feats[200]["chip"] == "" and feats[1]["raster"] == str(tmp_path / "scene.tif")
    chip = gdal.Open(feats[1]["chip"])
    assert feats[1]["chip"].startswith(str(tmp_path / "chips" / "accepted"))
    assert (chip.RasterXSize, chip.RasterYSize, chip.RasterCount) == (TILE_PX, TILE_PX, 4)
    np.testing.assert_array_equal(chip.ReadAsArray(), pixels[:, 0:100, 0:100])
    gt = chip.GetGeoTransform()
    assert (gt[0], gt[3]) == pytest.approx((a, d))
    assert feats[1].GetGeometryRef().GetArea() == pytest.approx(TILE_PX**2)


def test_bad_input_gets_one_sentence(planted_index, tmp_path):
    folder, _ = planted_index
    jobs.concept_create(folder, "hidden", query="hidden thing")
    cases = [
        (lambda: jobs.concept_mark(folder, "hidden", accept=[99999]), "Tile 99999 is not in the index"),
        (lambda: jobs.concept_score(folder, "hidden", use_marks=True), "has no accepted or rejected tiles yet"),
        (lambda: jobs.concept_score(folder, "nothing"), "There is no concept 'nothing'"),
        (lambda: jobs.concept_areas(folder, "hidden", threshold=5.0), "outside the scores"),
        (lambda: jobs.concept_mark(folder, "hidden", accept=[1], reject=[1]), "cannot be both"),
        (lambda: jobs.concept_mark(folder, "hidden"), "Give the tiles to mark"),
        (lambda: jobs.concept_create(folder, "   ", query="x"), "needs a name"),
        (lambda: jobs.concept_create(folder, "neg", negative="confuser"), "only a negative text"),
        (lambda: jobs.concept_export(folder, "hidden", tmp_path / "t.gpkg"), "no marked tiles to export"),
        (lambda: jobs.concept_export(folder, "hidden", tmp_path / "t.shp"), "must be a .gpkg file"),
        (lambda: jobs.concept_areas(folder), "either a concept name or a text query"),
        (lambda: parse_tile_ids("12, x7"), "'x7' is not a tile id"),
    ]
    for call, message in cases:
        with pytest.raises(EngineError) as err:
            call()
        assert message in str(err.value)
        assert len(str(err.value).splitlines()) == 1
    jobs.concept_create(folder, "empty")
    with pytest.raises(EngineError, match="no text, example tiles or accepted tiles"):
        jobs.concept_score(folder, "empty")


def test_concept_tables_live_in_the_index_database(planted_index):
    folder, _ = planted_index
    jobs.concept_create(folder, "hidden", query="hidden thing")
    jobs.concept_mark(folder, "hidden", accept=[5])
    conn = sqlite3.connect(str(folder / "index.sqlite"))
    try:
        assert conn.execute("SELECT name, query FROM concepts").fetchall() == [("hidden", "hidden thing")]
        assert conn.execute("SELECT kind, tile_id, col_off, row_off FROM concept_marks").fetchall() == [
            ("accepted", 5, 4 * TILE_PX, 0)
        ]
    finally:
        conn.close()
    assert parse_tile_ids(["1,2", "3 4"]) == [1, 2, 3, 4]


def test_a_full_disk_is_one_sentence_and_the_index_stays_usable(tmp_path):
    """A real full file system (a small tmpfs filled up): storing a concept fails readably, nothing is lost."""
    import gc
    import subprocess

    from engine.concepts import create_concept, mark_tiles

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        small = planted_world(rasters=1, grid=(8, 8), dim=8, clusters_per_raster=1, seed=4)
        build_index(small, mnt / "idx").close()
        jobs.concept_create(mnt / "idx", "kept")
        with TileIndex.open(mnt / "idx") as idx:  # an open index (the dock's or a script's) when the disk fills
            with open(mnt / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            tiles = list(idx.iter_tiles())
            with pytest.raises(EngineError, match=r"Cannot store the concept in the index \(database or disk is full"):
                for n in range(500):  # SQLite may still fit a few rows into free pages
                    concept = create_concept(idx.conn, f"more {n}")
                    mark_tiles(idx.conn, concept, "accepted", tiles)
        (mnt / "filler").unlink()
        assert "kept" in [c.name for c in jobs.concept_list(mnt / "idx")]
        jobs.concept_mark(mnt / "idx", "kept", reject=[1])
    finally:
        gc.collect()
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_concepts_on_an_index_made_by_the_last_release(tmp_path):
    """A release index (format 1, no concept tables) reads as having no concepts without being changed;
    the first concept written updates it to the current format, keeping every tile."""
    import hashlib
    import shutil
    from pathlib import Path

    from engine.index import SCHEMA_VERSION

    fixture = Path(__file__).resolve().parent / "data" / "index-v1"
    folder = tmp_path / "index"
    shutil.copytree(fixture, folder)
    db = folder / "index.sqlite"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert jobs.concept_list(folder) == []
    with pytest.raises(EngineError, match="There is no concept 'roofs'.*none yet"):
        jobs.concept_score(folder, "roofs")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before, "reading never changes a release index"

    jobs.concept_create(folder, "roofs")
    marked = jobs.concept_mark(folder, "roofs", accept=[1, 2], reject=[30])
    assert (marked.accepted, marked.rejected) == (2, 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (str(SCHEMA_VERSION),)
        assert conn.execute("SELECT COUNT(*) FROM tiles").fetchone() == (31,)
    assert [c.name for c in jobs.concept_list(folder)] == ["roofs"]
