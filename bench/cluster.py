"""`make bench` row for indexing on Dask: ``--dask local:2`` against one process (also `make bench-dask`).

The same synthetic raster as the indexing rows, indexed through ``engine.jobs.index_rasters`` as the
command line calls it, each run in a fresh Python (cold: torch imported, model loaded, and for Dask the
two worker processes started and each loading the model): once in one process, once with
``dask="local:2"``. Two models: open_clip's ViT-B-32 with **random weights** (the compute of RemoteCLIP
ViT-B-32; real weights cannot be downloaded here), where the model sets the pace, and the tests' tiny
32-d model, where it costs almost nothing and what is measured is the cluster path itself (tasks,
transfers, one writer). "Steady" is tiles/s from the first committed batch to the last.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]


def child(raster: str, model_json: str, folder: str, tile: int, batch: int, dask: str) -> None:
    """One cold indexing run; prints {tiles, total_s, start_s, steady_tps, precision} as JSON."""
    start = time.perf_counter()
    from engine import jobs
    from engine.tiling import TilingSpec

    first: list[float] = []

    def progress(fraction: float, message: str) -> None:
        if "tile" in message and not first:
            first.append(time.perf_counter())

    report = jobs.index_rasters(folder, [raster], model=json.loads(model_json), tiling=TilingSpec(size=tile),
                                batch_size=batch, progress=progress, dask=dask or None)
    end = time.perf_counter()
    ready = first[0] if first else end
    batch_tiles = min(batch, report.total_tiles)
    print(json.dumps({"tiles": report.total_tiles, "total_s": end - start, "start_s": ready - start,
                      "steady_tps": (report.total_tiles - batch_tiles) / max(end - ready, 1e-9)}))


def one(raster: Path, model: dict, tile: int, batch: int, dask: str, log=print) -> dict:
    folder = WORK / "cluster-index"
    shutil.rmtree(folder, ignore_errors=True)
    out = subprocess.run([sys.executable, __file__, "--child", str(raster), json.dumps(model), str(folder), str(tile),
                          str(batch), dask], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    row = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"  {dask or 'one process'}: {row['tiles']} tiles in {row['total_s']:.1f} s (start {row['start_s']:.1f} s, "
        f"steady {row['steady_tps']:.1f} tiles/s)")
    return row


class InstantWorkers:
    """Stands for a cluster whose workers answer at once: what is left is the coordinator's own work per batch
    (the tiles' footprints and the commit), the ceiling of any cluster however many GPUs it has."""

    def __init__(self, dim: int) -> None:
        rng = np.random.default_rng(0)
        pool = rng.standard_normal((4096, dim)).astype(np.float32)
        self.pool = pool / np.linalg.norm(pool, axis=1, keepdims=True)
        self.dim = dim

    def embedded_batches(self, tiler, batch_size, progress, cancel, skip):
        todo = [w for w in tiler.windows if w.as_tuple() not in skip]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            yield chunk, self.pool[np.arange(len(chunk)) % len(self.pool)], tiler.wgs84_bounds(chunk)

    def close(self) -> None:
        pass


def coordinator_ceiling(raster: Path, model: dict, tile: int = 28, batch: int = 256, log=print) -> dict:
    """``index_rasters`` on the cluster path with instant workers, 512-d: the single writer's tiles/s."""
    from engine import distributed, jobs
    from engine.tiling import TilingSpec

    folder = WORK / "coordinator-index"
    shutil.rmtree(folder, ignore_errors=True)
    connect = distributed.DaskEmbedder.connect
    distributed.DaskEmbedder.connect = classmethod(lambda cls, *a, **k: InstantWorkers(512))  # type: ignore
    try:
        start = time.perf_counter()
        report = jobs.index_rasters(folder, [str(raster)], model=model, tiling=TilingSpec(size=tile),
                                    batch_size=batch, dask="local:1")
        seconds = time.perf_counter() - start
    finally:
        distributed.DaskEmbedder.connect = connect  # type: ignore
    row = {"tiles": report.total_tiles, "seconds": seconds, "tps": report.total_tiles / seconds, "batch": batch}
    log(f"  coordinator alone (instant workers, 512-d): {row['tps']:.0f} tiles/s")
    return row


def run(raster_px: int = 4032, log=print) -> dict:
    from run import random_vitb32, synthetic_raster
    from tinymodel import make_tiny_model

    from engine.models import resolve_model_ref

    WORK.mkdir(parents=True, exist_ok=True)
    raster = synthetic_raster(WORK / f"synthetic_{raster_px}.tif", raster_px)
    vit = resolve_model_ref(arch="ViT-B-32", checkpoint=str(random_vitb32(WORK / "vit-b-32-random.pt"))).to_dict()
    tiny_files = make_tiny_model(WORK / "tiny-model")
    tiny = resolve_model_ref(arch=str(tiny_files.config), checkpoint=str(tiny_files.checkpoint)).to_dict()
    load_before = os.getloadavg()[0]
    rows = []
    for label, model, tile, batch in (("ViT-B-32 (random weights), 224 px tiles", vit, 224, 64),
                                      ("tiny 32-d test model, 64 px tiles", tiny, 64, 64)):
        log(f"Dask local:2 vs one process, {label} …")
        rows.append({"model": label, "batch": batch, "single": one(raster, model, tile, batch, "", log),
                     "dask": one(raster, model, tile, batch, "local:2", log)})
    log("the coordinator alone …")
    ceiling = coordinator_ceiling(raster, vit, log=log)
    return {"raster_px": raster_px, "cores": os.cpu_count(), "rows": rows, "coordinator": ceiling,
            "load": [load_before, os.getloadavg()[0]]}


def markdown(result: dict) -> list[str]:
    lines = [f"**Indexing on Dask** (`--dask local:2`: two worker processes on this {result['cores']}-core machine, "
             f"one torch thread each) against one process, on the synthetic {result['raster_px']} px raster; each run "
             f"cold in a fresh Python (the machine's load average, others' work included, was {result['load'][0]:.1f} "
             f"before and {result['load'][1]:.1f} after):", "",
             "| model | run | tiles | total s | start s | steady tiles/s | steady vs one process |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        for name, key in (("one process", "single"), ("Dask local:2", "dask")):
            m = r[key]
            ratio = m["steady_tps"] / r["single"]["steady_tps"]
            lines.append(f"| {r['model']} | {name} | {m['tiles']:,} | {m['total_s']:.1f} | {m['start_s']:.1f} | "
                         f"{m['steady_tps']:.1f} | {ratio:.2f}× |")
    c = result["coordinator"]
    lines += ["", f"The coordinator alone (the cluster path of `index_rasters` with workers that answer at once: "
              f"footprints and commits of 512-d embeddings, batches of {c['batch']}): **{c['tps']:,.0f} tiles/s** "
              f"({c['tiles']:,} tiles in {c['seconds']:.1f} s). A cluster cannot index faster than this, whatever its "
              "GPUs."]
    lines += ["", "Start is everything before the first batch is committed (imports, model load; for Dask also "
              "starting the scheduler and the workers, each importing torch and loading the model). Two workers on "
              "two cores should not beat one process that already uses both; on this shared machine the steady rates "
              "move with the other engineers' load (compare the load averages), so read the rows for the fixed start "
              "of the cluster and for the coordinator's ceiling, not for small ratios. Throughput per GPU on real "
              "clusters: docs/cluster.md.", ""]
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raster-px", type=int, default=4032)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raster, model_json, folder, tile, batch, dask = args.child
        child(raster, model_json, folder, int(tile), int(batch), dask)
        sys.exit(0)
    section = markdown(run(args.raster_px))
    (ROOT / "bench" / "cluster.md").write_text("\n".join(section))
    print("\n".join(section))
