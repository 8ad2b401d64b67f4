"""The vector archive on planted vectors: exact top hits, recall on text-like queries, damage, resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.archive import calibrate, ivfpq
from engine.archive.shards import Shard, ShardSet, row_checks, shard_layout, write_shard
from engine.archive.store import MANIFEST, Archive, build
from engine.index import DamagedIndexError
from planted_archive import ModalityWorld, exact_top, image_queries, recall

DIM = 64
N = 40_000
SHARD = 8192


@pytest.fixture(scope="module")
def world():
    return ModalityWorld(dim=DIM, clusters=200, seed=3)


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """An archive of N planted vectors in 5 shards, calibrated on a text sample; its folder is not changed by tests."""
    folder = tmp_path_factory.mktemp("archive") / "archive"
    archive = Archive.create(folder, DIM, "planted", shard_size=SHARD)
    build(archive, world.chunks(N), text_queries=world.texts(100, seed=1))
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "archive"))


def test_shards_round_trip_find_vectors_by_id_and_keep_their_check_numbers(tmp_path):
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((300, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.sort(rng.choice(np.arange(1, 10_000), 300, replace=False))
    a = write_shard(tmp_path, "a.f16", ids[:200], vecs[:200])
    b = write_shard(tmp_path, "b.f16", ids[200:], vecs[200:])
    assert a.size == shard_layout(200, 16)[3] == (tmp_path / "a.f16").stat().st_size
    shards = ShardSet([Shard(tmp_path, a, 16), Shard(tmp_path, b, 16)], 16)
    ask = np.array([ids[250], 999_999, ids[3], ids[199]])
    found, got = shards.vectors(ask)
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got, vecs[[250, 3, 199]].astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError):
        write_shard(tmp_path, "c.f16", ids[::-1], vecs)  # not ascending


def _mapped_kb() -> int:
    """This process's resident pages of mapped files (RssFile), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not hasattr(os, "pread") or not Path("/proc/self/status").exists(), reason="Linux only")
def test_re_ranking_reads_rows_without_mapping_the_shard_into_the_process(tmp_path, monkeypatch):
    """Scattered rows come from the page cache by ``pread``: the same vectors as through the memory map (kept
    for systems without ``pread``), without the mapped pages (and the kernel's neighbours of each) counting
    as the process's memory."""
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((65536, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    info = write_shard(tmp_path, "s.f16", np.arange(1, 65537), vecs)  # 16 MB of vectors, in the page cache
    rows = np.sort(rng.choice(65536, 4096, replace=False))
    got, grew = {}, {}
    for how in ("pread", "map"):
        if how == "map":
            monkeypatch.delattr(os, "pread")
        shard = Shard(tmp_path, info, 128)
        before = _mapped_kb()
        got[how] = shard.read_rows(rows)
        grew[how] = _mapped_kb() - before
        del shard
    np.testing.assert_array_equal(got["pread"], got["map"])
    np.testing.assert_array_equal(got["pread"], vecs[rows].astype(np.float16))
    assert grew["map"] > 4096, grew  # 4,096 scattered rows fault in most of the 16 MB
    assert grew["pread"] < 512, grew


def test_a_check_number_changes_with_any_single_value():
    rng = np.random.default_rng(1)
    row = rng.standard_normal((1, 512)).astype(np.float16)
    base = row_checks(row)[0]
    words = row.view(np.uint16)
    for pos in rng.choice(512, 64, replace=False):
        for bit in range(16):
            changed = words.copy()
            changed[0, pos] ^= np.uint16(1 << bit)
            assert row_checks(changed.view(np.float16))[0] != base


def test_planted_twins_of_the_queries_come_first(world, tmp_path):
    """Vectors planted as exact copies of queries are found at rank 1, with their score, among 40,000 others."""
    queries = np.concatenate([world.texts(10, seed=5), image_queries(world.images(0, 5000), 10, seed=6)])
    twins = N + 1 + np.arange(len(queries)) * 7  # ids between the other vectors' ids
    chunks = list(world.chunks(N))
    ids = np.concatenate([c[0] for c in chunks] + [twins])
    vecs = np.concatenate([c[1] for c in chunks] + [queries])
    order = np.argsort(ids)
    archive = Archive.create(tmp_path / "archive", DIM, "planted", shard_size=SHARD)
    build(archive, [(ids[order], vecs[order])], text_queries=world.texts(100, seed=1))
    for query, twin in zip(queries, twins):
        got_ids, scores = archive.search(query[None], 10)[0]
        assert got_ids[0] == twin
        assert scores[0] == pytest.approx(1.0, abs=2e-3)  # float16 vectors, exact re-ranking
        assert np.all(np.diff(scores) <= 0)


def test_recall_at_10_on_text_like_and_image_queries(world, built):
    archive = Archive.open(built)
    settings = archive.settings()
    assert set(settings["recall"]) == {"image", "text"}, "calibrated on both kinds of queries"
    assert min(settings["recall"].values()) >= calibrate.TARGET_RECALL
    held_out = {"text": world.texts(150, seed=9), "image": image_queries(world.images(0, N), 150, seed=10)}
    for kind, queries in held_out.items():
        truth = exact_top(queries, world.chunks(N))
        got = [ids for ids, _ in archive.search(queries, 10)]
        assert recall(got, truth) >= 0.9, kind
    assert len(archive.manifest["live"]["segments"]) == 1, "filled shard by shard, then merged"
    assert {p.name for p in built.iterdir()} == archive.referenced()


def test_text_queries_need_a_wider_search_than_image_queries(world, built):
    """The modality gap: at the nprobe that serves image queries, text-like queries find less (why both are used)."""
    archive = Archive.open(built)
    images = image_queries(world.images(0, N), 100, seed=11)
    texts = world.texts(100, seed=12)
    nprobe = 2
    for_images = recall(archive.candidates(images, nprobe, 1024), exact_top(images, world.chunks(N)))
    for_texts = recall(archive.candidates(texts, nprobe, 1024), exact_top(texts, world.chunks(N)))
    assert for_texts < for_images - 0.1


def test_merged_segment_gives_the_candidates_of_the_shard_segments(world, built, tmp_path):
    folder = copy_of(built, tmp_path)
    archive = Archive.open(folder)
    queries = world.texts(20, seed=13)
    merged = archive.candidates(queries, 16, 200)
    trained = archive._trained("live")
    parts = []
    for n, shard in enumerate(archive.shards.shards):
        path = folder / f"part-{n}.ivf"
        ivfpq.fill_segment(trained, shard.ids, shard.chunks, path)
        parts.append(ivfpq.open_segment(path))
    searcher = ivfpq.Searcher(trained, parts)
    scores, separate = searcher.candidates(queries, 16, 200)
    for a, b in zip(merged, separate):
        assert set(a.tolist()) == set(b[b >= 0].tolist())
    assert len(parts) > 1 and np.all(np.diff(scores, axis=1) <= 0), "candidates of several segments come best first"
    shallow = searcher.candidates(queries, 16, 50)[1]
    for deep, first in zip(separate, shallow):  # what calibration relies on: the first d of a deep search
        assert set(deep[:50].tolist()) == set(first.tolist())


def test_removed_ids_are_never_returned(world, built, tmp_path):
    archive = Archive.open(copy_of(built, tmp_path))
    query = world.texts(1, seed=14)
    first = archive.search(query, 10)[0][0]
    archive.set_removed(first[:5])
    again = Archive.open(archive.folder)
    got = again.search(query, 10)[0][0]
    assert not set(got.tolist()) & set(first[:5].tolist())
    assert list(got[:5]) == list(first[5:])


def test_a_damaged_vector_is_found_when_read_and_by_verify(world, built, tmp_path):
    folder = copy_of(built, tmp_path)
    archive = Archive.open(folder)
    query = world.texts(1, seed=15)
    target = int(archive.search(query, 1)[0][0][0])
    shard = next(s for s in archive.shards.shards if s.info.first_id <= target <= s.info.last_id)
    row = int(np.searchsorted(shard.ids, target))
    at = shard_layout(shard.info.count, DIM)[2] + row * 2 * DIM + 10
    with open(shard.path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x40]))
    damaged = Archive.open(folder)
    with pytest.raises(DamagedIndexError, match=f"{shard.info.file}.*check number"):
        damaged.search(query, 10)
    with pytest.raises(DamagedIndexError, match=shard.info.file):
        damaged.verify()


def test_a_truncated_shard_or_a_garbled_manifest_gives_the_damaged_sentence(built, tmp_path):
    folder = copy_of(built, tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    victim = folder / manifest["shards"][2]["file"]
    with open(victim, "r+b") as fh:
        fh.truncate(victim.stat().st_size - 1000)
    with pytest.raises(DamagedIndexError, match="is damaged.*has .* bytes"):
        len(Archive.open(folder).shards.shards)
    (folder / MANIFEST).write_text('{"format": 1, "dim": "x"}')
    with pytest.raises(DamagedIndexError, match="manifest is not as written"):
        Archive.open(folder)
    manifest["shards"][0]["file"] = "../../etc/passwd"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DamagedIndexError, match="manifest is not as written"):
        Archive.open(folder)


_BUILDER = """
import sys
sys.path[:0] = {paths!r}
from pathlib import Path
from engine.archive.store import Archive, build
from planted_archive import ModalityWorld
world = ModalityWorld(dim={dim}, clusters=200, seed=3)
folder = Path({folder!r})
if (folder / "manifest.json").exists():
    archive = Archive.open(folder)
else:
    archive = Archive.create(folder, {dim}, "planted", {shard})
build(archive, world.chunks({n} - archive.max_id, first_id=archive.max_id + 1, start=archive.max_id),
      text_queries=world.texts(100, seed=1))
"""


def _builder(folder: Path) -> list[str]:
    tests = str(Path(__file__).parent)
    code = _BUILDER.format(paths=[str(Path(tests).parent), tests], dim=DIM, folder=str(folder), shard=SHARD, n=N)
    return [sys.executable, "-c", code]


def test_a_build_killed_at_any_step_resumes_to_the_same_archive(world, built, tmp_path):
    """SIGKILL while shards are written, then while segments are filled: a rerun completes, nothing twice."""
    folder = tmp_path / "archive"
    for wait_for in ("shards", "segments"):
        proc = subprocess.Popen(_builder(folder))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
            except (OSError, ValueError):
                manifest = None
            if manifest and (len(manifest["shards"]) >= 2 if wait_for == "shards" else
                             manifest["building"] is not None and len(manifest["building"]["segments"]) >= 1):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the build finished before it could be killed while writing {wait_for}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run(_builder(folder), check=True, timeout=300)
    resumed, whole = Archive.open(folder), Archive.open(built)
    assert resumed.count == whole.count == N
    np.testing.assert_array_equal(resumed.shards.all_ids(), np.arange(1, N + 1))
    assert [s["sha256"] for s in resumed.manifest["shards"]] == [s["sha256"] for s in whole.manifest["shards"]]
    assert {p.name for p in folder.iterdir()} == resumed.referenced(), "no leftovers of the killed runs"
    queries = world.texts(30, seed=16)
    truth = exact_top(queries, world.chunks(N))
    assert recall([ids for ids, _ in resumed.search(queries, 10)], truth) >= 0.9


def test_growth_adds_segments_then_retrains_beside_the_live_structure(world, tmp_path):
    archive = Archive.create(tmp_path / "archive", DIM, "planted", shard_size=SHARD)
    build(archive, world.chunks(12_000), text_queries=world.texts(50, seed=1))
    first = archive.manifest["live"]
    build(archive, world.chunks(8_000, first_id=12_001, start=12_000))
    assert archive.manifest["live"]["trained"] == first["trained"], "added to the trained index, not re-trained"
    assert len(archive.manifest["live"]["segments"]) == 2, "the new shard got a segment of its own"
    reader = Archive.open(archive.folder)
    archive.add_shards(world.chunks(30_000, first_id=20_001, start=20_000))
    archive.train()  # the re-training is built beside the live structure ...
    assert archive.manifest["building"] is not None
    query = world.texts(1, seed=17)
    assert len(Archive.open(archive.folder).search(query, 10)[0][0]) == 10  # ... which readers still use
    assert len(reader.search(query, 10)[0][0]) == 10
    build(archive)
    live = archive.manifest["live"]
    assert archive.manifest["building"] is None and live["trained"]["trained_on"] == 50_000
    assert live["trained"]["nlist"] > first["trained"]["nlist"]
    truth = exact_top(world.texts(30, seed=18), world.chunks(50_000))
    assert recall([i for i, _ in archive.search(world.texts(30, seed=18), 10)], truth) >= 0.9


def test_text_and_image_queries_each_get_their_own_setting(world, built):
    """The modality gap tells a text query from an image query; each is searched as widely as its kind needs."""
    archive = Archive.open(built)
    settings = archive.settings()
    kinds = settings["by_kind"]
    assert kinds["text"]["nprobe"] >= kinds["image"]["nprobe"]
    assert all(k["recall"] >= calibrate.TARGET_RECALL for k in kinds.values())
    texts, images = world.texts(50, seed=19), image_queries(world.images(0, N), 50, seed=20)
    assert all(archive.setting_for(q) == (kinds["text"]["nprobe"], kinds["text"]["rerank"]) for q in texts)
    assert all(archive.setting_for(q) == (kinds["image"]["nprobe"], kinds["image"]["rerank"]) for q in images)
