"""Indexing on a Dask cluster (engine/distributed.py): the same index as one process, whatever dies.

Real clusters of two worker processes on this machine: ``--dask local:2`` as the command line starts
it, and a LocalCluster reached by its address as a user's scheduler would be. Workers are killed
with SIGKILL, the coordinator too; the shared rasters of ../shared/data and the tiny model are used.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import jobs
from engine.distributed import local_worker_plan, parse_address
from engine.errors import EngineError
from engine.index import TileIndex, is_index
from engine.models import resolve_model_ref
from engine.tiling import TilingSpec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20090818.tif"
NAIP_2016 = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
LANDSAT = DATA / "landsat" / "landsat_1985.tif"
DSM = DATA / "elevation" / "dsm.tif"
RASTERS = [NAIP, LANDSAT, DSM]
#: 64 px windows read at the tiny model's 32 px input: a few hundred tiles, cheap to read.
SPEC = TilingSpec(size=64, read_size=32)
FP32 = jobs.Runtime(precision="fp32", threads=1)

needs_data = pytest.mark.skipif(not all(p.exists() for p in RASTERS + [NAIP_2016]),
                                reason="shared test imagery (../shared/data) not found")


def _has_dask() -> bool:
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


needs_dask = pytest.mark.skipif(not _has_dask(), reason="dask/distributed not installed (make setup installs them)")


@pytest.fixture(scope="module")
def model(tiny_model) -> dict:
    return resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)).to_dict()


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> Path:
    """The single-process index of the shared rasters: what every cluster run must reproduce."""
    folder = tmp_path_factory.mktemp("reference") / "idx"
    report = jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32)
    assert not report.skipped and report.total_tiles > 200
    return folder


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two worker processes (with nannies, which restart a killed worker), by address."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cl, Client(cl, set_as_default=False) as client:
        yield cl.scheduler_address, client


def snapshot(folder: Path) -> dict:
    """tile id → (raster, window, bounds, footprints, embedding) of every tile in an index."""
    with TileIndex.open(folder) as idx:
        ids, vecs = idx.embeddings()
        rows = {t.id: (Path(t.raster).name, tuple(t.window), tuple(t.bounds), t.footprint_wkt, t.footprint_wgs84_wkt)
                for t in idx.iter_tiles()}
    return {int(i): (*rows[int(i)], v) for i, v in zip(ids, vecs)}


def assert_same_index(got: Path, want: Path, atol: float = 1e-5) -> None:
    """Same tiles (ids, rasters, windows, footprints) and embeddings within float tolerance; no tile twice."""
    a, b = snapshot(got), snapshot(want)
    assert sorted(a) == sorted(b), "the same tile ids in the same window order"
    for i in b:
        assert a[i][:5] == b[i][:5], (i, a[i][:2], b[i][:2])
        np.testing.assert_allclose(a[i][5], b[i][5], atol=atol)
    with sqlite3.connect(got / "index.sqlite") as conn:
        twice = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM tiles GROUP BY raster_id, col_off, row_off, width, "
                             "height HAVING COUNT(*) > 1)").fetchone()[0]
    assert twice == 0, "no window is stored twice"
    with TileIndex.open(got) as idx:
        assert all(r.status == "complete" for r in idx.rasters())
        assert idx.vector_store().ntotal == len(b)


# -- fast: the address and the worker plan -------------------------------------------------------
def test_parse_address(tmp_path):
    assert parse_address("local:2") == ("local", 2)
    assert parse_address("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    assert parse_address("scheduler-host:8786") == ("address", "scheduler-host:8786")
    file = tmp_path / "scheduler.json"
    file.write_text("{}")
    assert parse_address(str(file)) == ("file", str(file))
    for bad in ("local:0", "local:x", "local", "", "tcp://host:8786 extra"):
        with pytest.raises(EngineError, match="--dask"):
            parse_address(bad)
    with pytest.raises(EngineError, match="does not exist"):
        parse_address(str(tmp_path / "missing.json"))


def test_local_workers_share_the_cores_or_take_one_gpu_each():
    envs, runtime = local_worker_plan(2, jobs.Runtime(), cores=8, gpus=[])
    assert runtime.threads == 4 and all(env["OMP_NUM_THREADS"] == "4" for env in envs)
    envs, runtime = local_worker_plan(3, jobs.Runtime(), cores=8, gpus=["0", "1"])
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1", "0"] and runtime.threads is None
    envs, runtime = local_worker_plan(2, jobs.Runtime(device="cpu", threads=3), cores=8, gpus=["0"])
    assert runtime.threads == 3 and all("CUDA_VISIBLE_DEVICES" not in env for env in envs)


# -- optional: without Dask the command line says how to install it, and nothing else needs it -------
def _without_dask(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run Python ``code`` with ``import dask`` / ``import distributed`` failing, as where they are not installed."""
    prelude = "import sys\nsys.modules['dask'] = None\nsys.modules['distributed'] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))


@needs_data
def test_dask_missing_says_how_to_install(tiny_model, tmp_path):
    from engine.distributed import install_hint

    folder = tmp_path / "idx"
    out = _without_dask(f"from engine.cli import main\nsys.exit(main(['index', {str(NAIP)!r}, '--index', "
                        f"{str(folder)!r}, '--arch', {str(tiny_model.config)!r}, '--checkpoint', "
                        f"{str(tiny_model.checkpoint)!r}, '--dask', 'local:2']))", tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("rsclip: error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert install_hint() in errors[0] and "dask==" in errors[0] and "distributed==" in errors[0]
    assert not folder.exists(), "nothing is created before the refusal"


@needs_data
def test_indexing_and_the_installer_need_no_dask(tiny_model, tmp_path):
    """The path the QGIS dock and toolbox take, with Dask absent: it indexes, and never imports Dask."""
    folder = tmp_path / "idx"
    out = _without_dask(
        "from engine import jobs\nfrom engine.models import resolve_model_ref\n"
        f"model = resolve_model_ref(arch={str(tiny_model.config)!r}, checkpoint={str(tiny_model.checkpoint)!r})\n"
        f"report = jobs.index_rasters({str(folder)!r}, [{str(DSM)!r}], model=model.to_dict())\n"
        "assert report.total_tiles > 0 and not report.skipped, report.summary()\n"
        "assert not any(m.split('.')[0] in ('dask', 'distributed') and sys.modules[m] for m in sys.modules)\n"
        "print('indexed', report.total_tiles)", tmp_path)
    assert out.returncode == 0 and "indexed" in out.stdout, out.stderr
    from engine.deps.host import HostFacts
    from engine.deps.pins import CLUSTER_PINS, requirements_for

    for numpy in ("1.24.2", "1.26.4", "2.2.4"):
        host = HostFacts(python="3.11.2", platform="linux-x86_64", executable="/usr/bin/python3", numpy=numpy,
                         has_pip=True, nvidia=None)
        assert not any(line.split("==")[0] in CLUSTER_PINS for line in requirements_for(host).packages)


# -- on workers: a worker that sees another raster, or none, says so ------------------------------
@needs_data
def test_worker_that_cannot_see_the_raster_says_so(model, tmp_path):
    from engine.distributed import embed_windows, raster_facts
    from engine.tiling import RasterTiler

    with RasterTiler(NAIP, SPEC) as tiler:
        expected, fingerprint = raster_facts(tiler), tiler.info.fingerprint
    windows = [(0, 0, 64, 64), (64, 0, 64, 64)]
    kept, vecs = embed_windows(str(NAIP), fingerprint, SPEC.to_dict(), expected, windows, model, FP32, None)
    assert kept.shape == (2, 4) and vecs.shape == (2, 32)
    with pytest.raises(EngineError, match="cannot read .*shared file system"):
        embed_windows(str(tmp_path / "elsewhere.tif"), fingerprint, SPEC.to_dict(), expected, windows, model, FP32,
                      None)
    other = dict(expected, width=expected["width"] + 1)
    with pytest.raises(EngineError, match="sees another raster"):
        embed_windows(str(NAIP), fingerprint + "x", SPEC.to_dict(), other, windows, model, FP32, None)
    stretched = dict(expected, stretch=[[lo + 1.0, hi] for lo, hi in expected["stretch"]])
    with pytest.raises(EngineError, match="sees another raster"):
        embed_windows(str(NAIP), fingerprint + "y", SPEC.to_dict(), stretched, windows, model, FP32, None)


def test_install_line_in_the_docs_is_the_pinned_one():
    from engine.distributed import install_hint

    for doc in (ROOT / "README.md", ROOT / "docs" / "cluster.md"):
        assert install_hint() in doc.read_text(), f"{doc.name} names other Dask versions than engine/deps/pins.py"


# -- real clusters -------------------------------------------------------------------------------
@pytest.mark.slow
@needs_dask
@needs_data
def test_local_cluster_gives_the_single_process_index(model, reference, tmp_path):
    folder = tmp_path / "idx"
    seen: list[tuple[float, str]] = []
    report = jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32,
                                dask="local:2", progress=lambda f, m: seen.append((f, m)))
    assert not report.skipped and report.total_tiles == len(snapshot(reference))
    assert_same_index(folder, reference)
    batches = [f for f, m in seen if re.search(r": tile \d+ of \d+$", m)]  # after each batch a worker returned
    assert len(batches) > 20 and batches == sorted(batches) and seen[-1][0] == 1.0
    again = jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32, dask="local:2")
    assert sorted(again.unchanged) == sorted(str(p) for p in RASTERS) and not again.added


@pytest.mark.slow
@needs_dask
@needs_data
def test_worker_killed_mid_run_still_gives_a_complete_index(model, reference, cluster, tmp_path):
    address, client = cluster
    pids = client.run(os.getpid)
    assert len(pids) == 2
    victim = sorted(pids.values())[0]
    killed: list[float] = []

    def progress(fraction: float, message: str) -> None:
        if not killed and fraction > 0.2 and "tile" in message:  # batches committed, others in flight
            os.kill(victim, signal.SIGKILL)
            killed.append(fraction)

    folder = tmp_path / "idx"
    report = jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32,
                                dask=address, progress=progress)
    assert killed and killed[0] < 0.9, "the worker died while the run went on"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert not report.skipped and not report.cancelled
    assert_same_index(folder, reference)
    client.wait_for_workers(2, timeout=120)  # its nanny restarted it
    assert victim not in client.run(os.getpid).values()


@pytest.mark.slow
@needs_dask
def test_text_sample_for_the_search_index_is_embedded_on_a_worker(model, cluster):
    """The coordinator holds no model: the text queries an approximate index is calibrated on come from a worker."""
    from engine.distributed import DaskEmbedder
    from engine.querysample import text_query_vectors

    address, _ = cluster
    embedder = DaskEmbedder.connect(address, model, FP32)
    try:
        names, remote = text_query_vectors(embedder, model)
    finally:
        embedder.close()
    local_names, local = text_query_vectors(jobs.get_encoder(model, FP32), model)
    assert names == local_names and len(names) > 20
    np.testing.assert_allclose(remote, local, atol=1e-5)


@pytest.mark.slow
@needs_dask
@needs_data
def test_batches_in_flight_stay_bounded(model, cluster, tmp_path):
    """Backpressure: however many windows a raster has, at most 2 batches per worker thread are out at once."""
    from engine.distributed import IN_FLIGHT_PER_THREAD

    address, client = cluster
    limit = IN_FLIGHT_PER_THREAD * sum(client.nthreads().values())

    def ours(dask_scheduler) -> int:
        return sum(1 for key in dask_scheduler.tasks if str(key).startswith("rsclip-embed"))

    seen: list[int] = []
    report = jobs.index_rasters(tmp_path / "idx", [NAIP], model=model, tiling=SPEC, batch_size=4, runtime=FP32,
                                dask=address, progress=lambda f, m: seen.append(client.run_on_scheduler(ours)))
    batches = -(-report.total_tiles // 4)
    assert batches > 5 * limit, "enough batches that an unbounded run would show"
    assert max(seen) <= limit + 2, (max(seen), limit)  # + tasks released but not yet forgotten by the scheduler


@pytest.mark.slow
@needs_dask
@needs_data
def test_cancel_keeps_committed_batches_and_a_rerun_completes(model, reference, cluster, tmp_path):
    address, client = cluster
    folder = tmp_path / "idx"
    batches: list[float] = []

    def progress(fraction: float, message: str) -> None:
        if "tile" in message:
            batches.append(fraction)

    report = jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32,
                                dask=address, progress=progress, cancel=lambda: len(batches) >= 3)
    assert report.cancelled
    kept = len(snapshot(folder))
    assert 0 < kept < len(snapshot(reference))
    time.sleep(0.5)
    assert not client.processing() or not any(client.processing().values()), "nothing is left running"
    jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32, dask=address)
    assert_same_index(folder, reference)


@pytest.mark.slow
@needs_dask
@needs_data
def test_several_scales_on_a_cluster_give_the_single_process_index(model, cluster, tmp_path):
    address, _ = cluster
    spec = TilingSpec(size=64, read_size=32, scales=(1, 2))
    folders = {how: tmp_path / f"idx-{'dask' if how else 'local'}" for how in (None, address)}
    for how, folder in folders.items():
        jobs.index_rasters(folder, [NAIP, LANDSAT], model=model, tiling=spec, batch_size=8, runtime=FP32, dask=how)
    assert_same_index(folders[address], folders[None])


@pytest.mark.slow
@needs_dask
@needs_data
def test_damaged_raster_is_skipped_as_locally(model, cluster, tmp_path):
    from rasters import noise, write_raster

    address, _ = cluster
    damaged = write_raster(tmp_path / "damaged.tif", noise(3, 256, 256))
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    results = {}
    for how in (None, address):
        folder = tmp_path / f"idx-{'dask' if how else 'local'}"
        report = jobs.index_rasters(folder, [damaged, DSM], model=model, tiling=SPEC, batch_size=8, runtime=FP32,
                                    dask=how)
        results[how] = (report.skipped, report.total_tiles)
    assert results[None] == results[address]
    (path, why), = results[address][0]
    assert path == str(damaged) and "truncated or damaged" in why


@pytest.mark.slow
@needs_dask
@needs_data
def test_coordinator_killed_mid_run_then_a_plain_rerun_completes(tiny_model, tmp_path):
    import psutil

    from faults import ROOT as CLI_ROOT

    folder = tmp_path / "idx"
    args = [str(NAIP), str(NAIP_2016), "--index", str(folder), "--arch", str(tiny_model.config), "--checkpoint",
            str(tiny_model.checkpoint), "--tile-size", "32", "--batch-size", "8", "--dask", "local:2"]
    proc = subprocess.Popen([sys.executable, "-m", "engine", "index", *args], cwd=CLI_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        committed = 0
        while proc.poll() is None and time.monotonic() < deadline and committed < 40:
            time.sleep(0.2)
            if (folder / "index.sqlite").exists():
                try:
                    with sqlite3.connect(f"file:{folder / 'index.sqlite'}?mode=ro", uri=True, timeout=1) as conn:
                        committed = conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
                except sqlite3.Error:
                    pass
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read() if proc.stderr else ''}"
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=90)
        assert not alive, "the workers of a killed coordinator exit on their own"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    with TileIndex.open(folder) as idx:
        before = idx.tile_count()
        assert before >= 40 and any(r.status != "complete" for r in idx.rasters())
    rerun = subprocess.run([sys.executable, "-m", "engine", "index", *args], cwd=CLI_ROOT, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    reference = tmp_path / "reference"
    spec = TilingSpec(size=32)
    model = resolve_model_ref(arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint)).to_dict()
    jobs.index_rasters(reference, [NAIP, NAIP_2016], model=model, tiling=spec, batch_size=8)
    got, want = snapshot(folder), snapshot(reference)
    assert sorted(v[:3] for v in got.values()) == sorted(v[:3] for v in want.values()), \
        "every window exactly once after the resume"
    by_window = {v[:2]: v[5] for v in want.values()}
    worst = min(float(np.dot(v[5], by_window[v[:2]])) for v in got.values())
    assert worst > 0.99, f"embeddings agree with the single-process ones (worst cosine {worst})"
    with TileIndex.open(folder) as idx:
        assert all(r.status == "complete" for r in idx.rasters()) and idx.vector_store().ntotal == len(want)


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` started as a user starts them, as processes of their own."""

    def __init__(self, folder: Path, worker_sees_engine: bool = True) -> None:
        self.file = folder / "scheduler.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT) if worker_sees_engine else "")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                                           "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                                           str(self.file)], env=dict(os.environ), **quiet)
        deadline = time.monotonic() + 120
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                        str(self.file), "--nthreads", "1", "--no-dashboard"], cwd=folder, env=env,
                                       **quiet)
        from distributed import Client

        with Client(scheduler_file=str(self.file), timeout=120) as client:
            client.wait_for_workers(1, timeout=120)

    def close(self) -> None:
        for proc in (self.worker, self.scheduler):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.mark.slow
@needs_dask
@needs_data
def test_scheduler_killed_mid_run_stops_with_a_sentence_and_a_plain_rerun_completes(model, reference, tmp_path):
    cluster = DaskProcesses(tmp_path)
    folder = tmp_path / "idx"
    try:
        def progress(fraction: float, message: str) -> None:
            if "tile" in message and fraction > 0.05 and cluster.scheduler.poll() is None:
                cluster.scheduler.send_signal(signal.SIGKILL)

        with pytest.raises(EngineError, match="stopped answering .* committed so far are kept"):
            jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32,
                               dask=str(cluster.file), progress=progress)
    finally:
        cluster.close()
    with TileIndex.open(folder) as idx:
        assert idx.tile_count() > 0, "the batches committed before the scheduler died are kept"
    jobs.index_rasters(folder, RASTERS, model=model, tiling=SPEC, batch_size=8, runtime=FP32)  # no Dask at all
    assert_same_index(folder, reference)


@pytest.mark.slow
@needs_dask
@needs_data
def test_worker_without_the_engine_is_refused_with_a_sentence(model, tmp_path):
    cluster = DaskProcesses(tmp_path, worker_sees_engine=False)
    try:
        with pytest.raises(EngineError, match="cannot import this engine .*PYTHONPATH"):
            jobs.index_rasters(tmp_path / "idx", [DSM], model=model, tiling=SPEC, runtime=FP32,
                               dask=str(cluster.file))
    finally:
        cluster.close()
    assert not is_index(tmp_path / "idx")
