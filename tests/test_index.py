"""Index, search, labelling and GeoPackage export on planted vectors (no model needed)."""
import json
import multiprocessing
from types import SimpleNamespace

import numpy as np
import pytest

from engine.errors import EngineError
from engine.index import FAISS_META, FAISS_NAME, TileIndex
from engine.labeling import classify, label_tiles, top_two
from engine.search import search_similar, search_text, top_k

UTM14 = ('PROJCS["NAD83 / UTM zone 14N",GEOGCS["NAD83",DATUM["North_American_Datum_1983",SPHEROID["GRS 1980",'
         '6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
         'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",-99],PARAMETER["scale_factor",0.9996],'
         'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","26914"]]')


def fake_tile(col: int, row: int, size: int = 10):
    x0, y0 = 500000 + col * size, 5200000 - row * size
    poly = f"POLYGON (({x0} {y0}, {x0 + size} {y0}, {x0 + size} {y0 - size}, {x0} {y0 - size}, {x0} {y0}))"
    lon, lat = -99 + col * 0.001, 47 - row * 0.001
    wgs = f"POLYGON (({lon} {lat}, {lon + 0.001} {lat}, {lon + 0.001} {lat - 0.001}, {lon} {lat - 0.001}, {lon} {lat}))"
    return SimpleNamespace(window=SimpleNamespace(col_off=col * size, row_off=row * size, width=size, height=size),
                           bounds=(x0, y0 - size, x0 + size, y0), footprint_wkt=poly, footprint_wgs84_wkt=wgs)


class PlantedEncoder:
    """Text → one-hot vector chosen by the test, so search results are known in advance."""

    def __init__(self, mapping: dict, dim: int):
        self.mapping, self.dim = mapping, dim
        self.loaded = SimpleNamespace(logit_scale=100.0)

    def is_truncated(self, text):
        return False

    def encode_prompts(self, phrases, templates=()):
        out = np.zeros((len(phrases), self.dim), np.float32)
        for i, p in enumerate(phrases):
            out[i, self.mapping[p]] = 1.0
        return out


def build(tmp_path, n=12, dim=8, seed=0):
    """An index of ``n`` tiles where tile i's vector points mostly along axis i % dim."""
    rng = np.random.default_rng(seed)
    vecs = np.eye(dim, dtype=np.float32)[np.arange(n) % dim] + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = TileIndex.create(tmp_path / "idx", {"kind": "registry", "name": "planted"}, {"size": 10}, dim)
    rid, done = idx.begin_raster("/data/a.tif", "fp1", UTM14, 100, 100, (1, 2, 3), n)
    assert done == set()
    idx.add_tiles(rid, [fake_tile(i % 10, i // 10) for i in range(n)], vecs)
    idx.finish_raster(rid)
    return idx, vecs


def test_create_add_and_reopen(tmp_path):
    idx, vecs = build(tmp_path)
    assert idx.tile_count() == 12
    idx.close()
    with TileIndex.open(tmp_path / "idx") as again:
        assert again.dim == 8 and again.model == {"kind": "registry", "name": "planted"}
        ids, stored = again.embeddings()
        np.testing.assert_array_equal(stored, vecs)
        rec = again.rasters()[0]
        assert (rec.path, rec.status, rec.tiles, rec.planned) == ("/data/a.tif", "complete", 12, 12)


def test_search_ranks_planted_tiles(tmp_path):
    idx, vecs = build(tmp_path, n=16)
    enc = PlantedEncoder({"water": 3, "forest": 5}, 8)
    hits = search_text(idx, enc, "  water ", k=2)
    assert [h.rank for h in hits] == [1, 2]
    assert sorted(h.tile.id for h in hits) == [4, 12]  # tiles 3 and 11 (0-based) → ids 4 and 12
    assert hits[0].score >= hits[1].score > 0.9
    everything = search_text(idx, enc, "forest", k=1000)
    assert len(everything) == 16, "top-k larger than the index returns every tile"
    assert search_text(idx, enc, "forest", k=100, min_score=0.9)[-1].score >= 0.9
    with pytest.raises(EngineError, match="empty"):
        search_text(idx, enc, "   ", k=3)
    with pytest.raises(EngineError, match="at least 1"):
        top_k(idx, vecs[:1], 0)


def test_similar_excludes_the_example_and_finds_its_twin(tmp_path):
    idx, _ = build(tmp_path, n=16)
    hits = search_similar(idx, [1], k=3)
    assert 1 not in [h.tile.id for h in hits]
    assert hits[0].tile.id == 9  # the other tile along the same axis
    with pytest.raises(EngineError, match="not in the index"):
        search_similar(idx, [999], k=3)


def test_restricted_search_uses_only_allowed_tiles(tmp_path):
    idx, _ = build(tmp_path, n=16)
    enc = PlantedEncoder({"water": 3}, 8)
    allowed = np.array([1, 2, 12], dtype=np.int64)
    hits = search_text(idx, enc, "water", k=5, allowed=allowed)
    assert [h.tile.id for h in hits][0] == 12 and {h.tile.id for h in hits} <= {1, 2, 12}


def test_labels_softmax_winner_and_margin(tmp_path):
    idx, vecs = build(tmp_path, n=8)
    enc = PlantedEncoder({"water": 0, "forest": 1, "field": 2}, 8)
    labels = label_tiles(idx, enc, ["water", "forest", "field"])
    by_id = {lab.tile.id: lab for lab in labels}
    assert by_id[1].label == "water" and by_id[2].label == "forest" and by_id[3].label == "field"
    for lab in labels:
        assert 0 < lab.probability <= 1 and 0 <= lab.margin <= lab.probability
    probs = classify(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), logit_scale=1.0)
    winners, first, margin = top_two(probs)
    e = np.e
    assert list(winners) == [0, 1, 2]
    assert first[0] == pytest.approx(e / (e + 2))
    assert margin[0] == pytest.approx((e - 1) / (e + 2))


def test_faiss_cache_is_rebuilt_when_stale_or_tampered(tmp_path):
    idx, vecs = build(tmp_path, n=10)
    store = idx.vector_store()
    assert store.ntotal == 10
    meta = json.loads((idx.folder / FAISS_META).read_text())
    assert meta["generation"] == idx.generation and meta["count"] == 10
    idx.close()
    (tmp_path / "idx" / FAISS_NAME).write_bytes(b"garbage that is not a faiss index")
    with TileIndex.open(tmp_path / "idx") as again:
        enc = PlantedEncoder({"water": 3}, 8)
        assert search_text(again, enc, "water", k=1)[0].tile.id == 4
    rid_idx = TileIndex.open(tmp_path / "idx")
    rid, done = rid_idx.begin_raster("/data/a.tif", "fp1", UTM14, 100, 100, (1, 2, 3), 12)
    assert len(done) == 10, "a partly indexed raster reports its committed windows for resume"
    rid_idx.add_tiles(rid, [fake_tile(0, 5)], vecs[:1])
    assert rid_idx.vector_store().ntotal == 11, "the cache follows the committed state"


def test_changed_raster_replaces_its_tiles_and_remove(tmp_path):
    idx, vecs = build(tmp_path, n=6)
    old_ids = set(idx.live_ids().tolist())
    generation = idx.generation
    rid, done = idx.begin_raster("/data/a.tif", "fp2-changed", UTM14, 100, 100, (1, 2, 3), 6)
    assert done == set() and idx.tile_count() == 6, "the old tiles stay searchable while the new ones are written"
    idx.add_tiles(rid, [fake_tile(0, 0)], vecs[:1])
    assert set(idx.live_ids().tolist()) == old_ids and idx.rasters()[0].reindexing == (1, 6)
    assert idx.generation == generation, "staged tiles are invisible, so readers' caches stay valid"
    again, done = idx.begin_raster("/data/a.tif", "fp2-changed", UTM14, 100, 100, (1, 2, 3), 6)
    assert again == rid and len(done) == 1, "an interrupted re-index resumes its staged tiles"
    idx.finish_raster(rid)
    assert idx.tile_count() == 1 and not set(idx.live_ids().tolist()) & old_ids, "swapped in one transaction"
    assert idx.generation > generation and idx.rasters()[0].reindexing is None
    assert idx.remove_raster("/data/a.tif") == 1
    assert idx.tile_count() == 0 and idx.rasters() == []
    with pytest.raises(EngineError, match="not in the index"):
        idx.remove_raster("/data/a.tif")


def _hold_lock(folder, ready, release):
    with TileIndex.open(folder) as idx, idx.writing():
        ready.set()
        release.wait(10)


def test_second_writer_is_refused_while_readers_read(tmp_path):
    idx, _ = build(tmp_path, n=4)
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(idx.folder), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(EngineError, match="being written by another process"):
            with idx.writing():
                pass
        assert idx.tile_count() == 4
    finally:
        release.set()
        proc.join(10)
    with idx.writing():
        pass


def test_not_an_index_and_damaged_database(tmp_path):
    with pytest.raises(EngineError, match="No index"):
        TileIndex.open(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("hi")
    with pytest.raises(EngineError, match="not an RS-CLIP Search index"):
        TileIndex.open(tmp_path / "other")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EngineError, match="damaged"):
        TileIndex.open(bad)


def test_geopackage_export(tmp_path):
    from osgeo import ogr

    from engine.export import write_hits_gpkg, write_labels_gpkg

    idx, _ = build(tmp_path, n=6)
    enc = PlantedEncoder({"water": 3, "forest": 1}, 8)
    hits = search_text(idx, enc, "water", k=4)
    out = write_hits_gpkg(tmp_path / "hits.gpkg", hits)
    ds = ogr.Open(str(out))
    lyr = ds.GetLayer(0)
    assert lyr.GetFeatureCount() == 4
    assert [lyr.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(4)] == ["rank", "score", "raster", "tile_id"]
    assert lyr.GetSpatialRef().GetAuthorityCode(None) == "26914"
    feat = lyr.GetNextFeature()
    assert feat.GetField("rank") == 1 and feat.GetField("tile_id") == hits[0].tile.id
    env = feat.GetGeometryRef().GetEnvelope()
    assert env[0] == pytest.approx(hits[0].tile.bounds[0]) and env[3] == pytest.approx(hits[0].tile.bounds[3])
    labels = label_tiles(idx, enc, ["water", "forest"])
    out2 = write_labels_gpkg(tmp_path / "labels.gpkg", labels)
    ds2 = ogr.Open(str(out2))
    lyr2 = ds2.GetLayer(0)
    assert lyr2.GetFeatureCount() == 6
    assert {f.GetField("label") for f in lyr2} <= {"water", "forest"}
    with pytest.raises(EngineError, match="must be a .gpkg"):
        write_hits_gpkg(tmp_path / "hits.shp", hits)
    with pytest.raises(EngineError, match="does not exist"):
        write_hits_gpkg(tmp_path / "missing" / "hits.gpkg", hits)


def test_class_sets_shipped_and_parsed(tmp_path):
    from engine.classsets import available_class_sets, load_class_set, parse_classes, read_classes_file

    sets = available_class_sets()
    assert {"eurosat", "ucmerced", "worldcover"} <= set(sets)
    assert len(load_class_set("eurosat")) == 10
    assert len(load_class_set("ucmerced")) == 21
    assert len(load_class_set("worldcover")) == 11
    assert parse_classes("water, forest,,Water\nfield") == ["water", "forest", "field"]
    with pytest.raises(EngineError, match="Unknown class set"):
        load_class_set("nope")
    with pytest.raises(EngineError, match="at least two"):
        parse_classes("water")
    f = tmp_path / "c.txt"
    f.write_text("# mine\nwater\n\nforest # trees\n")
    assert read_classes_file(f) == ["water", "forest"]
    with pytest.raises(EngineError, match="Cannot read"):
        read_classes_file(tmp_path / "missing.txt")


def test_prompt_templates():
    from engine.prompts import parse_templates

    assert parse_templates(None) is None and parse_templates("  ") is None  # None: the model's own
    assert parse_templates("a photo of {}; {} from space") == ("a photo of {}", "{} from space")
    with pytest.raises(EngineError, match="no '{}'"):
        parse_templates("a photo of a thing")
