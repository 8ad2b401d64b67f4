"""The engine shares a process with QGIS: dock tasks and Processing algorithms run in threads at once.

It keeps one model cache behind a lock, handles GDAL errors per thread (never switching GDAL's process-wide
exception mode, in either mode QGIS may have chosen) and filters open_clip's warning instead of disabling
logging for the whole process. Each is tested with real threads doing the real thing at the same moment.
"""
import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from engine import jobs
from engine.errors import Cancelled, EngineError
from engine.index import TileIndex, TileRecord
from engine.models.cache import ENCODERS, ModelCache
from engine.search import Hit

UTM = osr.SpatialReference()
UTM.ImportFromEPSG(32633)


@pytest.fixture
def model(tiny_model, tmp_path):
    return jobs.resolve_model(tmp_path / "none", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))


def test_threads_asking_for_one_model_at_once_share_one_encoder_and_its_text_cache(model):
    ENCODERS.clear()
    start = threading.Barrier(4)

    def ask(_):
        start.wait()
        return jobs.get_encoder(model)

    with ThreadPoolExecutor(4) as pool:
        encoders = list(pool.map(ask, range(4)))
    assert len({id(e) for e in encoders}) == 1, "loaded once, not once per thread"
    encoder = encoders[0]
    phrases = [f"phrase {i}" for i in range(40)]
    expected = {p: encoder.encode_prompts([p], ("{}",))[0] for p in phrases}
    encoder._text_cache.clear()
    encoder._text_cache_size = 4  # evict all the time, while other threads read and write the cache

    def use(n):
        start.wait()
        got = {}
        for k in range(60):
            p = phrases[(n * 7 + k) % len(phrases)]
            got[p] = encoder.encode_prompts([p], ("{}",))[0]
        return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(use, range(4)))
    for got in results:
        for p, vec in got.items():
            np.testing.assert_allclose(vec, expected[p], atol=1e-6)
    assert len(encoder._text_cache) <= 4


def test_a_thread_waiting_for_a_model_can_cancel_and_other_models_load_meanwhile():
    cache = ModelCache(size=2)
    building, release = threading.Event(), threading.Event()
    both = threading.Barrier(2, timeout=10)

    def slow(value):
        def build():
            building.set()
            both.wait()  # two different keys are being built at the same moment
            release.wait(10)
            return value
        return build

    with ThreadPoolExecutor(3) as pool:
        a = pool.submit(cache.get, "a", slow("A"))
        b = pool.submit(cache.get, "b", slow("B"))
        assert building.wait(10)
        with pytest.raises(Cancelled):  # a third thread wanting "a" gives up when cancelled, not when "a" is built
            cache.get("a", lambda: "never", cancel=lambda: True)
        release.set()
        assert (a.result(10), b.result(10)) == ("A", "B")
    assert cache.get("a", lambda: "rebuilt") == "A" and len(cache) == 2


def _tile(i: int) -> TileRecord:
    x0, y0 = 500000.0 + 100 * i, 6000000.0
    ring = [(x0, y0), (x0 + 100, y0), (x0 + 100, y0 - 100), (x0, y0 - 100), (x0, y0)]
    wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"
    return TileRecord(i, "/data/a.tif", 1, (10 * i, 0, 10, 10), (x0, y0 - 100, x0 + 100, y0), wkt,
                      "POLYGON ((15.0 54.1, 15.1 54.1, 15.1 54.0, 15.0 54.0, 15.0 54.1))", UTM.ExportToWkt())


class PausingRows(list):
    """Rows that stop half-way through being written, until the test has looked around."""

    def __init__(self, rows, inside: threading.Event, go: threading.Event) -> None:
        super().__init__(rows)
        self.inside, self.go = inside, go

    def __iter__(self):
        for n, row in enumerate(list.__iter__(self)):
            if n == len(self) // 2:
                self.inside.set()
                assert self.go.wait(10)
            yield row


@pytest.fixture(params=["exceptions", "return codes"])
def gdal_mode(request):
    """Both modes QGIS may have chosen: 3.40's Processing turns exceptions on for the whole process."""
    def switch(on: bool) -> None:  # GDAL wants them switched off in the reverse order they were switched on
        for m in (gdal, ogr, osr) if on else (osr, ogr, gdal):
            m.UseExceptions() if on else m.DontUseExceptions()

    before = bool(gdal.GetUseExceptions())
    switch(request.param == "exceptions")
    yield request.param == "exceptions"
    switch(before)


def test_an_export_in_a_thread_changes_no_one_elses_gdal_error_handling(gdal_mode, tmp_path):
    from engine.export import write_tiles_gpkg
    from engine.results import hit_table

    table = hit_table([Hit(i + 1, 1.0 - i / 100, _tile(i)) for i in range(40)], "runway", "tiny")
    inside, go = threading.Event(), threading.Event()
    paused = dataclasses.replace(table, rows=PausingRows(table.rows, inside, go))
    modes = lambda: (gdal.GetUseExceptions(), ogr.GetUseExceptions(), osr.GetUseExceptions())  # noqa: E731
    before = modes()
    mine: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        export = pool.submit(write_tiles_gpkg, tmp_path / "hits.gpkg", paused, "hits")
        assert inside.wait(10)
        during = modes()
        # meanwhile this thread's own GDAL error goes to this thread's handler, not into the export's
        gdal.PushErrorHandler(lambda level, number, message: mine.append(message))
        try:
            assert gdal.OpenEx(str(tmp_path / "missing.tif"), gdal.OF_RASTER | gdal.OF_VERBOSE_ERROR) is None
        except RuntimeError:
            assert gdal_mode, "only with exceptions on"
        finally:
            gdal.PopErrorHandler()
        go.set()
        written = export.result(10)
    assert during == before == modes() == (int(gdal_mode),) * 3
    assert gdal_mode or any("missing.tif" in m for m in mine)
    ds = ogr.Open(str(written))
    layer = ds.GetLayerByName("hits")
    assert layer.GetFeatureCount() == 40, "the export did not take this thread's error as its own"
    assert {(f["query"], f["model"]) for f in layer} == {("runway", "tiny")}

    # a failure in the thread is the engine's sentence in either mode, and leaves nothing behind
    broken = dataclasses.replace(table, rows=[*table.rows[:3], (table.rows[3][0], "POLYGON ((nonsense))")])
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(EngineError, match=r"^Cannot write .*broken.gpkg: .*; the file was left as it was\.$"):
            pool.submit(write_tiles_gpkg, tmp_path / "broken.gpkg", broken, "hits").result(10)
    assert not list(tmp_path.glob("*broken*")) and modes() == before


def test_building_a_model_leaves_other_loggers_and_threads_logging(tiny_model, monkeypatch, caplog):
    """Before, ``logging.disable(WARNING)`` silenced every logger of the process (QGIS's too) while a model was
    built; now only open_clip's own warning in the building thread is dropped."""
    import open_clip

    from engine.models import load_model, resolve_model_ref

    real = open_clip.create_model
    seen = {}

    def create_model(*args, **kwargs):
        logging.getLogger("qgis_plugin.elsewhere").warning("a plugin warns while the model is built")
        other = threading.Thread(target=lambda: logging.getLogger("processing.task").error("another task fails"))
        other.start()
        other.join()
        seen["disable"] = logging.root.manager.disable
        return real(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", create_model)
    caplog.set_level(logging.DEBUG)
    filters = list(logging.getLogger().filters)
    load_model(resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)))
    messages = [r.getMessage() for r in caplog.records]
    assert "a plugin warns while the model is built" in messages and "another task fails" in messages
    assert not [m for m in messages if "initialized randomly" in m], "open_clip's misleading warning is dropped"
    assert seen["disable"] == 0 and logging.root.manager.disable == 0
    assert logging.getLogger().filters == filters, "the filter is removed again"
    # open_clip's warning still reaches the log when it comes from someone else's code path (another thread)
    caplog.clear()
    thread = threading.Thread(target=lambda: real(*_tiny_model_name(tiny_model), pretrained=None))
    thread.start()
    thread.join()
    assert any("initialized randomly" in r.getMessage() for r in caplog.records)


def _tiny_model_name(tiny_model) -> tuple[str]:
    from engine.models.loading import _register_config

    return (_register_config(str(tiny_model.config)),)


def test_searches_from_two_threads_on_one_index_agree_with_one_thread(model, tmp_path):
    """A dock search and a toolbox search at the same time: the shared encoder and index give each its answer."""
    from engine.tiling import TilingSpec
    from rasters import noise, write_raster

    raster = write_raster(tmp_path / "r.tif", noise(3, 96, 96, seed=1))
    jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16))
    queries = ["water", "forest", "runway", "fields", "roofs", "sand"]
    expected = {q: [(h.tile.id, round(h.score, 5)) for h in jobs.search(tmp_path / "idx", q, top_k=5)]
                for q in queries}
    ENCODERS.clear()
    start = threading.Barrier(3)

    def run(n):
        start.wait()
        return {q: [(h.tile.id, round(h.score, 5)) for h in jobs.search(tmp_path / "idx", q, top_k=5)]
                for q in queries[n:] + queries[:n]}

    with ThreadPoolExecutor(3) as pool:
        for got in pool.map(run, range(3)):
            assert got == expected
    with TileIndex.open(tmp_path / "idx") as idx:
        assert idx.tile_count() == 36
