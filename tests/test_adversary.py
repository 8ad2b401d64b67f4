"""The adversary suite: each row of ``CASES`` attacks the engine the way the real world does and states
the outcome it must get: the right answer, or one readable sentence; nothing committed lost; the
index still usable afterwards.

Families: faults during writes (SIGKILL at random moments, concurrent readers and writers), full
disks (a real tmpfs), read-only media (a real read-only bind mount, chattr +i), foreign and stale
caches (files copied between indexes), damaged and hostile values anywhere in the index folder,
invalid options and inputs, moved and copied rasters, and indexes made by the last release.

Cases that need root (mounts, chattr) skip with the reason when not root; cases on the shared
rasters skip when ``../shared/data`` is absent. ``make test`` prints how many ran and held.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from engine import jobs
from engine.cli import main
from engine.errors import EngineError
from engine.index import DB_NAME, FAISS_META, FAISS_NAME, SCHEMA_VERSION, TileIndex
from engine.tiling import TilingSpec
from faults import (IS_ROOT, ROOT, fill_disk, immutable, no_traceback, one_error_line, readonly_view, run_cli,
                    start_cli, tmpfs)
from rasters import noise, write_raster

pytestmark = pytest.mark.adversary

DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20090818.tif"
NAIP_2016 = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
V1_FIXTURE = ROOT / "tests" / "data" / "index-v1"
SPEC = TilingSpec(size=32)


# -- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    family: str
    run: Callable
    root: bool = False
    data: bool = False


CASES: list[Case] = []


def case(family: str, root: bool = False, data: bool = False):
    def register(fn: Callable) -> Callable:
        CASES.append(Case(fn.__name__, family, fn, root, data))
        return fn

    return register


# -- the world each case attacks --------------------------------------------------------------------
class World:
    """A fresh folder, the tiny model, made rasters and a copy of a small built index."""

    def __init__(self, tmp: Path, shared: dict, capsys) -> None:
        self.tmp = tmp
        self.model = shared["model"]
        self.model_args = shared["model_args"]
        self.shared = shared
        self.capsys = capsys
        self.rasters = {}
        for name, path in shared["rasters"].items():
            self.rasters[name] = tmp / "rasters" / path.name
        (tmp / "rasters").mkdir()
        for name, path in shared["rasters"].items():
            shutil.copy2(path, self.rasters[name])

    def index(self, name: str = "idx", rasters=("a", "b"), spec: TilingSpec = SPEC) -> Path:
        """A new index of some of this world's rasters."""
        folder = self.tmp / name
        jobs.index_rasters(folder, [str(self.rasters[r]) for r in rasters], model=self.model, tiling=spec)
        return folder

    def cli(self, *args) -> tuple[int, str, str]:
        """The command line in this process (no second start of torch): exit code, stdout, stderr."""
        import logging

        self.capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        finally:  # the CLI's notice handler writes to this call's stderr only
            notices = logging.getLogger("rsclip_search")
            for handler in [h for h in notices.handlers if getattr(h, "rsclip_cli", False)]:
                notices.removeHandler(handler)
            notices.propagate = True
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("adversary")
    rasters = {
        "a": write_raster(folder / "a.tif", noise(3, 128, 128, seed=11)),
        "b": write_raster(folder / "b.tif", noise(3, 96, 160, seed=12), transform=(502000.0, 10, 0, 6000000.0, 0, -10)),
        "c": write_raster(folder / "c.tif", noise(3, 128, 128, seed=13), transform=(504000.0, 10, 0, 6e6, 0, -10)),
        "a2": write_raster(folder / "a2.tif", noise(3, 128, 128, seed=14)),
    }
    model = jobs.resolve_model(folder / "unused", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    return {"rasters": rasters, "model": model,
            "model_args": ["--arch", str(tiny_model.config), "--checkpoint", str(tiny_model.checkpoint)]}


# -- helpers ------------------------------------------------------------------------------------------
def rows(folder: Path, sql: str, args=()) -> list:
    """Read the database directly, read-only, as a check independent of the engine."""
    for mode in ("ro", "ro&immutable=1"):  # immutable: a full disk where SQLite cannot make its -shm file
        conn = sqlite3.connect(f"{(folder / DB_NAME).as_uri()}?mode={mode}", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            wal = folder / f"{DB_NAME}-wal"
            if mode != "ro" or wal.exists() and wal.stat().st_size > 0:
                raise
        finally:
            conn.close()
    raise AssertionError("unreachable")


def write_sql(folder: Path, *statements, args=()) -> None:
    """Change the database behind the engine's back (a hostile or careless hand)."""
    conn = sqlite3.connect(folder / DB_NAME)
    try:
        for statement in statements:
            conn.execute(statement, args) if args else conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def live_vectors(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every searchable tile, straight from SQLite."""
    got = rows(folder, "SELECT t.id, t.embedding FROM tiles t JOIN rasters r ON r.id = t.raster_id "
                       "WHERE r.status != 'staging' ORDER BY t.id")
    return (np.array([r[0] for r in got], dtype=np.int64),
            np.stack([np.frombuffer(r[1], dtype=np.float32) for r in got]))


def brute_similar(folder: Path, tile_id: int, k: int) -> list[int]:
    """The right answer for 'similar to tile_id': exact inner products over the database's vectors."""
    ids, vecs = live_vectors(folder)
    query = vecs[list(ids).index(tile_id)]
    query = query / np.linalg.norm(query)
    order = [int(ids[i]) for i in np.argsort(-(vecs @ query), kind="stable") if ids[i] != tile_id]
    return order[:k]


def assert_similar_is_right(folder: Path, k: int = 5) -> None:
    ids, _ = live_vectors(folder)
    probe = int(ids[len(ids) // 2])
    got = [h.tile.id for h in jobs.similar(folder, [probe], top_k=k)]
    assert got == brute_similar(folder, probe, k), "search answered from vectors that are not this database's"


def tiles_of(folder: Path, raster: Path) -> list[tuple]:
    return rows(folder, "SELECT t.id, t.col_off, t.row_off, t.embedding FROM tiles t JOIN rasters r ON "
                        "r.id = t.raster_id WHERE r.path = ? AND r.status != 'staging' ORDER BY t.id", (str(raster),))


def no_duplicate_windows(folder: Path) -> None:
    dup = rows(folder, "SELECT r.path, t.col_off, t.row_off, COUNT(*) FROM tiles t JOIN rasters r ON r.id = "
                       "t.raster_id WHERE r.status != 'staging' GROUP BY r.path, t.col_off, t.row_off, t.width, "
                       "t.height HAVING COUNT(*) > 1")
    content = rows(folder, "SELECT COUNT(*), COUNT(DISTINCT content) FROM rasters WHERE status != 'staging' "
                           "AND content IS NOT NULL")
    assert not dup and content[0][0] == content[0][1], "a raster or a tile is in the index twice"


def file_digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def change_pixels(path: Path, seed: int = 0, size: int = 64) -> None:
    """Rewrite a block of pixels in place: the same raster, new content (as an analyst's edit would)."""
    from osgeo import gdal

    ds = gdal.Open(str(path), gdal.GA_Update)
    rng = np.random.default_rng(seed)
    for b in range(1, ds.RasterCount + 1):
        ds.GetRasterBand(b).WriteArray(rng.integers(1, 255, (size, size), dtype=np.uint8), 0, 0)
    ds.FlushCache()
    ds = None


def make_gpkg(path: Path) -> dict:
    """A GeoPackage an analyst already has: two layers with features; returns their feature counts."""
    from osgeo import ogr, osr

    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    for name, n in (("roads", 7), ("fields", 3)):
        lyr = ds.CreateLayer(name, srs, ogr.wkbPolygon)
        lyr.CreateField(ogr.FieldDefn("note", ogr.OFTString))
        for i in range(n):
            feat = ogr.Feature(lyr.GetLayerDefn())
            feat.SetField("note", f"{name} {i}")
            feat.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))"))
            lyr.CreateFeature(feat)
    ds = None
    return {"roads": 7, "fields": 3}


def gpkg_layers(path: Path) -> dict:
    from osgeo import gdal

    ds = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE)  # update: SQLite may roll back a hot journal
    return {ds.GetLayer(i).GetName(): ds.GetLayer(i).GetFeatureCount() for i in range(ds.GetLayerCount())}


# =====================================================================================================
# Faults during writes: SIGKILL at random moments, readers and writers at the same time (issue #13, 1)
# =====================================================================================================
@case("faults during writes", data=True)
def reindex_changed_raster_survives_kill9_and_concurrent_searches(w: World):
    naip = w.tmp / "naip.tif"
    shutil.copy2(NAIP, naip)
    idx = w.tmp / "idx"
    jobs.index_rasters(idx, [str(naip), str(w.rasters["b"])], model=w.model, tiling=TilingSpec(size=24))
    old_naip = tiles_of(idx, naip)
    old_ids = {t[0] for t in old_naip}
    old_b = tiles_of(idx, w.rasters["b"])
    change_pixels(naip, seed=5, size=200)
    from engine.tiling import RasterTiler

    with RasterTiler(naip, TilingSpec(size=24)) as tiler:
        new_count = sum(1 for win in tiler.windows if tiler.read(win) is not None)

    def old_or_all_new(current: list) -> bool:
        return current == old_naip or (len(current) == new_count and not {t[0] for t in current} & old_ids)

    rng = random.Random(1313)
    kills = 0
    staged = "SELECT COUNT(*) FROM tiles t JOIN rasters r ON r.id = t.raster_id WHERE r.status = 'staging'"
    for _attempt in range(4):
        proc = start_cli("index", naip, "--index", idx, "--batch-size", "64")
        while proc.poll() is None and rows(idx, staged)[0][0] == 0:  # started (torch loads for seconds)
            time.sleep(0.2)
        deadline = time.monotonic() + rng.uniform(0.0, 2.5)  # then a random moment of the re-index
        searches = 0
        while searches == 0 or time.monotonic() < deadline and proc.poll() is None:
            hits = jobs.search(idx, "farmland", top_k=15)  # never a KeyError while the re-index runs
            assert len(hits) == 15 and len({h.tile.id for h in hits}) == 15
            assert old_or_all_new(tiles_of(idx, naip)), "readers see the old tiles or all the new ones, never a mix"
            searches += 1
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert old_or_all_new(tiles_of(idx, naip)), "old tiles or all the new ones, never none"
        assert tiles_of(idx, w.rasters["b"]) == old_b, "the other raster's committed tiles are untouched"
        assert len(jobs.search(idx, "river", top_k=5)) == 5
        if proc.returncode == 0:
            break
        assert tiles_of(idx, naip) == old_naip, "a killed re-index leaves the old tiles searchable"
    assert kills >= 2, "kills landed while re-indexing"
    code, out, err = w.cli("index", naip, "--index", idx)
    assert code == 0, err
    new_naip = tiles_of(idx, naip)
    assert len(new_naip) == new_count and not {t[0] for t in new_naip} & old_ids, "the new tiles replaced the old"
    assert rows(idx, "SELECT COUNT(*) FROM rasters WHERE status = 'staging'")[0][0] == 0
    no_duplicate_windows(idx)
    assert_similar_is_right(idx)


@case("faults during writes", data=True)
def sigint_and_sigterm_during_a_reindex_keep_the_old_tiles(w: World):
    naip = w.tmp / "naip.tif"
    shutil.copy2(NAIP, naip)
    idx = w.tmp / "idx"
    jobs.index_rasters(idx, [str(naip)], model=w.model, tiling=TilingSpec(size=24))
    old = tiles_of(idx, naip)
    change_pixels(naip, seed=8, size=300)
    staged = "SELECT COUNT(*) FROM tiles t JOIN rasters r ON r.id = t.raster_id WHERE r.status = 'staging'"
    for sig, codes in ((signal.SIGINT, (130,)), (signal.SIGTERM, (-signal.SIGTERM,))):
        proc = start_cli("index", naip, "--index", idx, "--batch-size", "32")
        while proc.poll() is None and rows(idx, staged)[0][0] == 0:
            time.sleep(0.2)
        assert proc.poll() is None, "the re-index finished before the signal"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in codes, (sig, proc.returncode, err)
        assert "Traceback" not in err and "terminate called" not in err, err
        assert tiles_of(idx, naip) == old, "an interrupted re-index leaves the old tiles searchable"
        assert len(jobs.search(idx, "farmland", top_k=5)) == 5
    assert "interrupted; committed work was kept" in err or proc.returncode == -signal.SIGTERM


@case("faults during writes")
def killed_reindex_resumes_its_staged_tiles(w: World):
    idx = w.index()
    old = tiles_of(idx, w.rasters["a"])
    change_pixels(w.rasters["a"], seed=3)
    from engine.tiling import open_raster

    info = open_raster(w.rasters["a"], SPEC)
    with TileIndex.open(idx, write=True) as index:  # what a killed run leaves: a staging row with some tiles
        rid, done = index.begin_raster(info.path, info.fingerprint, info.crs_wkt, info.width, info.height,
                                       info.bands, 16)
        from types import SimpleNamespace

        fake = [SimpleNamespace(window=SimpleNamespace(col_off=0, row_off=0, width=32, height=32),
                                bounds=(0, 0, 1, 1), footprint_wkt=t, footprint_wgs84_wkt=t)
                for t in ["POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))"]]
        index.add_tiles(rid, fake, np.eye(1, index.dim, dtype=np.float32))
    assert tiles_of(idx, w.rasters["a"]) == old
    code, out, err = w.cli("info", "--index", idx)
    assert "re-indexing: 1 of 16 new tiles" in out
    report = jobs.index_rasters(idx, [str(w.rasters["a"])])
    assert report.added == [(str(w.rasters["a"]), 15)], "resumed the staged tiles, embedded only the rest"
    assert len(tiles_of(idx, w.rasters["a"])) == 16 and tiles_of(idx, w.rasters["a"]) != old
    no_duplicate_windows(idx)


@case("faults during writes")
def search_never_raises_on_ids_the_database_lacks(w: World):
    idx = w.index()
    with TileIndex.open(idx) as index:
        index.vector_store()  # a reader holding the vectors in memory
        ids, vecs = index.embeddings()
        query = vecs[:1]
        best = [i for _, i in index.nearest(query, 5)]
        write_sql(idx, f"DELETE FROM tiles WHERE id IN ({best[0]}, {best[1]})")  # behind its back, no new generation
        got = index.nearest(query, 5)
        assert best[0] not in [i for _, i in got] and len(got) == 5, "dropped, and the cache was rebuilt"
    hits = jobs.search(idx, "water", top_k=40)
    assert len(hits) == len(ids) - 2 and {best[0], best[1]}.isdisjoint(h.tile.id for h in hits)
    assert_similar_is_right(idx)


@case("faults during writes")
def kill9_while_adding_a_layer_to_a_geopackage_keeps_it(w: World):
    out = w.tmp / "project.gpkg"
    layers = make_gpkg(out)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from engine.export import write_tiles_gpkg\n"
        "from engine.results import HIT_FIELDS, ResultTable\n"
        "wkt = 'POLYGON ((500000.0 6000000.0, 500010.0 6000000.0, 500010.0 5999990.0, 500000.0 5999990.0, "
        "500000.0 6000000.0))'\n"
        "rows = [([i, 0.5, 'r.tif', i, 'q', 'm'], wkt) for i in range(400000)]\n"
        "print('writing', flush=True)\n"
        "write_tiles_gpkg(sys.argv[2], ResultTable('search', HIT_FIELDS, '', rows), 'big')\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(random.Random(4).uniform(1.0, 2.5))
    assert proc.poll() is None, "the write finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert gpkg_layers(out) == layers, "a killed layer write leaves the GeoPackage as it was"


@case("faults during writes")
def second_writer_is_refused_while_one_runs(w: World):
    idx = w.index()
    with TileIndex.open(idx, write=True) as index, index.writing():
        code, out, err = w.cli("index", w.rasters["c"], "--index", idx)
        one_error_line(code, err, "being written by another process")
        assert len(jobs.search(idx, "water", top_k=3)) == 3, "readers are not blocked"


# =====================================================================================================
# Caches that belong to another database (issue #13, 2)
# =====================================================================================================
@case("foreign caches")
def cache_left_by_a_deleted_database_is_not_used(w: World):
    idx = w.index(rasters=("a",))
    jobs.search(idx, "water", top_k=3)  # writes vectors.* for raster a
    cached = (idx / FAISS_NAME).read_bytes(), json.loads((idx / FAISS_META).read_text())
    for p in idx.glob("index.sqlite*"):
        p.unlink()
    jobs.index_rasters(idx, [str(w.rasters["a2"])], model=w.model, tiling=SPEC)  # same size: same count
    meta = json.loads((idx / FAISS_META).read_text())
    (idx / FAISS_NAME).write_bytes(cached[0])  # the old cache back, claiming the new state's numbers
    with TileIndex.open(idx) as index:
        claim = dict(cached[1], generation=index.generation, count=index.tile_count())
    (idx / FAISS_META).write_text(json.dumps(claim))
    assert meta["count"] == claim["count"]
    hits = jobs.search(idx, "water", top_k=5)
    assert {h.tile.raster for h in hits} == {str(w.rasters["a2"])}
    assert_similar_is_right(idx)


@case("foreign caches")
def cache_copied_between_indexes_at_same_generation_and_count_is_rejected(w: World):
    x = w.index("x", rasters=("a",))
    y = w.index("y", rasters=("a2",))
    with TileIndex.open(x) as ix, TileIndex.open(y) as iy:
        assert (ix.generation, ix.tile_count()) == (iy.generation, iy.tile_count())
    jobs.search(x, "water", top_k=3)
    for name in (FAISS_NAME, FAISS_META):
        shutil.copy2(x / name, y / name)
    assert_similar_is_right(y)
    assert json.loads((y / FAISS_META).read_text())["index_id"] != json.loads((x / FAISS_META).read_text())["index_id"]


@case("foreign caches")
def cache_of_a_diverged_copy_with_the_same_index_id_is_rejected(w: World):
    x = w.index("x", rasters=("a",))
    y = w.tmp / "y"
    shutil.copytree(x, y)  # a copy: same index id, then each grows its own way
    jobs.index_rasters(x, [str(w.rasters["a2"])])
    jobs.index_rasters(y, [str(w.rasters["c"])])
    with TileIndex.open(x) as ix, TileIndex.open(y) as iy:
        assert ix.index_id == iy.index_id and ix.generation == iy.generation and ix.tile_count() == iy.tile_count()
        assert list(ix.live_ids()) == list(iy.live_ids()), "same ids, different tiles: only the revision differs"
    jobs.search(x, "water", top_k=3)
    for name in (FAISS_NAME, FAISS_META):
        shutil.copy2(x / name, y / name)
    assert_similar_is_right(y)


@case("foreign caches")
def hostile_cache_descriptions_are_ignored_and_rebuilt(w: World):
    idx = w.index()
    jobs.search(idx, "water", top_k=3)
    good = json.loads((idx / FAISS_META).read_text())
    for bad in (dict(good, kind=["ivf"]), dict(good, kind="ivf16,nprobe=x"), dict(good, count=str(good["count"])),
                [good], "not json {", dict(good, pad="x" * 200_000), dict(good, ids_digest="0" * 64)):
        (idx / FAISS_META).write_text(bad if isinstance(bad, str) else json.dumps(bad))
        assert_similar_is_right(idx)
        assert len(jobs.search(idx, "field", top_k=4)) == 4
        assert json.loads((idx / FAISS_META).read_text()) == good, "rebuilt and rewritten from the database"
    (idx / FAISS_NAME).write_bytes(b"\x00" * 100)
    assert_similar_is_right(idx)


# =====================================================================================================
# GeoPackage outputs (issue #13, 3)
# =====================================================================================================
@case("geopackage outputs")
def out_adds_a_layer_to_an_existing_geopackage(w: World):
    idx = w.index()
    out = w.tmp / "project.gpkg"
    layers = make_gpkg(out)
    code, stdout, err = w.cli("search", "water", "--index", idx, "--top-k", "5", "--out", out)
    assert code == 0, err
    assert gpkg_layers(out) == {**layers, "search_results": 5}
    code, stdout, err = w.cli("label", "--index", idx, "--classes", "water,forest", "--out", out)
    assert code == 0, err
    assert gpkg_layers(out) == {**layers, "search_results": 5, "tile_labels": 31}


@case("geopackage outputs")
def out_refuses_an_existing_layer_and_overwrite_replaces_only_it(w: World):
    idx = w.index()
    out = w.tmp / "project.gpkg"
    layers = make_gpkg(out)
    assert w.cli("search", "water", "--index", idx, "--top-k", "5", "--out", out)[0] == 0
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    code, stdout, err = w.cli("search", "forest", "--index", idx, "--top-k", "3", "--out", out)
    one_error_line(code, err, "already has a layer named 'search_results'")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    code, stdout, err = w.cli("search", "forest", "--index", idx, "--top-k", "3", "--out", out, "--overwrite")
    assert code == 0, err
    assert gpkg_layers(out) == {**layers, "search_results": 3}
    code, stdout, err = w.cli("search", "forest", "--index", idx, "--top-k", "2", "--out", out, "--layer", "forest")
    assert code == 0 and gpkg_layers(out) == {**layers, "search_results": 3, "forest": 2}
    for reserved in ("gpkg_contents", "rtree_x", 'a"b'):
        one_error_line(*w.cli("search", "x", "--index", idx, "--out", out, "--layer", reserved)[::2],
                       "cannot be a GeoPackage layer name")


@case("geopackage outputs")
def out_never_overwrites_a_file_that_is_not_a_geopackage(w: World):
    idx = w.index()
    text = w.tmp / "notes.gpkg"
    text.write_text("my field notes\n")
    code, stdout, err = w.cli("search", "water", "--index", idx, "--out", text, "--overwrite")
    one_error_line(code, err, "is not a GeoPackage", "left as it is")
    assert text.read_text() == "my field notes\n"
    sqlite_file = w.tmp / "other.gpkg"
    shutil.copy2(idx / DB_NAME, sqlite_file)  # SQLite, but not a GeoPackage
    before = sqlite_file.read_bytes()
    one_error_line(*w.cli("label", "--index", idx, "--classes", "a,b", "--out", sqlite_file)[::2], "not a GeoPackage")
    assert sqlite_file.read_bytes() == before
    (w.tmp / "dir.gpkg").mkdir()
    one_error_line(*w.cli("search", "water", "--index", idx, "--out", w.tmp / "dir.gpkg")[::2], "not a GeoPackage")


# =====================================================================================================
# Full disks: a real, small tmpfs (issue #13, 4)
# =====================================================================================================
@case("full disk", root=True, data=True)
def disk_fills_while_adding_tiles(w: World):
    mnt = w.tmp / "small"
    # The finished index takes 0.7 MB (1.2 MB at its peak, WAL included); 640 kB hold about half of it, measured
    # (848–992 of 1,739 tiles kept). 1 MB was on the edge: with commits grouped, some runs finished.
    with tmpfs(mnt, "640k"):
        idx = mnt / "idx"
        code, out, err = run_cli("index", NAIP, "--index", idx, *w.model_args, "--tile-size", "20", "--batch-size", "8")
        line = one_error_line(code, err, "is full", str(idx), "more is needed", "committed so far was kept")
        assert code == 2 and "Aborted" not in err, "background threads stopped cleanly (no abort, exit 2 not 134)"
        kept = rows(idx, "SELECT COUNT(*) FROM tiles")[0][0]
        assert kept > 0, line
        code, out, err = w.cli("search", "farmland", "--index", idx, "--top-k", "5", "--json")
        assert code == 0, err
        assert len(json.loads(out)["results"]) == 5, "searches work on the full disk, without writing a cache"
        code, out, err = w.cli("info", "--index", idx)
        assert code == 0 and f"{kept} tiles" in out and "partial" in out
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # the user frees space
        code, out, err = w.cli("index", NAIP, "--index", idx)
        assert code == 0, err
        assert rows(idx, "SELECT COUNT(*) FROM tiles")[0][0] == 1739, "resumed and finished, nothing lost"
        no_duplicate_windows(idx)


@case("full disk", root=True)
def disk_fills_during_a_reindex_and_the_old_tiles_stay(w: World):
    mnt = w.tmp / "small"
    with tmpfs(mnt, "3m"):
        big = write_raster(mnt / "big.tif", noise(3, 512, 512, seed=31))
        idx = mnt / "idx"
        jobs.index_rasters(idx, [str(big), str(w.rasters["b"])], model=w.model, tiling=TilingSpec(size=16))
        old = tiles_of(idx, big)
        change_pixels(big, seed=2, size=128)
        fill_disk(mnt, leave=150_000)
        with pytest.raises(EngineError, match="is full") as refused:
            jobs.index_rasters(idx, [str(big)], batch_size=64)
        assert "kept" in str(refused.value)
        assert tiles_of(idx, big) == old, "the old tiles are still the searchable ones"
        assert len(jobs.search(idx, "water", top_k=5)) == 5
        code, out, err = w.cli("info", "--index", idx)
        staged = rows(idx, "SELECT COUNT(*) FROM rasters WHERE status = 'staging'")[0][0]
        assert code == 0 and f"{len(old)} tiles" in out and ("re-indexing" in out) == bool(staged), out
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # the user frees space
        report = jobs.index_rasters(idx, [str(big)])
        assert report.added and tiles_of(idx, big) != old
        no_duplicate_windows(idx)


@case("full disk", root=True)
def disk_full_when_writing_the_vector_cache(w: World):
    mnt = w.tmp / "small"
    with tmpfs(mnt, "4m"):
        idx = mnt / "idx"
        jobs.index_rasters(idx, [str(w.rasters["a"]), str(w.rasters["b"])], model=w.model, tiling=SPEC)
        for name in (FAISS_NAME, FAISS_META):
            (idx / name).unlink()
        fill_disk(mnt)
        for _ in range(2):
            code, out, err = w.cli("search", "water", "--index", idx, "--top-k", "4", "--json")
            assert code == 0 and len(json.loads(out)["results"]) == 4, err
            no_traceback(code, err)
        assert not (idx / FAISS_META).exists() and not list(idx.glob(".vectors*")), "no half-written cache left"
        assert_similar_is_right(idx)


@case("full disk", root=True)
def disk_full_when_writing_a_geopackage_or_creating_an_index(w: World):
    idx = w.index()
    mnt = w.tmp / "small"
    with tmpfs(mnt, "1m"):
        existing = mnt / "project.gpkg"
        layers = make_gpkg(existing)
        fill_disk(mnt)
        code, out, err = w.cli("search", "water", "--index", idx, "--top-k", "20", "--out", mnt / "new.gpkg")
        one_error_line(code, err)
        assert "is full" in err or "Cannot write" in err
        assert not list(mnt.glob("*new*")), "nothing half-written left behind"
        code, out, err = w.cli("label", "--index", idx, "--classes", "water,forest", "--out", existing)
        one_error_line(code, err)
        assert gpkg_layers(existing) == layers
        code, out, err = w.cli("index", w.rasters["c"], "--index", mnt / "fresh", *w.model_args)
        one_error_line(code, err)
        assert not (mnt / "fresh").exists()


# =====================================================================================================
# Read-only media and unwritable targets (issue #13, 5)
# =====================================================================================================
@case("read-only media", root=True)
def index_on_a_read_only_mount_searches_labels_and_exports(w: World):
    src = w.tmp / "src"
    idx = w.index("src/idx")
    for name in (FAISS_NAME, FAISS_META):
        (idx / name).unlink()
    before = file_digests(idx)
    with readonly_view(src, w.tmp / "ro") as ro:
        ridx = ro / "idx"
        code, out, err = w.cli("info", "--index", ridx)
        assert code == 0 and "(read-only)" in out and "31 (" in out, err
        code, out, err = w.cli("search", "water", "--index", ridx, "--top-k", "3", "--out", w.tmp / "hits.gpkg")
        assert code == 0, err
        code, out, err = w.cli("label", "--index", ridx, "--classes", "water,forest", "--out", w.tmp / "labels.gpkg")
        assert code == 0, err
        assert gpkg_layers(w.tmp / "hits.gpkg") == {"search_results": 3}
        assert gpkg_layers(w.tmp / "labels.gpkg") == {"tile_labels": 31}
        assert list((w.tmp / "user-cache").glob("*/vectors.faiss")), "the cache went to the user's cache folder"
        code, out, err = w.cli("index", w.rasters["c"], "--index", ridx)
        one_error_line(code, err, "read-only")
        one_error_line(*w.cli("index", "--index", ridx, "--remove", w.rasters["a"])[::2], "read-only")
        one_error_line(*w.cli("index", "--index", ridx, "--relink", w.rasters["a"], w.rasters["c"])[::2], "read-only")
        code, out, err = w.cli("search", "water", "--index", ridx, "--out", ro / "x.gpkg")
        one_error_line(code, err, "read-only")
        cached = next((w.tmp / "user-cache").glob("*/vectors.json"))
        stamp = cached.stat().st_mtime_ns
        assert_similar_is_right(ridx)
        assert len(jobs.search(ridx, "field", top_k=2)) == 2
        assert cached.stat().st_mtime_ns == stamp, "the user-folder cache is reused, not rebuilt"
    assert file_digests(idx) == before, "nothing in the index folder was written"


@case("read-only media", root=True, data=True)
def killed_index_with_wal_files_reads_on_a_read_only_mount(w: World):
    src = w.tmp / "src"
    idx = src / "idx"
    proc = start_cli("index", NAIP, "--index", idx, *w.model_args, "--tile-size", "20", "--batch-size", "16")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (idx / "index.sqlite-wal").exists() and (idx / "index.sqlite-wal").stat().st_size > 200_000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (idx / "index.sqlite-wal").stat().st_size > 0, "the kill left committed batches in the WAL"
    with readonly_view(src, w.tmp / "ro") as ro:
        code, out, err = w.cli("info", "--index", ro / "idx")
        assert code == 0, err
        seen = int(out.split("Tiles:")[1].split()[0])
        code, out, err = w.cli("search", "farmland", "--index", ro / "idx", "--top-k", "5", "--json")
        assert code == 0 and len(json.loads(out)["results"]) == 5, err
    assert seen == rows(idx, "SELECT COUNT(*) FROM tiles")[0][0] > 0, "the read-only view sees every committed batch"


@case("read-only media", root=True)
def immutable_database_file_is_read_only_not_damaged(w: World):
    idx = w.index()
    with immutable(idx / DB_NAME):
        code, out, err = w.cli("info", "--index", idx)
        assert code == 0 and "damaged" not in err, err
        assert len(jobs.label(idx, ["water", "forest"])) == 31
        assert_similar_is_right(idx)
        code, out, err = w.cli("index", w.rasters["c"], "--index", idx)
        one_error_line(code, err, "read-only")


@case("read-only media", root=True)
def unwritable_targets_are_refused_with_one_sentence(w: World):
    ro_src = w.tmp / "rosrc"
    ro_src.mkdir()
    with readonly_view(ro_src, w.tmp / "ro") as ro:
        for target in (Path("/proc/rsclip-x"), ro / "idx", ro / "deep" / "er"):
            code, out, err = w.cli("index", w.rasters["a"], "--index", target, *w.model_args)
            one_error_line(code, err, str(target))
            assert not target.exists()
    idx = w.index()
    one_error_line(*w.cli("search", "water", "--index", idx, "--out", "/proc/rsclip-x.gpkg")[::2])


# =====================================================================================================
# Damaged and hostile values anywhere in the index folder (issue #13, 6)
# =====================================================================================================
def each_command_answers_or_says_damaged(w: World, idx: Path, expect: str = "damaged") -> list[int]:
    """info, search, similar, label, index and remove: each a right answer or one sentence; never a traceback."""
    codes = []
    out_gpkg = w.tmp / f"labels-{idx.name}.gpkg"
    for args in (("info",), ("search", "water", "--top-k", "3"), ("label", "--classes", "water,forest"),
                 ("label", "--classes", "water,forest", "--out", out_gpkg, "--overwrite"),
                 ("index", w.rasters["c"]), ("index", "--remove", w.rasters["b"])):
        try:
            code, out, err = w.cli(*args, "--index", idx)
        except Exception as exc:  # noqa: BLE001 (any exception is the failure this suite exists to catch)
            raise AssertionError(f"{args[0]} raised {type(exc).__name__}: {exc}") from None
        if code != 0:
            one_error_line(code, err, expect)
        codes.append(code)
    return codes


@case("damaged values")
def garbled_pages_in_the_middle_of_the_database(w: World):
    idx = w.index("idx", rasters=("a", "b", "c"))
    db = idx / DB_NAME
    data = bytearray(db.read_bytes())
    page = 4096
    pages = len(data) // page
    rng = random.Random(66)
    for p in range(pages // 3, 2 * pages // 3):
        data[p * page + 100:(p + 1) * page - 100] = bytes(rng.getrandbits(8) for _ in range(page - 200))
    db.write_bytes(bytes(data))
    codes = each_command_answers_or_says_damaged(w, idx)
    assert 2 in codes, "the damage was noticed"


@case("damaged values")
def hostile_meta_values(w: World):
    base = w.index()
    table = [("model", "not json"), ("model", "[1, 2]"), ("model", '{"kind": 5}'), ("tiling", '{"size": -3}'),
             ("tiling", '{"read_size": 100000000}'), ("tiling", "7"), ("dim", "abc"), ("dim", "1000000000"),
             ("dim", "-4"), ("generation", "x"), ("created", "nan"), ("index_id", ""), ("schema", "x"),
             ("schema", "0")]
    for n, (key, value) in enumerate(table):
        idx = w.tmp / f"m{n}"
        shutil.copytree(base, idx)
        write_sql(idx, "UPDATE meta SET value = ? WHERE key = ?", args=(value, key))
        codes = each_command_answers_or_says_damaged(w, idx)
        assert codes[0] == 2, (key, value)
    idx = w.tmp / "blob"
    shutil.copytree(base, idx)
    write_sql(idx, "UPDATE meta SET value = x'00ff' WHERE key = 'model'")
    assert each_command_answers_or_says_damaged(w, idx)[0] == 2


@case("damaged values")
def index_made_by_a_newer_version_is_refused_by_name(w: World):
    idx = w.index()
    write_sql(idx, "UPDATE meta SET value = ? WHERE key = 'schema'", args=(str(SCHEMA_VERSION + 1),))
    codes = each_command_answers_or_says_damaged(w, idx, expect="made by a newer version of RS-CLIP Search")
    assert set(codes) == {2}


@case("damaged values")
def hostile_raster_rows(w: World):
    base = w.index()
    for n, sql in enumerate(["UPDATE rasters SET bands = 'xx'", "UPDATE rasters SET bands = '[\"a\"]'",
                             "UPDATE rasters SET width = 'wide'", "UPDATE rasters SET fingerprint = x'00'",
                             "UPDATE rasters SET path = x'2f00' WHERE id = 1"]):
        idx = w.tmp / f"r{n}"
        shutil.copytree(base, idx)
        write_sql(idx, sql)
        codes = each_command_answers_or_says_damaged(w, idx)
        assert codes[0] == 2, sql


@case("damaged values")
def hostile_tile_rows(w: World):
    base = w.index()
    jobs.search(base, "water", top_k=1)
    cases = ["UPDATE tiles SET embedding = x'00010203' WHERE id = 3",
             "UPDATE tiles SET embedding = (SELECT embedding FROM tiles WHERE id = 1) || x'00' WHERE id = 2",
             "UPDATE tiles SET col_off = 'left' WHERE id = 4",
             # format 4 computes footprints from each raster's geotransform and CRS: damage those
             "UPDATE rasters SET transform = '[500000.0, 10.0' WHERE id > 0",
             "UPDATE rasters SET crs_wkt = 'nonsense' WHERE id > 0",
             "UPDATE tiles SET raster_id = 999 WHERE id = 5"]
    nan = np.full(32, np.nan, dtype=np.float32).tobytes()
    for n, sql in enumerate(cases + ["NAN"]):
        idx = w.tmp / f"t{n}"
        shutil.copytree(base, idx)
        if sql == "NAN":
            write_sql(idx, "UPDATE tiles SET embedding = ? WHERE id = 6", args=(nan,))
        else:
            write_sql(idx, sql)
        for name in (FAISS_NAME, FAISS_META):
            (idx / name).unlink()
        codes = each_command_answers_or_says_damaged(w, idx)
        if "raster_id = 999" in sql:
            assert codes[:4] == [0, 0, 0, 0], "an orphan tile is simply not searchable"
            assert_similar_is_right(idx)
        elif "crs_wkt" in sql:
            area = "POLYGON ((-180 -90, 180 -90, 180 90, -180 90, -180 -90))"
            with pytest.raises(EngineError, match="damaged footprint"):
                jobs.search(idx, "water", top_k=3, within_wgs84_wkt=area)
        elif "transform" in sql:
            assert codes[3] == 2, "exporting a damaged footprint says so"
        else:
            assert 2 in codes[1:4], sql


@case("damaged values")
def hostile_tile_ids_at_the_edge_of_sqlite_integers(w: World):
    idx = w.index()
    write_sql(idx, "UPDATE tiles SET id = 9223372036854775807 WHERE id = (SELECT MAX(id) FROM tiles)")
    assert_similar_is_right(idx)
    code, out, err = w.cli("index", w.rasters["c"], "--index", idx)
    one_error_line(code, err, "damaged")
    assert_similar_is_right(idx)


@case("damaged values")
def garbage_wal_and_shm_files(w: World):
    idx = w.index()
    rng = np.random.default_rng(9)
    (idx / "index.sqlite-wal").write_bytes(rng.integers(0, 256, 70_000, dtype=np.uint8).tobytes())
    (idx / "index.sqlite-shm").write_bytes(rng.integers(0, 256, 32_768, dtype=np.uint8).tobytes())
    codes = each_command_answers_or_says_damaged(w, idx)
    assert codes[:3] == [0, 0, 0], "SQLite checks WAL frames: garbage there is ignored, the data is whole"
    assert_similar_is_right(idx)


@case("damaged values")
def truncated_or_replaced_database(w: World):
    base = w.index()
    for n, content in enumerate([lambda b: b[:1000], lambda b: b"", lambda b: b"SQLite format 3\x00" + b"\xff" * 5000]):
        idx = w.tmp / f"d{n}"
        shutil.copytree(base, idx)
        (idx / DB_NAME).write_bytes(content((base / DB_NAME).read_bytes()))
        codes = each_command_answers_or_says_damaged(w, idx)
        assert codes[0] == 2


# =====================================================================================================
# Invalid inputs and options (issue #13, 7)
# =====================================================================================================
@case("invalid inputs")
def raster_in_a_local_engineering_crs_is_refused_before_anything_is_written(w: World):
    local = write_raster(w.tmp / "local.tif", noise(3, 64, 64),
                         crs_wkt='LOCAL_CS["Engineering",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    code, out, err = w.cli("index", local, "--index", w.tmp / "new", *w.model_args, "--tile-size", "32")
    one_error_line(code, err, "local.tif", "cannot be converted to latitude/longitude")
    assert not (w.tmp / "new").exists()
    code, out, err = w.cli("index", local, w.rasters["a"], "--index", w.tmp / "mixed", *w.model_args,
                           "--tile-size", "32")
    assert code == 1 and "local.tif" in err
    assert [r.path for r in jobs.info(w.tmp / "mixed").rasters] == [str(w.rasters["a"])], "no partial 0-tile raster"
    far = write_raster(w.tmp / "far.tif", noise(3, 64, 64), transform=(5e12, 10.0, 0, 6e12, 0, -10.0))
    one_error_line(*w.cli("index", far, "--index", w.tmp / "far", *w.model_args)[::2], "far.tif")


@case("invalid inputs")
def zero_negative_and_nan_tile_options_are_refused(w: World):
    for args, expected in [(("--tile-size", "0"), "positive"), (("--tile-m", "0"), "positive"),
                           (("--tile-size", "-5"), "positive"), (("--tile-m", "nan"), "positive"),
                           (("--tile-size", "0.5"), "at least 1 pixel"), (("--overlap", "0.95"), "overlap"),
                           (("--batch-size", "0"), "batch size"), (("--bands", "0"), "Bands"),
                           (("--verify", "full", "--batch-size", "-1"), "batch size")]:
        code, out, err = w.cli("index", w.rasters["a"], "--index", w.tmp / "opt", *w.model_args, *args)
        one_error_line(code, err, expected)
    assert not (w.tmp / "opt").exists()
    idx = w.index()
    for args in (("--top-k", "0"), ("--top-k", "-3")):
        one_error_line(*w.cli("search", "water", "--index", idx, *args)[::2], "at least 1")


# =====================================================================================================
# Moved, renamed, copied and edited rasters (issue #13, 8)
# =====================================================================================================
@case("moved rasters")
def moved_raster_is_reported_missing_then_relinked_never_duplicated(w: World):
    idx = w.index()
    before = tiles_of(idx, w.rasters["a"])
    moved = w.tmp / "elsewhere" / "renamed a.tif"
    moved.parent.mkdir()
    shutil.move(w.rasters["a"], moved)
    code, out, err = w.cli("info", "--index", idx)
    assert code == 0 and "MISSING" in out and "Missing:  1 raster(s)" in out
    code, out, err = w.cli("search", "water", "--index", idx, "--top-k", "31")
    assert code == 0 and "missing at their indexed path" in err and str(w.rasters["a"]) in err
    code, out, err = w.cli("index", moved, "--index", idx)
    assert code == 0 and "relinked" in err and "1 moved raster(s) relinked" in out, (out, err)
    after = tiles_of(idx, moved)
    assert after == before, "the same tiles (ids and embeddings), now at the new path: nothing re-embedded"
    assert rows(idx, "SELECT COUNT(*) FROM tiles")[0][0] == 31
    no_duplicate_windows(idx)
    hits = jobs.search(idx, "water", top_k=31)
    assert str(w.rasters["a"]) not in {h.tile.raster for h in hits} and str(moved) in {h.tile.raster for h in hits}
    code, out, err = w.cli("index", moved, "--index", idx)
    assert code == 0 and "1 unchanged" in out


@case("moved rasters")
def copied_raster_is_not_indexed_twice_and_relink_points_at_it(w: World):
    idx = w.index()
    copy = w.tmp / "copy of a.tif"
    shutil.copy(w.rasters["a"], copy)  # new time, same bytes; the original is still there
    code, out, err = w.cli("index", copy, "--index", idx)
    assert code == 1 and "same content as" in err and "--relink" in err
    assert rows(idx, "SELECT COUNT(*) FROM tiles")[0][0] == 31
    code, out, err = w.cli("index", "--relink", w.rasters["a"], copy, "--index", idx)
    assert code == 0 and "Relinked" in out, err
    assert [r.path for r in jobs.info(idx).rasters] == [str(copy), str(w.rasters["b"])]
    code, out, err = w.cli("index", "--relink", w.rasters["b"], w.rasters["c"], "--index", idx)
    one_error_line(code, err, "not the raster indexed as")
    code, out, err = w.cli("index", "--relink", w.tmp / "nope.tif", copy, "--index", idx)
    one_error_line(code, err, "not in the index")
    code, out, err = w.cli("index", "--index", idx, "--remove", w.rasters["b"])
    twins = [w.tmp / "twin 1.tif", w.tmp / "twin 2.tif"]
    for twin in twins:
        shutil.copy(w.rasters["b"], twin)
    code, out, err = w.cli("index", *twins, "--index", idx)
    assert code == 1 and "twin 2.tif has the same content as" in err and "15 new tiles from 1 raster(s)" in out
    shutil.copy(w.rasters["a"], w.tmp / "other copy.tif")
    code, out, err = w.cli("index", "--relink", copy, w.tmp / "other copy.tif", "--index", idx, "--verify", "full")
    assert code == 0, err
    no_duplicate_windows(idx)


@case("moved rasters")
def relink_of_a_raster_with_other_content_is_refused(w: World):
    idx = w.index()
    os.remove(w.rasters["a"])
    code, out, err = w.cli("index", "--relink", w.rasters["a"], w.shared["rasters"]["a2"], "--index", idx)
    one_error_line(code, err, "does not have the same content")
    report = jobs.index_rasters(idx, [str(w.shared["rasters"]["a2"])])
    assert report.relinked == [] and len(report.added) == 1, "other content at a new path is a new raster"


@case("moved rasters")
def edit_that_keeps_size_and_time_needs_verify_full(w: World):
    big = write_raster(w.tmp / "big.tif", noise(3, 1100, 1100, seed=21))  # 3.6 MB, uncompressed
    idx = w.tmp / "idx"
    jobs.index_rasters(idx, [str(big)], model=w.model, tiling=TilingSpec(size=275))
    before = tiles_of(idx, big)
    st = big.stat()
    data = bytearray(big.read_bytes())
    from engine.identity import CONTENT_SAMPLES, SAMPLE_BYTES

    step = (len(data) - SAMPLE_BYTES) / (CONTENT_SAMPLES - 1)
    offset = int(7 * step) + SAMPLE_BYTES + 1000  # between two samples, inside the pixels
    assert offset + 5000 < int(8 * step) and 1 << 20 < offset < len(data) - (1 << 20) - 5000
    data[offset:offset + 5000] = bytes((b + 97) % 256 for b in data[offset:offset + 5000])
    big.write_bytes(bytes(data))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, out, err = w.cli("index", big, "--index", idx)
    assert code == 0 and "1 unchanged" in out, "documented: the sampled fingerprint cannot see this edit"
    assert tiles_of(idx, big) == before
    code, out, err = w.cli("index", big, "--index", idx, "--verify", "full")
    assert code == 0 and f"{len(before)} new tiles" in out, out
    assert tiles_of(idx, big) != before
    no_duplicate_windows(idx)


@case("moved rasters")
def verify_full_does_not_relink_a_file_that_only_looks_the_same(w: World):
    big = write_raster(w.tmp / "big.tif", noise(3, 1100, 1100, seed=22))
    idx = w.tmp / "idx"
    jobs.index_rasters(idx, [str(big)], model=w.model, tiling=TilingSpec(size=275))
    from engine.identity import CONTENT_SAMPLES, SAMPLE_BYTES

    data = bytearray(big.read_bytes())
    step = (len(data) - SAMPLE_BYTES) / (CONTENT_SAMPLES - 1)
    offset = int(7 * step) + SAMPLE_BYTES + 1000
    data[offset:offset + 4000] = bytes((b + 13) % 256 for b in data[offset:offset + 4000])
    twin = w.tmp / "moved" / "big.tif"
    twin.parent.mkdir()
    twin.write_bytes(bytes(data))  # same size and samples, other bytes; the original goes away
    big.unlink()
    report = jobs.index_rasters(idx, [str(twin)], verify="full")
    assert report.relinked == [] and report.added and report.added[0][0] == str(twin)
    assert [r.missing for r in jobs.info(idx).rasters] == [True, False], "the old one is still listed, missing"


@case("moved rasters")
def touched_raster_is_recognised_as_unchanged_without_re_embedding(w: World):
    idx = w.index()
    before = tiles_of(idx, w.rasters["a"])
    os.utime(w.rasters["a"], (time.time() + 100, time.time() + 100))
    code, out, err = w.cli("index", w.rasters["a"], "--index", idx)
    assert code == 0 and "1 unchanged" in out and "0 new tiles" in out
    assert tiles_of(idx, w.rasters["a"]) == before, "same bytes (full SHA-256): nothing re-embedded"
    from engine.tiling import raster_fingerprint

    assert jobs.info(idx).rasters[0].fingerprint == raster_fingerprint(w.rasters["a"]), "the new time is recorded"


@case("moved rasters")
def missing_raster_can_be_removed_by_its_stored_path(w: World):
    idx = w.index()
    stored = str(w.rasters["a"])
    os.remove(stored)
    code, out, err = w.cli("index", "--index", idx, "--remove", stored)
    assert code == 0 and "16 tiles" in out, err
    assert [r.path for r in jobs.info(idx).rasters] == [str(w.rasters["b"])]


# =====================================================================================================
# Indexes made by the last release (format 1): migration and read-only reading
# =====================================================================================================
def v1_copy(w: World) -> Path:
    folder = w.tmp / "v1"
    shutil.copytree(V1_FIXTURE, folder)
    return folder


def v1_vectors(folder: Path) -> dict:
    return {r[0]: r[1] for r in rows(folder, "SELECT id, embedding FROM tiles")}


@contextmanager
def v1_model_put_back(w: World, v1: Path) -> Iterator[None]:
    """The release index's checkpoint at the path it records, as its error tells a user to do ("put it back").

    The fixture was built with the tests' tiny model under /tmp/rsclip-v1-fixture (tests/data/index-v1/README.md);
    that folder exists only where the fixture was made, and the test once passed only there. The session's tiny
    model is the same file (the engine checks its recorded SHA-256); what is copied is removed afterwards.
    """
    recorded = json.loads(rows(v1, "SELECT value FROM meta WHERE key = 'model'")[0][0])
    made = []
    for key, source in (("arch", w.model["arch"]), ("checkpoint", w.model["checkpoint"])):
        target = Path(recorded[key])
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            made.append(target)
    try:
        yield
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        for folder in {p.parent for p in made}:
            for gone in (folder, folder.parent):
                try:
                    gone.rmdir()  # only if empty: never someone else's files
                except OSError:
                    break


@case("last release")
def release_index_reads_unchanged_then_migrates_on_first_write(w: World):
    v1 = v1_copy(w)
    before = file_digests(v1)
    assert rows(v1, "SELECT value FROM meta WHERE key = 'schema'") == [("1",)]
    stored = [r[0] for r in rows(v1, "SELECT path FROM rasters ORDER BY id")]
    code, out, err = w.cli("info", "--index", v1)
    assert code == 0 and "Tiles:    31" in out, out
    assert out.count("MISSING") == sum(not Path(p).exists() for p in stored), "built elsewhere: its paths are gone"
    assert_similar_is_right(v1)
    assert file_digests(v1)[DB_NAME] == before[DB_NAME], "reading an older index does not change it"
    vectors = v1_vectors(v1)
    for name in ("a", "b"):
        old = rows(v1, "SELECT path FROM rasters WHERE path LIKE ?", (f"%/{name}.tif",))[0][0]
        code, out, err = w.cli("index", "--relink", old, V1_FIXTURE / "rasters" / f"{name}.tif", "--index", v1)
        assert code == 0, err
    assert rows(v1, "SELECT value FROM meta WHERE key = 'schema'") == [(str(SCHEMA_VERSION),)]
    assert len(rows(v1, "SELECT value FROM meta WHERE key = 'index_id'")[0][0]) == 32
    assert v1_vectors(v1) == vectors, "every tile and embedding kept by the migration"
    with v1_model_put_back(w, v1):
        code, out, err = w.cli("index", V1_FIXTURE / "rasters" / "a.tif", V1_FIXTURE / "rasters" / "b.tif", "--index",
                               v1)
        assert code == 0 and "2 unchanged" in out, err
        assert_similar_is_right(v1)
        report = jobs.index_rasters(v1, [str(w.rasters["c"])])
    assert report.added == [(str(w.rasters["c"]), 16)]
    assert min(t[0] for t in tiles_of(v1, w.rasters["c"])) > max(vectors), "new ids never reuse old ones"


@case("last release")
def failing_migration_leaves_the_release_index_as_it_was(w: World):
    from engine import index as index_module

    v1 = v1_copy(w)
    before = (v1 / DB_NAME).read_bytes()
    real = index_module.MIGRATIONS[1]

    def broken(conn):
        real(conn)
        raise sqlite3.OperationalError("database or disk is full")  # what a full disk gives mid-step

    index_module.MIGRATIONS[1] = broken
    try:
        with pytest.raises(EngineError):
            TileIndex.open(v1, write=True)
    finally:
        index_module.MIGRATIONS[1] = real
    with TileIndex.open(v1) as idx:
        assert idx.version == 1 and idx.tile_count() == 31
    assert rows(v1, "SELECT COUNT(*) FROM tiles")[0][0] == 31
    assert (v1 / DB_NAME).read_bytes() == before or rows(v1, "SELECT value FROM meta WHERE key='schema'") == [("1",)]


@case("last release", root=True)
def release_index_on_read_only_media_is_read_through_views(w: World):
    v1 = v1_copy(w)
    with readonly_view(v1, w.tmp / "ro") as ro:
        code, out, err = w.cli("info", "--index", ro)
        assert code == 0 and "Tiles:    31" in out and "(read-only)" in out, err
        assert_similar_is_right(ro)
        code, out, err = w.cli("index", "--relink", "/x/a.tif", "/y/a.tif", "--index", ro)
        one_error_line(code, err, "read-only")


# -- the one test that runs every row (defined last: the table is complete here) ----------------
@pytest.mark.parametrize("case", CASES, ids=[f"{c.family.split()[0]}-{c.name}" for c in CASES])
def test_adversary(case: Case, shared, tmp_path, capsys, monkeypatch):
    if case.root and not IS_ROOT:
        pytest.skip("needs root for a real tmpfs / read-only bind mount / chattr")
    if case.data and not NAIP.exists():
        pytest.skip(f"shared test imagery not found at {DATA}")
    monkeypatch.setenv("RSCLIP_INDEX_CACHE_DIR", str(tmp_path / "user-cache"))
    case.run(World(tmp_path, shared, capsys))
