"""A million tiles, as a user lives with them (issue #16), checked on small planted indexes (not timed).

* incremental additions and removals give the same top hits as a rebuilt index; re-training happens
  only in the indexing job, when the index has doubled;
* nprobe is calibrated on text queries (planted with a modality gap) as well as image queries;
* restricted searches (rasters, areas; SQL + R*Tree + FAISS id selectors) return exactly the tiles
  inside the restriction, through the engine and the command line (``--raster``, ``--within``);
* a damaged vector cache is still detected, though opening no longer hashes big files in full;
* format 3 indexes (made by the last release) are read unchanged and migrated to format 4;
* batched reading gives the pixels of one-by-one reading; the precision calibration is cached.

Times are measured by ``make bench`` (bench/million.py), never here.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from osgeo import osr

from engine import jobs, vectors
from engine.cli import main
from engine.errors import EngineError
from engine.index import DB_NAME, FAISS_META, FAISS_NAME, SCHEMA_VERSION, TileIndex
from engine.search import candidate_ids, top_k
from engine.tiling import RasterTiler, TileWindow, TilingSpec
from planted_search import ModalityWorld, exact_top
from rasters import noise, write_raster

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DIM = 64


def utm(epsg: int = 32633) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def add_raster(idx: TileIndex, path: str, vecs: np.ndarray, side: int, origin=(500000.0, 6000000.0),
               pixel: float = 10.0, tile: int = 32, crs: str | None = None) -> np.ndarray:
    """Register a ``side`` × ``side``-tile raster with planted vectors (row-major); returns its tile ids."""
    gt = (origin[0], pixel, 0.0, origin[1], 0.0, -pixel)
    rid, _ = idx.begin_raster(path, f"fp-{path}", crs or utm(), side * tile, side * tile, (1, 2, 3), side * side,
                              transform=gt)
    windows = [TileWindow(c * tile, r * tile, tile, tile) for r in range(side) for c in range(side)]
    first = int(idx.conn.execute("SELECT value FROM meta WHERE key = 'next_tile_id'").fetchone()[0])
    for start in range(0, len(windows), 4096):
        idx.add_tiles(rid, windows[start:start + 4096], vecs[start:start + 4096])
    idx.finish_raster(rid)
    return np.arange(first, first + len(windows))


@pytest.fixture
def approximate(monkeypatch):
    """Approximate search from 4,000 tiles (the product switches at 100,000)."""
    monkeypatch.setattr(vectors, "APPROX_THRESHOLD", 4000)


def truth_of(idx: TileIndex, queries: np.ndarray, allowed: np.ndarray | None = None) -> list[list[int]]:
    ids, vecs = idx.embeddings(allowed)
    return exact_top(queries, ids, vecs, 10).tolist()


def hits_of(idx: TileIndex, queries: np.ndarray, allowed: np.ndarray | None = None) -> list[list[int]]:
    return [[h.tile.id for h in top_k(idx, q[None], 10, allowed=allowed)] for q in queries]


# -- incremental updates -----------------------------------------------------------------------------------
def plant_answers(queries: np.ndarray, vecs: list[np.ndarray], per: int, seed: int) -> None:
    """Make ``per`` vectors of each array in ``vecs`` clear answers of each query (cosine 0.85–0.95 to it)."""
    rng = np.random.default_rng(seed)
    for arr in vecs:
        spots = rng.choice(len(arr), size=(len(queries), per), replace=False)
        for q, where in zip(queries, spots):
            for i in where:
                cos = 0.95 - 0.1 * rng.random()
                noise = rng.standard_normal(len(q)).astype(np.float32)
                noise -= noise @ q * q
                arr[i] = cos * q + np.sqrt(1 - cos ** 2) * noise / np.linalg.norm(noise)


def test_incremental_adds_and_removals_give_the_same_top_hits_as_a_rebuilt_index(tmp_path, approximate,
                                                                                  monkeypatch):
    world = ModalityWorld(dim=DIM, clusters=300, seed=1)
    sample = world.texts(40, seed=2)
    planted = world.texts(12, seed=3)  # queries with planted answers in every raster
    a, b, c, d = (world.images(n, seed=s) for n, s in ((80 * 80, 4), (65 * 65, 5), (40 * 40, 6), (110 * 110, 7)))
    plant_answers(planted, [a, b, c, d], 3, seed=8)
    idx = TileIndex.create(tmp_path / "idx", {"kind": "planted"}, TilingSpec(size=32).to_dict(), DIM)
    with idx.writing():
        add_raster(idx, "/data/a.tif", a, 80)
        add_raster(idx, "/data/b.tif", b, 65, origin=(501000.0, 6000000.0))
        idx.store_query_sample("text", [f"t{i}" for i in range(len(sample))], sample)
        progress: list[str] = []
        store = idx.vector_store(maintain=True, progress=lambda f, m: progress.append(m))
    assert store.approximate and store.trained_at == 10625 and any("Training" in m for m in progress)
    assert set(store.recall) == {"text", "image"} and min(store.recall.values()) >= vectors.TARGET_RECALL

    builds: list[int] = []
    real_build = vectors.VectorStore.build.__func__

    def counting_build(cls, ids, vecs, *args, **kwargs):
        builds.append(len(ids))
        return real_build(cls, ids, vecs, *args, **kwargs)

    def check(reader: TileIndex) -> list[list[int]]:
        """Planted queries: exactly their answers; others: recall@10 as calibrated."""
        got = hits_of(reader, planted)
        assert got == truth_of(reader, planted)
        ids, vecs = reader.embeddings()
        others = np.concatenate([world.texts(30, seed=9), world.image_queries(vecs, 30, seed=10)])
        truth = exact_top(others, ids, vecs, 10).tolist()
        found = [len(set(g) & set(t)) / 10 for g, t in zip(hits_of(reader, others), truth)]
        assert np.mean(found) >= 0.95
        return got

    monkeypatch.setattr(vectors.VectorStore, "build", classmethod(counting_build))
    # another handle (another process, say) adds a raster; this one's next search updates its cache in place
    with TileIndex.open(tmp_path / "idx", write=True) as writer, writer.writing():
        c_ids = add_raster(writer, "/data/c.tif", c, 40, origin=(502000.0, 6000000.0))
    with TileIndex.open(tmp_path / "idx") as reader:
        got = check(reader)
        updated = reader.vector_store()
        assert builds == [], "a search updates the cache by id, it does not rebuild it"
        assert updated.trained_at == 10625 and updated.ntotal == 12225
        assert all(set(row) & set(c_ids.tolist()) for row in got), "the added tiles are found"
        reader.vector_store(rebuild=True)
        assert builds == [12225] and hits_of(reader, planted) == got, "a rebuilt index gives the same top hits"
    # removing a raster: the same, by FAISS id
    jobs.remove_raster(tmp_path / "idx", "/data/a.tif")
    with TileIndex.open(tmp_path / "idx") as reader:
        got = check(reader)
        assert builds == [12225] and reader.vector_store().ntotal == 5825
        reader.vector_store(rebuild=True)
        assert builds == [12225, 5825] and hits_of(reader, planted) == got
    # doubling the index: a search still only updates; the indexing job re-trains, with progress
    with idx.writing():
        add_raster(idx, "/data/d.tif", d, 110, origin=(503000.0, 6000000.0))
    with TileIndex.open(tmp_path / "idx") as reader:
        check(reader)
        assert builds == [12225, 5825]
    progress.clear()
    with TileIndex.open(tmp_path / "idx", write=True) as writer, writer.writing():
        retrained = writer.vector_store(maintain=True, progress=lambda f, m: progress.append(m))
        assert builds == [12225, 5825, 17925] and retrained.trained_at == 17925
        assert any("Training" in m for m in progress)
        check(writer)
    idx.close()


def test_a_cache_of_another_database_or_a_forgotten_state_is_rebuilt(tmp_path, approximate):
    world = ModalityWorld(dim=DIM, clusters=100, seed=1)
    idx = TileIndex.create(tmp_path / "idx", {"kind": "planted"}, TilingSpec(size=32).to_dict(), DIM)
    with idx.writing():
        add_raster(idx, "/data/a.tif", world.images(70 * 70, seed=4), 70)
        idx.vector_store(maintain=True)
    idx.close()
    shutil.copytree(tmp_path / "idx", tmp_path / "twin")
    with TileIndex.open(tmp_path / "twin", write=True) as twin:
        twin.conn.execute("DELETE FROM history")  # its cache's state is no longer known to the database
        twin.conn.commit()
        with twin.writing():
            add_raster(twin, "/data/b.tif", world.images(10 * 10, seed=5), 10)
        store = twin.vector_store()
        assert store.ntotal == 5000 and store.trained_at == 5000, "rebuilt from the database, not patched"


# -- calibration on text queries -----------------------------------------------------------------------------
def test_nprobe_is_calibrated_on_the_models_text_queries_as_well_as_image_queries():
    world = ModalityWorld(dim=DIM, clusters=400, seed=3)
    images = world.images(30_000, seed=4)
    ids = np.arange(1, 30_001)
    texts = world.texts(120, seed=5)
    fresh = world.texts(200, seed=6)
    image_only = vectors.VectorStore.build(ids, images, threshold=10_000)
    with_text = vectors.VectorStore.build(ids, images, threshold=10_000, text_queries=texts)
    assert set(image_only.recall) == {"image"} and set(with_text.recall) == {"text", "image"}
    assert min(with_text.recall.values()) >= vectors.TARGET_RECALL

    def recall_on(store, queries):
        truth = exact_top(queries, ids, images, 10)
        _, got = store.search(queries, 10)
        return float(np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth.tolist(), got.tolist())]))

    assert with_text.nprobe > image_only.nprobe or with_text.rerank > image_only.rerank, \
        "text queries sit apart from the images: they need a wider search than image queries"
    assert recall_on(image_only, fresh) < vectors.TARGET_RECALL, "calibrated on images alone, text recall falls short"
    assert recall_on(with_text, fresh) >= 0.95, "calibrated on text, unseen text queries are found too"


@pytest.mark.slow
def test_the_index_job_stores_the_models_text_sample_and_info_shows_recall_per_kind(tmp_path, tiny_model,
                                                                                      approximate, capsys):
    from engine.prompts import model_templates
    from engine.querysample import text_phrases

    raster = write_raster(tmp_path / "big.tif", noise(3, 1024, 1024, seed=3))
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16))
    with TileIndex.open(tmp_path / "idx") as idx:
        names, stored = idx.query_sample("text")
        sample = dict(zip(names, stored))
        classes, templates = text_phrases(), tuple(model_templates(model))
        assert len(classes) > 20 and len(templates) > 1 and len(names) == len(classes) * (1 + min(len(templates), 5))
        encoder = jobs.get_encoder(model)
        np.testing.assert_allclose(np.stack([sample[c] for c in classes]), encoder.encode_prompts(classes, templates),
                                   atol=1e-5, err_msg="each class as a search embeds it: through every template")
        prompt = templates[0].format(classes[3])
        np.testing.assert_allclose(sample[prompt], encoder.encode_prompts([classes[3]], templates[:1])[0], atol=1e-5)
        store = idx.vector_store()
        assert store.approximate and store.calibration is not None and "text" in store.calibration.kinds
    assert main(["info", "--index", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    recall = next(line for line in out.splitlines() if line.startswith("Recall:"))
    assert "on text queries" in recall and "on image queries" in recall, out
    info = jobs.info(tmp_path / "idx")
    assert info.search_recall["text"] >= vectors.TARGET_RECALL and info.vector_kind.startswith("ivf")
    assert set(info.search_settings) == {"text", "image"}
    assert any(line.startswith("Search:   image queries probe") for line in out.splitlines()), out


# -- restricted search -----------------------------------------------------------------------------------------
def brute_within(idx: TileIndex, area_wkt: str) -> list[int]:
    """The right answer: every live tile whose WGS84 footprint (from its record) meets the area."""
    import shapely

    area = shapely.from_wkt(area_wkt)
    return sorted(t.id for t in idx.iter_tiles() if shapely.from_wkt(t.footprint_wgs84_wkt).intersects(area))


def lonlat_box(crs_wkt: str, x0: float, y0: float, x1: float, y1: float) -> str:
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(crs_wkt)
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    ring = [ct.TransformPoint(x, y)[:2] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    return "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in ring + ring[:1]) + "))"


@pytest.mark.parametrize("exact_limit", [vectors.APPROX_THRESHOLD, 0], ids=["exact-subset", "id-selector"])
def test_restricted_searches_return_exactly_the_tiles_inside_the_restriction(tmp_path, approximate, monkeypatch,
                                                                              exact_limit):
    import engine.index as index_module

    monkeypatch.setattr(index_module, "EXACT_RESTRICTED", exact_limit)
    world = ModalityWorld(dim=DIM, clusters=200, seed=7)
    idx = TileIndex.create(tmp_path / "idx", {"kind": "planted"}, TilingSpec(size=32).to_dict(), DIM)
    rotated = (500000.0, 8.0, 3.0, 6000000.0, 3.0, -8.0)
    with idx.writing():
        a = add_raster(idx, "/data/a.tif", world.images(50 * 50, seed=1), 50)
        b = add_raster(idx, "/data/b.tif", world.images(40 * 40, seed=2), 40, origin=(520000.0, 6010000.0),
                       crs=utm(32634))
        rid, _ = idx.begin_raster("/data/rot.tif", "fp-rot", utm(), 640, 640, (1, 2, 3), 400, transform=rotated)
        idx.add_tiles(rid, [TileWindow(c * 32, r * 32, 32, 32) for r in range(20) for c in range(20)],
                      world.images(400, seed=3))
        idx.finish_raster(rid)
        idx.vector_store(maintain=True)
    queries = np.concatenate([world.texts(8, seed=9), world.image_queries(idx.embeddings()[1], 8, seed=10)])
    ids_of = {path: sorted(r[0] for r in idx.conn.execute(
        "SELECT t.id FROM tiles t JOIN rasters r ON r.id = t.raster_id WHERE r.path = ?", (path,)))
        for path in ("/data/a.tif", "/data/b.tif", "/data/rot.tif")}
    assert ids_of["/data/a.tif"] == a.tolist() and ids_of["/data/b.tif"] == b.tolist()

    one = candidate_ids(idx, ["/data/b.tif"])
    assert one.tolist() == b.tolist()
    two = candidate_ids(idx, ["/data/a.tif", "/data/rot.tif"])
    assert two.tolist() == sorted(ids_of["/data/a.tif"] + ids_of["/data/rot.tif"])
    def right(allowed: np.ndarray) -> None:
        """Only allowed tiles; exactly the right ones where the allowed tiles are scored exactly (few of them)."""
        got, truth = hits_of(idx, queries, allowed), truth_of(idx, queries, allowed)
        assert set(sum(got, [])) <= set(allowed.tolist())
        if exact_limit >= len(allowed):
            assert got == truth
        else:
            assert np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)]) >= 0.9

    for allowed in (one, two):
        right(allowed)
    # an area across a.tif and the rotated raster (they overlap), in WGS84; its edge cuts through tiles
    area = lonlat_box(utm(), 500123.0, 5999877.0, 501517.0, 5998611.0)
    inside = candidate_ids(idx, within_wgs84_wkt=area)
    assert inside.tolist() == brute_within(idx, area) and 10 < len(inside) < 400
    assert set(inside.tolist()) & set(ids_of["/data/rot.tif"]) and set(inside.tolist()) & set(a.tolist())
    right(inside)
    both = candidate_ids(idx, ["/data/rot.tif"], area)
    assert both.tolist() == sorted(set(inside.tolist()) & set(ids_of["/data/rot.tif"]))
    far = lonlat_box(utm(), 900000.0, 5000000.0, 900100.0, 4999900.0)
    assert candidate_ids(idx, within_wgs84_wkt=far).tolist() == [] and top_k(
        idx, queries[:1], 10, allowed=candidate_ids(idx, within_wgs84_wkt=far)) == []
    with pytest.raises(EngineError, match="not in the index"):
        candidate_ids(idx, ["/data/nowhere.tif"])
    with pytest.raises(EngineError, match="not a valid geometry"):
        candidate_ids(idx, within_wgs84_wkt="POLYGON ((1 2, 3")
    idx.close()


@pytest.mark.slow
def test_cli_raster_and_within_restrict_search_and_label(tmp_path, tiny_model, capsys):
    from osgeo import ogr

    a = write_raster(tmp_path / "a.tif", noise(3, 128, 128, seed=1))
    b = write_raster(tmp_path / "b.tif", noise(3, 128, 128, seed=2), transform=(502000.0, 10, 0, 6000000.0, 0, -10))
    c = write_raster(tmp_path / "c.tif", noise(3, 96, 96, seed=3), transform=(504000.0, 10, 0, 6000000.0, 0, -10))
    idx = tmp_path / "idx"
    margs = ["--arch", str(tiny_model.config), "--checkpoint", str(tiny_model.checkpoint), "--tile-size", "32"]
    assert main(["index", str(a), str(b), str(c), "--index", str(idx), *margs]) == 0
    capsys.readouterr()

    def search(*extra) -> list[dict]:
        assert main(["search", "water", "--index", str(idx), "--top-k", "100", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["results"]

    got = search("--raster", str(a), "--raster", str(c))
    assert {Path(r["raster"]).name for r in got} == {"a.tif", "c.tif"} and len(got) == 16 + 9
    # --within: a GeoJSON in Web Mercator covering the west half of b.tif (and nothing else)
    with TileIndex.open(idx) as index:
        b_tiles = [t for t in index.iter_tiles([str(b)])]
        crs = b_tiles[0].crs_wkt
    area = lonlat_box(crs, 502000.0 + 10, 6000000.0 - 10, 502000.0 + 630, 6000000.0 - 1270)
    mercator = tmp_path / "area.geojson"
    ds = ogr.GetDriverByName("GeoJSON").CreateDataSource(str(mercator))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    layer = ds.CreateLayer("area", srs, ogr.wkbPolygon)
    geom = ogr.CreateGeometryFromWkt(area)
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geom.AssignSpatialReference(wgs)
    geom.TransformTo(srs)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(geom)
    layer.CreateFeature(feature)
    ds = None
    with TileIndex.open(idx) as index:
        want = sorted(brute_within(index, area))
    from_file = search("--within", str(mercator))
    from_wkt = search("--within", area)
    assert sorted(r["tile_id"] for r in from_file) == want == sorted(r["tile_id"] for r in from_wkt)
    assert {Path(r["raster"]).name for r in from_file} == {"b.tif"} and len(want) == 8
    assert main(["label", "--index", str(idx), "--classes", "water,forest", "--json", "--raster", str(b)]) == 0
    labels = json.loads(capsys.readouterr().out)
    rows = labels["results"]
    assert len(rows) == 16 and {Path(r["raster"]).name for r in rows} == {"b.tif"}
    for bad, sentence in ((["--raster", str(tmp_path / "other.tif")], "not in the index"),
                          (["--within", "POLYGON ((1 2"], "not a valid geometry"),
                          (["--within", "somewhere"], "neither a vector file nor WKT")):
        assert main(["search", "water", "--index", str(idx), *bad]) == 2
        err = capsys.readouterr().err
        assert sentence in err.splitlines()[-1] and "Traceback" not in err, err


# -- damage ------------------------------------------------------------------------------------------------------
def small_index(tmp_path: Path, side: int = 80) -> tuple[Path, np.ndarray]:
    """An approximate index whose queries have planted answers (so approximate search must find them all)."""
    world = ModalityWorld(dim=DIM, clusters=100, seed=2)
    queries, vecs = world.texts(5, seed=4), world.images(side * side, seed=3)
    plant_answers(queries, [vecs], 10, seed=5)
    idx = TileIndex.create(tmp_path / "idx", {"kind": "planted"}, TilingSpec(size=32).to_dict(), DIM)
    with idx.writing():
        add_raster(idx, "/data/a.tif", vecs, side)
        idx.vector_store(maintain=True)
    idx.close()
    return tmp_path / "idx", queries


def flip_middle(path: Path) -> None:
    """Change bytes in the middle of a file, keeping its size (damage, not a new file)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 + 1234
    data[mid:mid + 64] = bytes(255 - v for v in data[mid:mid + 64])
    path.write_bytes(bytes(data))


def test_a_damaged_small_cache_is_detected_on_opening(tmp_path, approximate):
    folder, queries = small_index(tmp_path)
    flip_middle(folder / FAISS_NAME)
    damaged = hashlib.sha256((folder / FAISS_NAME).read_bytes()).hexdigest()
    with TileIndex.open(folder) as idx:
        assert hits_of(idx, queries) == truth_of(idx, queries)
    assert hashlib.sha256((folder / FAISS_NAME).read_bytes()).hexdigest() != damaged, "rebuilt and written again"
    for cut in (100, (folder / FAISS_NAME).stat().st_size // 2):  # truncated: a FAISS read error, then rebuilt
        (folder / FAISS_NAME).write_bytes((folder / FAISS_NAME).read_bytes()[:cut])
        with TileIndex.open(folder) as idx:
            assert hits_of(idx, queries) == truth_of(idx, queries)


def test_a_damaged_large_cache_is_detected_without_hashing_it_on_opening(tmp_path, approximate, monkeypatch):
    import engine.index as index_module

    folder, queries = small_index(tmp_path, side=200)  # a cache file well past its 64 sampled blocks
    monkeypatch.setattr(index_module, "FULL_CHECK_BYTES", 0)  # every cache counts as large here
    hashed: list[Path] = []
    real_sha = index_module._sha256
    monkeypatch.setattr(index_module, "_sha256", lambda path: hashed.append(Path(path)) or real_sha(path))
    with TileIndex.open(folder) as idx:
        store = idx.vector_store()
        store.verifying.join()
        assert not store.damaged and [p for p in hashed if p.name == FAISS_NAME] == [folder / FAISS_NAME], \
            "hashed in full once, in the background"
    # damage between the sampled blocks: opening still accepts it, the background check finds it
    data = bytearray((folder / FAISS_NAME).read_bytes())
    size, block, blocks = len(data), 4096, 64
    sampled = set()
    for n in range(blocks):
        start = max(0, (size - block) * n // (blocks - 1))
        sampled.update(range(start, start + block))
    spot = next(i for i in range(size // 3, size) if all(j not in sampled for j in range(i, i + 16)))
    data[spot:spot + 16] = bytes(255 - v for v in data[spot:spot + 16])
    (folder / FAISS_NAME).write_bytes(bytes(data))
    with TileIndex.open(folder) as idx:
        store = idx.vector_store()
        assert store.verifying is not None, "accepted on opening (its sampled blocks check out), checked meanwhile"
        store.verifying.join()
        assert store.damaged and not (folder / FAISS_META).exists(), "no later process trusts the file"
        assert hits_of(idx, queries) == truth_of(idx, queries)
        rebuilt = idx.vector_store()
        assert rebuilt is not store and not rebuilt.damaged
        assert hits_of(idx, queries) == truth_of(idx, queries)
    meta = json.loads((folder / FAISS_META).read_text())
    assert meta["sha256"] == real_sha(folder / FAISS_NAME), "a new cache, bound by its checksum"


# -- format 3 (the last release) → format 4 ------------------------------------------------------------------------
def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_format_3_index_is_read_unchanged_and_migrated_on_its_first_write(tmp_path):
    import shapely

    from engine.concepts import concept_marks, get_concept

    folder = tmp_path / "v3"
    shutil.copytree(DATA / "index-v3", folder)
    (folder / "README.md").unlink()
    old = sqlite3.connect(folder / DB_NAME)
    stored = {r[0]: r[1:] for r in old.execute(
        "SELECT id, minx, miny, maxx, maxy, footprint, footprint_wgs84 FROM tiles ORDER BY id")}
    old.close()
    before = digests(folder)
    area = "POLYGON ((14.99 54.13, 15.02 54.13, 15.02 54.14, 14.99 54.14, 14.99 54.13))"
    with TileIndex.open(folder) as idx:
        assert idx.version == 3 and SCHEMA_VERSION == 4
        records = {t.id: t for t in idx.iter_tiles()}
        assert set(records) == set(stored) and len(records) == 31
        for tid, (x0, y0, x1, y1, native, wgs84) in stored.items():
            rec = records[tid]
            assert rec.footprint_wkt == native, "computed from the raster's geotransform: the stored polygon"
            assert shapely.from_wkt(rec.footprint_wgs84_wkt).equals_exact(shapely.from_wkt(wgs84), 1e-9)
            assert rec.bounds == pytest.approx((x0, y0, x1, y1))
        read_inside = candidate_ids(idx, within_wgs84_wkt=area).tolist()
        want = sorted(t for t, row in stored.items() if shapely.from_wkt(row[5]).intersects(shapely.from_wkt(area)))
        assert read_inside == want
        similar_before = [h.tile.id for h in jobs.similar(folder, [5], top_k=6)]
    assert digests(folder)[DB_NAME] == before[DB_NAME], "reading a format-3 index leaves its database as it was"

    with TileIndex.open(folder, write=True) as idx:
        assert idx.version == SCHEMA_VERSION
        columns = {r[1] for r in idx.conn.execute("PRAGMA table_info(tiles)")}
        assert "footprint" not in columns and "footprint_wgs84" not in columns
        assert idx.conn.execute("SELECT COUNT(*) FROM tile_bounds").fetchone()[0] == 31
        assert all(r[0] for r in idx.conn.execute("SELECT transform FROM rasters"))
        for t in idx.iter_tiles():
            assert t.footprint_wkt == stored[t.id][4]
        assert candidate_ids(idx, within_wgs84_wkt=area).tolist() == read_inside
        concept = get_concept(idx.conn, "water")
        marks = sorted((m.kind, m.tile_id) for m in concept_marks(idx.conn, concept))
        assert marks == [("accepted", 1), ("accepted", 2), ("accepted", 20), ("rejected", 3)]
    assert [h.tile.id for h in jobs.similar(folder, [5], top_k=6)] == similar_before


# -- reading in batches; footprints from numbers; the precision calibration ---------------------------------------
def rasters_to_read(tmp_path: Path) -> list[tuple[Path, TilingSpec]]:
    from osgeo import gdal

    out = [(write_raster(tmp_path / "rgb.tif", noise(3, 300, 260, seed=1)), TilingSpec(size=64, read_size=64)),
           (write_raster(tmp_path / "rgb2.tif", noise(3, 300, 260, seed=1)), TilingSpec(size=50, read_size=64)),
           (write_raster(tmp_path / "rot.tif", noise(3, 200, 200, seed=2),
                         transform=(500000.0, 8.0, 3.0, 6000000.0, 3.0, -8.0)), TilingSpec(size=64, read_size=64))]
    dsm = noise(1, 256, 256, "float32", seed=3)
    dsm[0, :100, :100] = -9999.0
    dsm[0, 150:, 150:] = np.nan
    out.append((write_raster(tmp_path / "dsm.tif", dsm, nodata=-9999.0), TilingSpec(size=64, read_size=64)))
    out.append((write_raster(tmp_path / "pal.tif", (noise(1, 128, 128, seed=4) % 4).astype(np.uint8),
                             color_table={0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}),
                TilingSpec(size=32, read_size=32)))
    alpha = noise(4, 128, 128, seed=5)
    alpha[3, :, :70] = 0
    alpha[3, :, 70:] = 255
    out.append((write_raster(tmp_path / "alpha.tif", alpha,
                             colors=[gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_AlphaBand]),
                TilingSpec(size=32, read_size=32)))
    if (SHARED / "naip").is_dir():
        out.append((SHARED / "naip" / "naip_m_4709963_se_14_20160816.tif", TilingSpec(size=112)))
    return out


def test_batches_hold_the_tiles_and_pixels_of_one_by_one_reading(tmp_path):
    for path, spec in rasters_to_read(tmp_path):
        with RasterTiler(path, spec) as tiler:
            singles = list(tiler.iter_tiles(skip={tiler.windows[1].as_tuple()}))
            batches = list(tiler.iter_batches(7, skip={tiler.windows[1].as_tuple()}))
        windows = [w for b in batches for w in b.windows]
        assert windows == [t.window for t, _ in singles], path.name
        assert all(len(b) == 7 for b in batches[:-1]), "full batches across dropped (mostly nodata) tiles"
        pixels = np.concatenate([b.pixels for b in batches])
        np.testing.assert_array_equal(pixels.transpose(0, 2, 3, 1), np.stack([p for _, p in singles]), path.name)
        import shapely

        bounds = np.concatenate([b.wgs84_bounds for b in batches])
        want = np.array([shapely.from_wkt(t.footprint_wgs84_wkt).bounds for t, _ in singles])
        np.testing.assert_allclose(bounds, want, atol=1e-9)


def test_tile_records_compute_the_tilers_footprints(tmp_path, tiny_model):
    import dataclasses

    raster = write_raster(tmp_path / "rot.tif", noise(3, 200, 200, seed=2),
                          transform=(500000.0, 8.0, 3.0, 6000000.0, 3.0, -8.0))
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=64))
    with TileIndex.open(tmp_path / "idx") as idx, RasterTiler(raster, TilingSpec(size=64)) as tiler:
        records = list(idx.iter_tiles())
        assert len(records) == len(tiler.windows) == 16
        for rec, (tile, _) in zip(records, tiler.iter_tiles()):
            assert (rec.footprint_wkt, rec.footprint_wgs84_wkt) == (tile.footprint_wkt, tile.footprint_wgs84_wkt)
            assert rec.bounds == tile.bounds
        moved = dataclasses.replace(records[0], id=-1)
        assert moved.footprint_wkt == records[0].footprint_wkt and moved != records[0]


def test_the_bf16_calibration_is_cached_per_model_and_machine(tmp_path, tiny_model, monkeypatch):
    from engine import device
    from engine.encoder import Encoder
    from engine.models import ModelRef, load_model

    monkeypatch.setenv("RSCLIP_PRECISION_CACHE_DIR", str(tmp_path / "precision"))
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    runs: list[str] = []
    real = Encoder.encode_images
    monkeypatch.setattr(Encoder, "encode_images", lambda self, tiles: runs.append(self.precision) or real(self, tiles))
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    loaded = load_model(ModelRef.from_dict(model), device="cpu")
    first = device.choose_precision(loaded, "cpu")
    assert runs == ["fp32", "bf16"] and "cached" not in first[1]
    again = device.choose_precision(loaded, "cpu")
    assert runs == ["fp32", "bf16"] and again[0] == first[0] and "cached" in again[1]
    (record,) = (tmp_path / "precision").glob("*.json")
    data = json.loads(record.read_text())
    data["worst"] = 1.0  # a hand-edited verdict does not check out: calibrated again
    record.write_text(json.dumps(data))
    device.choose_precision(loaded, "cpu")
    assert runs == ["fp32", "bf16"] * 2
    monkeypatch.setattr(device, "_cpu_name", lambda: "another CPU")
    device.choose_precision(loaded, "cpu")
    assert runs == ["fp32", "bf16"] * 3, "another machine calibrates for itself"
