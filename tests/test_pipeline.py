"""The prefetching reader keeps order, passes errors through and stops when abandoned."""
import threading
import time

import numpy as np
import pytest

from engine.device import calibration_tiles, cpu_has_native_bf16, embeddings_agree
from engine.errors import Cancelled
from engine.pipeline import prefetch_batches


def numbered(n):
    for i in range(n):
        yield i, np.full((2, 2, 3), i, np.uint8)


def test_batches_keep_every_item_with_its_array_in_order():
    got = list(prefetch_batches(numbered(23), 5, lambda arrays: np.stack(arrays)))
    assert [len(items) for items, _ in got] == [5, 5, 5, 5, 3]
    flat_items = [i for items, _ in got for i in items]
    assert flat_items == list(range(23))
    for items, batch in got:
        assert [int(b[0, 0, 0]) for b in batch] == items, "an embedding must never change tiles"


def test_reader_errors_reach_the_consumer():
    def failing():
        yield from numbered(7)
        raise Cancelled()

    with pytest.raises(Cancelled):
        for _ in prefetch_batches(failing(), 3, list):
            pass


def test_abandoning_the_generator_stops_the_reader():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i, np.zeros((1, 1, 3), np.uint8)
            i += 1

    gen = prefetch_batches(endless(), 4, list, depth=2)
    next(gen)
    gen.close()
    time.sleep(0.3)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count, "the reader thread kept reading after the consumer stopped"
    assert not [t for t in threading.enumerate() if t.name == "rsclip-tile-reader"]


def test_calibration_tiles_and_agreement():
    tiles = calibration_tiles()
    assert tiles.shape == (8, 64, 64, 3) and tiles.dtype == np.uint8
    np.testing.assert_array_equal(tiles, calibration_tiles())
    a = np.eye(3, dtype=np.float32)
    assert embeddings_agree(a, a)[0]
    b = a.copy()
    b[2] = [0, 0.1, 0.995]
    ok, worst = embeddings_agree(a, b / np.linalg.norm(b, axis=1, keepdims=True))
    assert not ok and worst < 0.999


def test_bf16_detection_reads_cpu_flags():
    import platform

    on_x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert cpu_has_native_bf16({"avx512_bf16", "avx2"}) == on_x86
    assert cpu_has_native_bf16({"amx_bf16"}) == on_x86
    assert not cpu_has_native_bf16({"avx2", "fma"})


def test_cancel_mid_raster_reports_the_tiles_it_kept(tiny_model, tmp_path):
    from engine import jobs
    from engine.tiling import TilingSpec
    from rasters import noise, write_raster

    raster = write_raster(tmp_path / "r.tif", noise(3, 256, 256))
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    seen = []

    def cancel():
        seen.append(1)
        return len(seen) > 20

    report = jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16),
                                batch_size=4, cancel=cancel)
    assert report.cancelled
    kept = jobs.info(tmp_path / "idx").tile_count
    assert 0 < kept < 256
    assert report.added == [(str(raster.resolve()), kept)]
    assert f"{kept} new tiles from 1 raster(s)" in report.summary()


def test_bf16_and_fp32_embeddings_of_the_same_tiles_agree(tiny_model):
    from pathlib import Path

    from engine.encoder import Encoder
    from engine.models import load_model, resolve_model_ref
    from engine.tiling import RasterTiler, TilingSpec

    naip = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20120731.tif"
    if not naip.exists():
        pytest.skip("shared test imagery not found")
    loaded = load_model(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)))
    with RasterTiler(naip, TilingSpec(size=224)) as tiler:
        tiles = np.stack([pixels for _, pixels in tiler.iter_tiles()])
    fp32 = Encoder(loaded, "cpu", "fp32").encode_images(tiles)
    bf16 = Encoder(loaded, "cpu", "bf16").encode_images(tiles)
    ok, worst = embeddings_agree(fp32, bf16, min_cosine=0.99)
    assert ok, worst
    assert np.array_equal(np.argmax(fp32 @ fp32.T, axis=1), np.argmax(bf16 @ fp32.T, axis=1)), \
        "each bf16 embedding is nearest to its own tile's fp32 embedding"
    again = Encoder(loaded, "cpu", "fp32").encode_images(tiles)
    np.testing.assert_allclose(again, fp32, atol=1e-5, err_msg="the bf16 copy must not change the shared fp32 model")


def test_indexing_progress_never_steps_back(tiny_model, tmp_path):
    """Rasters take the bar to 0.95, the search index from there to 1.0 (it once went 1.0 → 0.95)."""
    from engine import jobs
    from engine.tiling import TilingSpec
    from rasters import noise, write_raster

    rasters = [write_raster(tmp_path / f"r{k}.tif", noise(3, 64, 64, seed=k)) for k in range(2)]
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    seen: list[float] = []
    jobs.index_rasters(tmp_path / "idx", [str(r) for r in rasters], model=model, tiling=TilingSpec(size=16),
                       batch_size=4, progress=lambda fraction, message: seen.append(fraction))
    assert seen[-1] == 1.0 and len(seen) > 10
    assert all(b >= a for a, b in zip(seen, seen[1:])), seen


def test_grouped_commits_wait_for_half_a_second_or_a_full_group():
    from engine.pipeline import GroupedCommits

    now = [0.0]
    done: list[tuple[list, np.ndarray, object]] = []
    group = GroupedCommits(lambda w, e, b: done.append((w, e, b)), seconds=0.5, tiles=10, clock=lambda: now[0])

    def batch(start: int, n: int = 3):
        return list(range(start, start + n)), np.full((n, 2), start, np.float32), np.full((n, 4), start, float)

    group.add(*batch(0))
    now[0] = 0.2
    group.add(*batch(3))
    assert not done and group.waiting == 6, "batches that come fast wait for the next commit"
    now[0] = 0.6
    group.add(*batch(6))
    assert len(done) == 1 and group.waiting == 0
    windows, embeddings, bounds = done[0]
    assert windows == list(range(9)) and embeddings.shape == (9, 2) and bounds.shape == (9, 4)
    assert embeddings[:, 0].tolist() == [0] * 3 + [3] * 3 + [6] * 3, "rows stay with their windows, in order"
    now[0] = 0.7
    group.add(*batch(9, 6))
    group.add(*batch(15, 6))
    assert len(done) == 2 and done[1][0] == list(range(9, 21)), "a full group commits without waiting"
    now[0] = 0.8
    group.add(*batch(21))
    group.flush()
    assert len(done) == 3 and done[2][0] == [21, 22, 23] and group.committed == 24 and group.commits == 3
    group.flush()
    assert len(done) == 3, "nothing waits: nothing to commit"
    now[0] = 5.0
    group.add([30], np.zeros((1, 2), np.float32), None)
    assert done[3][2] is None, "bounds the caller did not compute are computed by the index"


def _indexed(folder):
    from engine.index import TileIndex

    with TileIndex.open(folder) as idx:
        rows = idx.conn.execute("SELECT col_off, row_off, width, height FROM tiles ORDER BY id").fetchall()
        return rows, idx.embeddings()[1]


def test_a_fast_model_commits_batches_together_and_the_index_is_the_same(tiny_model, tmp_path, monkeypatch):
    """The tiny model embeds a 4-tile batch in milliseconds: its batches share commits, with the same result."""
    from engine import jobs, pipeline
    from engine.index import TileIndex
    from engine.tiling import TilingSpec
    from rasters import noise, write_raster

    raster = write_raster(tmp_path / "r.tif", noise(3, 128, 128))
    commits: list[int] = []
    add_tiles = TileIndex.add_tiles

    def counted(self, raster_id, tiles, *args, **kwargs):
        commits.append(len(tiles))
        return add_tiles(self, raster_id, tiles, *args, **kwargs)

    monkeypatch.setattr(TileIndex, "add_tiles", counted)
    results = {}
    for seconds in (0.0, 60.0):  # every batch alone; every batch of the raster in one commit
        monkeypatch.setattr(pipeline, "COMMIT_SECONDS", seconds)
        commits.clear()
        folder = tmp_path / f"idx{seconds}"
        model = jobs.resolve_model(folder, arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
        report = jobs.index_rasters(folder, [str(raster)], model=model, tiling=TilingSpec(size=16), batch_size=4)
        assert report.total_tiles == 64
        results[seconds] = (list(commits), *_indexed(folder))
    assert results[0.0][0] == [4] * 16, "each batch committed alone"
    assert results[60.0][0] == [64], "the batches waited for one commit at the end of the raster"
    assert results[0.0][1] == results[60.0][1], "the same windows, in the same order"
    np.testing.assert_allclose(results[0.0][2], results[60.0][2], atol=1e-6)


def test_a_cancelled_run_commits_every_batch_it_embedded(tiny_model, tmp_path, monkeypatch):
    from engine import jobs, pipeline
    from engine.encoder import Encoder
    from engine.tiling import TilingSpec
    from rasters import noise, write_raster

    monkeypatch.setattr(pipeline, "COMMIT_SECONDS", 60.0)  # nothing would be committed before the end
    raster = write_raster(tmp_path / "r.tif", noise(3, 256, 256))
    embedded: list[int] = []
    encode = Encoder.encode_pixels

    def counted(self, pixels):
        embedded.append(len(pixels))
        return encode(self, pixels)

    monkeypatch.setattr(Encoder, "encode_pixels", counted)
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    report = jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16),
                                batch_size=4, cancel=lambda: sum(embedded) >= 40)
    assert report.cancelled
    kept = jobs.info(tmp_path / "idx").tile_count
    assert kept == sum(embedded) and 40 <= kept < 256, (kept, embedded)
    monkeypatch.undo()
    again = jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16), batch_size=4)
    assert again.added == [(str(raster.resolve()), 256 - kept)] and again.total_tiles == 256
