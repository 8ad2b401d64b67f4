"""An index in the archive layout, used as users use any index: search, similar, add, remove, info, the CLI."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import jobs
from engine.archive import layout
from engine.errors import EngineError
from engine.index import DB_NAME, FAISS_NAME, TileIndex
from engine.search import search_similar, top_k
from faults import needs_root, readonly_view
from planted_archive import ModalityWorld, add_planted_raster, exact_top, planted_model_index, recall

DIM = 64
PER_RASTER = 12_000
#: Vectors per shard of the planted archives (the product's 262,144 would make one shard of them all).
SHARD = 4096


@pytest.fixture(scope="module")
def world():
    return ModalityWorld(dim=DIM, clusters=200, seed=5)


def planted_index(folder: Path, world: ModalityWorld, rasters: int = 2, model: dict | None = None) -> TileIndex:
    idx = TileIndex.create(folder, model or {"kind": "registry", "name": "planted"}, {"size": 10}, DIM)
    with idx.writing():
        for r in range(rasters):
            add_planted_raster(idx, f"/planted/r{r}.tif", world.images(r * PER_RASTER, PER_RASTER))
        idx.vector_store()
    return idx


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def archived(world, tmp_path_factory):
    """(the same planted index in the SQLite layout, and moved to the archive layout by the `archive` job).

    The index holds a planted text sample, as indexing stores the model's own (``querysample``).
    """
    base = tmp_path_factory.mktemp("archived")
    plain = planted_index(base / "plain", world)
    plain.close()
    shutil.copytree(base / "plain", base / "archived")
    with TileIndex.open(base / "archived", write=True) as idx:
        texts = world.texts(100, seed=1)
        idx.store_query_sample("text", [f"planted text {i}" for i in range(len(texts))], texts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layout, "SHARD_SIZE", SHARD)
        report = jobs.archive_index(base / "archived")
    assert report.tiles == 2 * PER_RASTER and "recall@10 image" in report.description and "text" in report.description
    return base / "plain", base / "archived"


def test_searches_find_what_they_found_before_the_move(world, archived):
    plain, moved = archived
    queries = world.texts(40, seed=3)
    with TileIndex.open(plain) as before, TileIndex.open(moved) as after:
        assert recall([[h.tile.id for h in top_k(after, q[None], 10)] for q in queries],
                      np.array([[h.tile.id for h in top_k(before, q[None], 10)] for q in queries])) >= 0.9
        example = top_k(before, queries[:1], 1)[0].tile.id
        near_before = [h.tile.id for h in search_similar(before, [example], 5)]
        near_after = [h.tile.id for h in search_similar(after, [example], 5)]
        assert len(set(near_before) & set(near_after)) >= 4
        ids, vecs = after.embeddings([example, 5, 10**9])
        assert ids.tolist() == [5, example] if example > 5 else [example, 5]
        ref_ids, ref = before.embeddings(ids.tolist())
        np.testing.assert_allclose(vecs, ref, atol=1e-3)  # float16 in the archive


def test_the_folder_keeps_tiles_in_sqlite_and_vectors_in_the_archive(archived):
    plain, moved = archived
    con = sqlite3.connect(moved / DB_NAME)
    try:
        lengths = con.execute("SELECT MIN(length(embedding)), MAX(length(embedding)), COUNT(*) FROM tiles").fetchone()
        bounds = con.execute("SELECT COUNT(*) FROM tile_bounds").fetchone()[0]
    finally:
        con.close()
    assert lengths == (0, 0, 2 * PER_RASTER), "every float32 cell emptied"
    assert bounds == 2 * PER_RASTER, "the tiles and their bounds stay in the database"
    with TileIndex.open(moved) as idx:
        tile = idx.tiles([7])[7]
        assert tile.footprint_wkt.startswith("POLYGON ((500060") and tile.footprint_wgs84_wkt.startswith("POLYGON")
    assert not (moved / FAISS_NAME).exists(), "the SQLite layout's FAISS cache is gone"
    info = jobs.info(moved)
    assert info.vector_kind.startswith("archive ivf") and "recall@10 image" in info.archive
    assert "24,000 float16 vectors in 6 shards" in info.archive
    assert info.tile_count == 2 * PER_RASTER
    vectors = (moved / layout.FOLDER)
    assert folder_bytes(vectors) < 0.75 * 4 * DIM * 2 * PER_RASTER  # float16 + PQ codes < float32


def test_verify_reads_everything_back_and_finds_a_damaged_shard(archived, tmp_path):
    _, moved = archived
    report = jobs.archive_index(moved, verify=True)
    assert report.verified_bytes > 0 and "checks out" in report.summary()
    copy = Path(shutil.copytree(moved, tmp_path / "copy"))
    shard = sorted((copy / layout.FOLDER).glob("shard-*.f16"))[0]
    with open(shard, "r+b") as fh:
        fh.seek(shard.stat().st_size - 100)
        fh.write(b"\x7f" * 8)
    with pytest.raises(EngineError, match=f"is damaged.*{shard.name}"):
        jobs.archive_index(copy, verify=True)


def test_adding_and_removing_keep_the_archive_in_step(world, archived, tmp_path):
    _, moved = archived
    folder = Path(shutil.copytree(moved, tmp_path / "idx"))
    new = world.images(5 * PER_RASTER, 10_000)
    twin_query = world.texts(1, seed=8)
    new[1234] = twin_query[0]  # a tile of the new raster that is the text query itself
    with TileIndex.open(folder, write=True) as idx, idx.writing():
        pointer = layout.read_pointer(idx)
        archive = layout.open_archive(idx, pointer)
        shards_before = len(archive.manifest["shards"])
        seen = []

        def after_batch(i):
            layout.after_batch(i)
            seen.append(layout.read_pointer(i))

        add_planted_raster(idx, "/planted/new.tif", new, batch=1000, after_batch=after_batch)
        assert seen[-1].max_id > pointer.max_id, "whole shards were sealed while indexing"
        jobs._refresh_vectors(idx)
        end = layout.read_pointer(idx)
        assert end.max_id == idx.conn.execute("SELECT MAX(id) FROM tiles").fetchone()[0], "the tail sealed at the end"
        hit = top_k(idx, twin_query, 3)[0]
        assert hit.tile.raster == "/planted/new.tif" and hit.score == pytest.approx(1.0, abs=2e-3)
        assert len(layout.open_archive(idx, end).manifest["shards"]) > shards_before
    n = jobs.remove_raster(folder, "/planted/new.tif")
    assert n == 10_000
    with TileIndex.open(folder) as idx:
        assert all(h.tile.raster != "/planted/new.tif" for h in top_k(idx, twin_query, 50))
        archive = layout.open_archive(idx, layout.read_pointer(idx))
        assert len(archive.removed) == 10_000
        assert idx.tile_count() == 2 * PER_RASTER


_INDEXER = """
import sys
sys.path[:0] = {paths!r}
from engine.archive import layout
from engine.index import TileIndex
from planted_archive import ModalityWorld, add_planted_raster
world = ModalityWorld(dim={dim}, clusters=200, seed=5)
with TileIndex.open({folder!r}, write=True) as idx, idx.writing():
    rec = idx.raster("/planted/more.tif")
    done = rec.tiles if rec else 0
    vectors = world.images(9 * {per}, 12_000)
    if rec is None:
        add_planted_raster(idx, "/planted/more.tif", vectors, batch=512, after_batch=layout.after_batch, finish=False)
    from engine import jobs
    jobs._refresh_vectors(idx)
"""


def test_indexing_killed_between_seals_is_completed_by_a_rerun(world, archived, tmp_path):
    """SIGKILL while batches are committed and shards sealed: the index opens, searches, and a rerun seals the rest."""
    _, moved = archived
    folder = Path(shutil.copytree(moved, tmp_path / "idx"))
    tests = str(Path(__file__).parent)
    code = _INDEXER.format(paths=[str(Path(tests).parent), tests], dim=DIM, folder=str(folder), per=PER_RASTER)
    proc = subprocess.Popen([sys.executable, "-c", code])
    manifest = folder / layout.FOLDER / "manifest.json"
    start = len(json.loads(manifest.read_text())["shards"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads(manifest.read_text())["shards"]) >= start + 1:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the indexing finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with TileIndex.open(folder) as idx:
        assert len(top_k(idx, world.texts(1, seed=9), 10)) == 10, "the killed index still searches"
    with TileIndex.open(folder, write=True) as idx, idx.writing():
        jobs._refresh_vectors(idx)
        pointer = layout.read_pointer(idx)
        archive = layout.open_archive(idx, pointer)
        ids = archive.shards.all_ids()
        assert len(ids) == len(np.unique(ids)), "no vector archived twice"
        rows = np.array([r[0] for r in idx.conn.execute("SELECT id FROM tiles ORDER BY id")])
        np.testing.assert_array_equal(np.setdiff1d(ids, archive.removed), rows)
        assert pointer.max_id == rows[-1] and pointer.cleared == pointer.max_id
        queries = world.texts(20, seed=10)
        truth = exact_top(queries, [(rows, idx.embeddings(rows.tolist())[1])])
        assert recall([[h.tile.id for h in top_k(idx, q[None], 10)] for q in queries], truth) >= 0.9


def test_an_index_moves_by_itself_past_the_threshold(world, tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "ARCHIVE_THRESHOLD_BYTES", 4 * DIM * 15_000)
    idx = TileIndex.create(tmp_path / "idx", {"kind": "registry", "name": "planted"}, {"size": 10}, DIM)
    with idx.writing():
        add_planted_raster(idx, "/planted/a.tif", world.images(0, 12_000), after_batch=layout.after_batch)
        jobs._refresh_vectors(idx)
        assert layout.read_pointer(idx) is None, "below the threshold: vectors stay in SQLite"
        add_planted_raster(idx, "/planted/b.tif", world.images(12_000, 12_000), after_batch=layout.after_batch)
        assert layout.read_pointer(idx) is not None, "moved while indexing, once past the threshold"
        jobs._refresh_vectors(idx)
        assert layout.read_pointer(idx).max_id == 24_000
    idx.close()


def test_small_indexes_are_refused_with_a_sentence(world, tmp_path):
    idx = TileIndex.create(tmp_path / "idx", {"kind": "registry", "name": "planted"}, {"size": 10}, DIM)
    with idx.writing():
        add_planted_raster(idx, "/planted/a.tif", world.images(0, 500))
    idx.close()
    with pytest.raises(EngineError, match="has 500 tiles; the archive layout is for indexes of millions"):
        jobs.archive_index(tmp_path / "idx")
    with pytest.raises(EngineError, match="not in the archive layout"):
        jobs.archive_index(tmp_path / "idx", verify=True)


def test_command_line_archive_info_and_search(tmp_path, tiny_model):
    """The CLI moves an index of the tiny model, reports it, and `search` finds a tile planted at the query."""
    twin = planted_model_index(tmp_path / "idx", tiny_model)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], capture_output=True, text=True,
                             timeout=600, env=env, cwd=str(Path(__file__).resolve().parents[1]))
        return out.returncode, out.stdout, out.stderr

    code, out, err = run("archive", "--index", tmp_path / "idx")
    assert code == 0, err
    assert "12,000 tiles in the archive layout" in out and "bytes per tile" in out
    assert "recall@10 image" in out and "text" in out, "calibrated on the model's own text too"
    code, out, err = run("info", "--index", tmp_path / "idx")
    assert code == 0 and "(archive ivf" in out and "Archive:  12,000 float16 vectors in 1 shard" in out
    code, out, err = run("search", "airport runway", "--index", tmp_path / "idx", "--top-k", "3", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert results[0]["tile_id"] == twin and results[0]["score"] == pytest.approx(1.0, abs=2e-3)
    code, out, err = run("archive", "--index", tmp_path / "idx", "--verify")
    assert code == 0 and "checks out" in out


def test_a_missing_archive_or_too_many_vectors_at_once_give_a_sentence(archived, tmp_path, monkeypatch):
    _, moved = archived
    folder = Path(shutil.copytree(moved, tmp_path / "idx"))
    with TileIndex.open(folder) as idx:
        monkeypatch.setattr(layout, "memory_budget", lambda: 4 * DIM * 1000)
        with pytest.raises(EngineError, match="24,000 tiles in the archive layout; reading all their vectors"):
            idx.embeddings()
        assert len(idx.embeddings(list(range(1, 900)))[0]) == 899, "a part of them is read"
    shutil.rmtree(folder / layout.FOLDER)
    with TileIndex.open(folder) as idx, pytest.raises(EngineError, match="is damaged .*vector archive has no manifest"):
        top_k(idx, np.ones((1, DIM), np.float32) / 8, 10)


def test_restricted_searches_return_exactly_the_best_tiles_inside(world, archived):
    from engine.search import candidate_ids

    plain, moved = archived
    query = world.texts(1, seed=21)
    with TileIndex.open(plain) as before, TileIndex.open(moved) as after:
        allowed = candidate_ids(after, ["/planted/r1.tif"])
        np.testing.assert_array_equal(allowed, candidate_ids(before, ["/planted/r1.tif"]))
        got = top_k(after, query, 10, allowed=allowed)
        assert all(h.tile.raster == "/planted/r1.tif" for h in got)
        assert [h.tile.id for h in got] == [h.tile.id for h in top_k(before, query, 10, allowed=allowed)]
        store = after.vector_store()
        scores, ids = store.search(query, 10, allowed=allowed)
        assert ids[0].tolist() == [h.tile.id for h in got], "the store's own restricted search agrees"


def test_sealed_vectors_give_their_database_space_to_the_next_batches(world, archived, tmp_path):
    """After the move the database holds no float32 vectors; sealing while indexing reuses their pages."""
    plain, moved = archived
    freed = (plain / DB_NAME).stat().st_size - (moved / DB_NAME).stat().st_size
    assert freed >= 0.9 * 4 * DIM * 2 * PER_RASTER, "the database gave the float32 vectors' bytes back"
    folder = Path(shutil.copytree(moved, tmp_path / "idx"))
    with TileIndex.open(folder, write=True) as idx, idx.writing():
        add_planted_raster(idx, "/planted/more.tif", world.images(3 * PER_RASTER, 4 * SHARD), batch=1024,
                           after_batch=layout.after_batch)
        jobs._refresh_vectors(idx)
        idx.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free = (idx.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
    row = (moved / DB_NAME).stat().st_size / (2 * PER_RASTER)  # a tile row without its vector, as stored
    grown = (folder / DB_NAME).stat().st_size - (moved / DB_NAME).stat().st_size
    assert grown < 4 * SHARD * row + 2 * 4 * DIM * SHARD, "four shards of float32 passed through, at most two stayed"
    assert free > 0


@needs_root
def test_an_archived_index_on_read_only_media_searches_and_verifies(world, archived, tmp_path):
    plain, moved = archived
    query = world.texts(1, seed=22)
    with TileIndex.open(moved) as idx:
        expected = [h.tile.id for h in top_k(idx, query, 10)]
    with readonly_view(moved, tmp_path / "ro") as ro:
        with TileIndex.open(ro) as idx:
            assert idx.readonly
            assert [h.tile.id for h in top_k(idx, query, 10)] == expected
        assert "checks out" in jobs.archive_index(ro, verify=True).summary()
        with pytest.raises(EngineError, match="read-only"):
            jobs.archive_index(ro)
