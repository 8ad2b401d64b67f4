"""Indexing on a Dask cluster: workers read and embed windows, this process stays the index's only writer.

``index --dask ADDRESS`` (a running ``distributed`` scheduler, or its scheduler file) or ``--dask local:N``
(N worker processes on this machine) changes one thing in ``jobs.index_rasters``: where a raster's
windows become embeddings. The coordinator (this process) plans the windows exactly as a local run
does (``RasterTiler.windows``, minus those already committed), sends them in batches to the workers,
and commits the returned embeddings batch by batch, in window order, through the same
``TileIndex.add_tiles`` as a local run. So everything the index promises holds unchanged: a batch is
committed whole or not at all, an interrupted run (even a killed coordinator) resumes where it stopped,
a changed raster's old tiles stay searchable until its re-index finishes.

Workers load the model once each (``jobs.get_encoder`` keeps it per process; with ``local:N`` on a
machine with GPUs each worker process sees one GPU) and read their windows themselves, from a path
or URL they must be able to reach (a shared file system at the same path, or COG URLs; see
docs/cluster.md). The footprints are computed here, from the windows a worker kept (those not mostly
nodata). At most a few batches per worker thread are in flight (backpressure: memory stays bounded
whatever the raster's size). A worker that dies has its tasks rerun on another by Dask; since the
coordinator commits each batch once, keyed by its windows (``add_tiles`` replaces a window it holds),
a lost worker never duplicates a tile.

Dask is optional: nothing here imports it until ``--dask`` is used, and the plugin never does.
Dask moves task arguments and results with pickle between the scheduler, the workers and this
process: use a cluster you trust (and TLS, see docs/cluster.md); nothing of it reaches the index.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import EngineError
from .progress import CancelFn, ProgressFn, check_cancel, no_progress

_log = logging.getLogger("rsclip_search.engine")

LOCAL_PREFIX = "local:"
#: Batches waiting or running per worker thread: enough to keep every worker busy while the
#: coordinator commits, few enough that results waiting to be committed stay a few batches.
IN_FLIGHT_PER_THREAD = 2
#: How long connecting to a scheduler may take before the address is reported unreachable.
CONNECT_TIMEOUT_S = 30
#: Rasters each worker thread keeps open (each holds a GDAL dataset and its stretch).
WORKER_TILERS = 4


class ClusterError(EngineError):
    """The Dask cluster itself failed (scheduler gone, no way to reach it): the run stops, committed work is kept."""


def install_hint() -> str:
    """The pip line that installs what ``--dask`` needs, at the tested versions (engine/deps/pins.py)."""
    from .deps.pins import CLUSTER_PINS

    return "pip install " + " ".join(f"{name}=={version}" for name, version in CLUSTER_PINS.items())


def require_dask() -> None:
    """Raise ``EngineError`` (how to install them, in one sentence) when dask or distributed is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise EngineError("Indexing on a Dask cluster (--dask) needs the optional packages dask and distributed, "
                          f"which this Python lacks: install them with `{install_hint()}`.") from None


def parse_address(text: str) -> tuple[str, Any]:
    """``("local", N)``, ``("file", path)`` of a scheduler file, or ``("address", address)`` of a scheduler."""
    text = str(text).strip()
    if text.lower().startswith(LOCAL_PREFIX) or text.lower() == "local":
        count = text[len(LOCAL_PREFIX):].strip() if ":" in text else ""
        if not count.isdigit() or not 1 <= int(count) <= 256:
            raise EngineError(f"--dask local:N takes the number of worker processes to start here (1 to 256), "
                              f"not {text!r}.")
        return "local", int(count)
    if text.lower().endswith(".json"):
        if not Path(text).expanduser().is_file():
            raise EngineError(f"The Dask scheduler file {text} does not exist; give the file the scheduler wrote "
                              "(dask scheduler --scheduler-file FILE) or its address (tcp://host:8786).")
        return "file", str(Path(text).expanduser())
    if not text or not re.match(r"^([a-z]+://)?[\w.\-\[\]:]+(:\d+)?/?$", text, re.IGNORECASE):
        raise EngineError(f"--dask takes a scheduler address (tcp://host:8786), a scheduler file (.json) or "
                          f"local:N (N worker processes on this machine), not {text!r}.")
    return "address", text


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this machine offers its processes (CUDA_VISIBLE_DEVICES, else nvidia-smi), by id."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def local_worker_plan(count: int, runtime, cores: int | None = None, gpus: list[str] | None = None) -> tuple[list, Any]:
    """Environment of each of ``count`` local workers and the runtime they share.

    With GPUs (and a device left to "auto" or "cuda") worker i sees GPU i mod their number alone, so
    each loads its model on its own GPU. On CPUs the cores are shared out: each worker runs torch on
    cores/count threads, so N workers do not fight over the same cores.
    """
    from dataclasses import replace

    gpus = visible_gpus() if gpus is None else gpus
    envs: list[dict[str, str]] = [{} for _ in range(count)]
    if gpus and runtime.device in ("auto", "cuda"):
        for i, env in enumerate(envs):
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        return envs, runtime
    threads = runtime.threads or max(1, (cores or os.cpu_count() or 1) // count)
    for env in envs:
        env["OMP_NUM_THREADS"] = str(threads)
    return envs, replace(runtime, threads=threads)


class DaskEmbedder:
    """Stands where the local ``Encoder`` stands in ``jobs._index_one``: it turns a raster's windows
    into (tiles, embeddings) batches, here by sending them to Dask workers.

    Use ``connect``; ``close`` it (a ``local:N`` cluster is shut down then).
    """

    def __init__(self, client, cluster, model: dict, runtime, dim: int, where: str) -> None:
        from .sources import current

        self.client = client
        self.cluster = cluster
        self.model = model
        self.runtime = runtime
        self.dim = int(dim)
        self.where = where
        self.options = current()  # the job's HTTP options, for workers reading COGs by URL
        self._run = uuid.uuid4().hex[:12]
        self._tasks = 0  # numbers every task of the run: a key is never reused, so no result is ever mistaken
        self._limit = (0.0, IN_FLIGHT_PER_THREAD)

    @classmethod
    def connect(cls, address: str, model: dict, runtime, progress: ProgressFn | None = None,
                cancel: CancelFn | None = None) -> "DaskEmbedder":
        """Reach (or, for ``local:N``, start) the cluster, and load the model on every worker it has."""
        progress = progress or no_progress
        kind, value = parse_address(address)
        require_dask()
        from distributed import Client

        cluster = None
        try:
            if kind == "local":
                progress(0.0, f"starting {value} local Dask worker(s)")
                cluster, runtime = _local_cluster(value, runtime)
                client = Client(cluster, set_as_default=False)
                where = f"local:{value}"
            else:
                progress(0.0, f"connecting to the Dask scheduler {value}")
                try:
                    client = Client(scheduler_file=value, timeout=CONNECT_TIMEOUT_S, set_as_default=False) \
                        if kind == "file" else Client(value, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
                except (OSError, TimeoutError, ValueError) as exc:
                    raise ClusterError(f"Cannot reach the Dask scheduler at {value} ({_first_line(exc)}); start it "
                                       "first (docs/cluster.md) or check the address.") from None
                where = value
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        try:
            embedder = cls(client, cluster, model, runtime, 0, where)
            embedder.dim = embedder._warm_up(progress, cancel)
            return embedder
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise

    def close(self) -> None:
        """Let go of the cluster; a ``local:N`` one is shut down, a remote one keeps running for others."""
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def _warm_up(self, progress: ProgressFn, cancel: CancelFn | None) -> int:
        """Load the model on every connected worker (waiting for a first one) and check they agree on it."""
        from distributed.client import Client

        client: Client = self.client
        waited = 0.0
        while not client.nthreads():
            check_cancel(cancel)
            if waited == 0.0:
                progress(0.0, f"waiting for Dask workers to join {self.where}")
            time.sleep(0.5)
            waited += 0.5
        progress(0.5, f"loading the model on {len(client.nthreads())} Dask worker(s)")
        answers = client.run(warm_worker, self.model, self.runtime, on_error="return")
        dims = set()
        for worker, answer in answers.items():
            if isinstance(answer, BaseException):
                if "No module named 'engine" in str(answer):  # the error comes back as text, not as the exception
                    raise ClusterError(f"The Dask worker {worker} cannot import this engine (no module named "
                                       "'engine'); start workers with the plugin folder on PYTHONPATH "
                                       "(docs/cluster.md).")
                raise EngineError(f"The Dask worker {worker} cannot load the model: {_first_line(answer)}")
            version, dim, device = answer
            from . import __version__

            if version != __version__:
                raise ClusterError(f"The Dask worker {worker} runs RS-CLIP Search {version}, this coordinator "
                                   f"{__version__}; give the workers the same version (docs/cluster.md).")
            dims.add(dim)
            _log.debug("Dask worker %s: model on %s", worker, device)
        if len(dims) != 1:
            raise EngineError(f"The Dask workers disagree on the model's embedding size ({sorted(dims)}); they "
                              "must all load the same model.")
        progress(1.0, f"model loaded on {len(answers)} Dask worker(s)")
        return dims.pop()

    def _in_flight(self) -> int:
        """How many batches may be submitted and not yet committed (re-read every few seconds: workers come and go)."""
        checked, limit = self._limit
        if time.monotonic() - checked > 2.0:
            threads = sum(self.client.nthreads().values())
            limit = max(IN_FLIGHT_PER_THREAD, IN_FLIGHT_PER_THREAD * threads)
            self._limit = (time.monotonic(), limit)
        return limit

    def embedded_batches(self, tiler, batch_size: int, progress: ProgressFn, cancel: CancelFn | None,
                         skip) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
        """Yield (windows, embeddings, WGS84 bounds) for the raster's windows not in ``skip``, in window order.

        Same contract as the local path: windows mostly nodata are left out, ``Cancelled`` is raised
        when ``cancel`` says so (what is in flight is dropped), a worker's ``EngineError`` (a damaged
        window) is raised here as it would be locally.
        """
        from .sources import WEBMAP_PREFIX, display_name
        from .tiling import TileWindow

        info = tiler.info
        if info.path.startswith(WEBMAP_PREFIX):
            raise EngineError(f"{display_name(info.path)} is a web map: index it without --dask (its server limits "
                              "requests per client, and one polite client is what the engine is).")
        total = len(tiler.windows)
        todo = (w.as_tuple() for w in tiler.windows if w.as_tuple() not in skip)
        done = sum(1 for w in skip if TileWindow(*w) in tiler.windows)  # committed by an earlier run
        expected = raster_facts(tiler)
        spec = tiler.spec.to_dict()
        pending: deque = deque()
        try:
            while True:
                while len(pending) < self._in_flight():
                    chunk = [w for _, w in zip(range(batch_size), todo)]
                    if not chunk:
                        break
                    future = self.client.submit(embed_windows, info.path, info.fingerprint, spec, expected, chunk,
                                                self.model, self.runtime, self.options, pure=False,
                                                key=f"rsclip-embed-{self._run}-{self._tasks}")
                    pending.append((future, len(chunk)))
                    self._tasks += 1
                if not pending:
                    return
                future, count = pending[0]
                kept, embeddings = self._result(future, cancel)
                pending.popleft()
                done += count
                progress(done / total, f"tile {done} of {total}")
                if len(kept):
                    windows = [TileWindow(*map(int, w)) for w in kept]
                    yield windows, embeddings, tiler.wgs84_bounds(windows)
        finally:
            if pending:
                self.client.cancel([f for f, _ in pending])

    def encode_prompts(self, phrases, templates) -> np.ndarray:
        """Text embeddings through templates, computed on a worker (this process holds no model): what
        ``querysample`` stores for an index's approximate search to be calibrated on text queries."""
        future = self.client.submit(prompt_embeddings, self.model, self.runtime, list(phrases), tuple(templates),
                                    pure=False, key=f"rsclip-text-{self._run}-{self._tasks}")
        self._tasks += 1
        return self._result(future, None)

    def _result(self, future, cancel: CancelFn | None):
        """A batch's result, waiting while listening for cancel; cluster failures become one sentence."""
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        while True:
            check_cancel(cancel)
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                continue
            except KilledWorker:
                raise EngineError("Dask workers died three times while embedding the same batch of its windows (out "
                                  "of memory, or a crash reading them), so it was not indexed.") from None
            except (CancelledError, OSError):
                raise ClusterError(f"The Dask cluster {self.where} stopped answering (its scheduler is gone or cannot "
                                   "be reached); the tiles committed so far are kept, and the same command resumes "
                                   "where this one stopped.") from None


def raster_facts(tiler) -> dict:
    """What decides a tile's pixels besides its window: size, bands and contrast stretch (sent with each task)."""
    info = tiler.info
    return {"width": info.width, "height": info.height, "bands": [int(b) for b in info.bands],
            "stretch": [[float(lo), float(hi)] for lo, hi in tiler.stretch]}


def same_raster(seen: dict, expected: dict) -> bool:
    """Whether a worker's view of a raster (``raster_facts``) is the coordinator's."""
    same_shape = all(seen[k] == expected[k] for k in ("width", "height", "bands"))
    return same_shape and np.allclose(np.asarray(seen["stretch"], dtype=float),
                                      np.asarray(expected["stretch"], dtype=float), rtol=1e-6, atol=1e-9)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _local_cluster(count: int, runtime):
    """A cluster of ``count`` worker processes (one thread each) on this machine, scheduler on 127.0.0.1."""
    from distributed import Nanny, Scheduler, SpecCluster

    envs, runtime = local_worker_plan(count, runtime)
    quiet = logging.ERROR
    workers = {i: {"cls": Nanny, "options": {"nthreads": 1, "env": env, "silence_logs": quiet, "host": "127.0.0.1"}}
               for i, env in enumerate(envs)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    try:
        cluster = SpecCluster(workers=workers, scheduler=scheduler, silence_logs=quiet, name=f"rsclip-local-{count}")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"Cannot start {count} local Dask worker(s) ({_first_line(exc)}).") from None
    return cluster, runtime


# -- on the workers -------------------------------------------------------------------------------
#: Per worker thread: its open tilers, newest last. A GDAL dataset is read by one thread at a time, so each
#: thread of a worker (a GPU worker has several, to read while the GPU embeds) opens the raster itself.
_THREAD = threading.local()


def warm_worker(model: dict, runtime) -> tuple[str, int, str]:
    """Load the model into this worker (kept for its tasks); returns (engine version, embedding size, device)."""
    from . import __version__
    from .jobs import get_encoder

    encoder = get_encoder(model, runtime)  # kept by jobs.get_encoder's cache for this worker's tasks
    return __version__, int(encoder.dim), f"{encoder.device} {encoder.precision}"


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "(not a Dask worker)"


def _worker_tiler(path: str, fingerprint: str, spec: dict, expected: dict, options):
    """This worker thread's open tiler of a raster, checked to see the raster the coordinator sees."""
    import json

    from .sources import display_name, using
    from .tiling import RasterTiler, TilingSpec

    key = (path, fingerprint, json.dumps(spec, sort_keys=True))
    tilers = getattr(_THREAD, "tilers", None)
    if tilers is None:
        tilers = _THREAD.tilers = OrderedDict()
    if key in tilers:
        tilers.move_to_end(key)
        return tilers[key]
    try:
        with using(options):
            tiler = RasterTiler(path, TilingSpec.from_dict(spec))
    except EngineError as exc:
        raise EngineError(f"The Dask worker {_worker_name()} cannot read {display_name(path)}: {exc} Workers must "
                          "see rasters at the path the coordinator gives (a shared file system) or read them by URL "
                          "(docs/cluster.md).") from None
    info = tiler.info
    if not same_raster(raster_facts(tiler), expected):
        tiler.close()
        raise EngineError(f"The Dask worker {_worker_name()} sees another raster at {path} ({info.width}×{info.height} "
                          f"px) than the coordinator ({expected['width']}×{expected['height']} px, or other values); "
                          "workers must read the same file (docs/cluster.md).")
    tilers[key] = tiler
    while len(tilers) > WORKER_TILERS:
        tilers.popitem(last=False)[1].close()
    return tiler


def embed_windows(path: str, fingerprint: str, spec: dict, expected: dict, windows: list, model: dict, runtime,
                  options) -> tuple[np.ndarray, np.ndarray]:
    """A Dask task: read ``windows`` of a raster, embed those with data; returns (kept windows (k, 4), embeddings).

    The same reading (``RasterTiler.read_batch``) and embedding (``Encoder.stage``, ``encode_pixels``) as a local run;
    the model is loaded once per worker process and kept.
    """
    from .jobs import get_encoder
    from .tiling import TileWindow

    tiler = _worker_tiler(path, fingerprint, spec, expected, options)
    kept, pixels = tiler.read_batch([TileWindow(*w) for w in windows])
    encoder = get_encoder(model, runtime)
    if not kept:
        return np.zeros((0, 4), dtype=np.int64), np.zeros((0, encoder.dim), dtype=np.float32)
    table = np.asarray([w.as_tuple() for w in kept], dtype=np.int64)
    return table, encoder.encode_pixels(encoder.stage(pixels))


def prompt_embeddings(model: dict, runtime, phrases: list, templates: tuple) -> np.ndarray:
    """A Dask task: ``Encoder.encode_prompts`` with this worker's model."""
    from .jobs import get_encoder

    return get_encoder(model, runtime).encode_prompts(phrases, templates)
