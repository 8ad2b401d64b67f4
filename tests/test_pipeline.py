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
