"""`make bench` table "a million tiles": an index as a user lives with it, at 1,048,576 tiles of 512-d vectors.

Built through the real ``index`` job (``engine.jobs.index_rasters``): 16 rasters of 256 × 256 tiles of
224 px (VRT mosaics of one uncompressed 7,168 px GeoTIFF, placed side by side in UTM 14N). A ViT-B-32
would take days to embed a million tiles on these 2 cores, so the encoder is a no-op one with 512-d
output: it takes the staged pixel batches and returns *planted* embeddings (``tests/planted_search.py``:
image vectors in clusters around a common direction, text queries apart from them, as CLIP's
"modality gap" puts them), so recall on text queries means what it does with a real model. The index
records a tiny random-weight 512-d open_clip model, so a command-line search loads and runs a real
(small) model. What is timed is everything around the model.

The same steps run with today's code (``BASELINE``, the commit before this work) in a child process
where that commit is available (``git archive``), at ``RSCLIP_BENCH_BASELINE_TILES`` tiles.

Sizes: ``RSCLIP_BENCH_TILES`` (default 1,048,576; a multiple of 16 × 32² = 16,384 keeps the grid
square) and ``RSCLIP_BENCH_BASELINE_TILES`` (default: the same; 0 skips today's code). Results go to
bench/million.md (and into bench/results.md from ``make bench``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "million"
#: Today's code: the last commit of main before this work (index format 3, a full IVF rebuild per change).
BASELINE = "b3dfcdf"
SOURCE_TILES = 32  # the source GeoTIFF is 32 × 32 tiles of 224 px
TILE = 224
RASTERS = 16
ADDED_TILES = 10_000
#: The distinct-files pipeline row is the median of this many runs (the bench machine's speed drifts by ±25 %).
PIPELINE_RUNS = 3
QUERIES = 200
RESTRICTED_QUERIES = 60
TINY_512 = {"embed_dim": 512,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


# -- inputs ----------------------------------------------------------------------------------------------
def source_raster(path: Path, tiles: int = SOURCE_TILES, seed: int = 0) -> Path:
    """An uncompressed, tiled 3-band 8-bit GeoTIFF of ``tiles``² 224 px tiles (fields of colour with noise)."""
    from osgeo import gdal, osr

    if path.exists():
        return path
    n = tiles * TILE
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part.tif")
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), n, n, 3, gdal.GDT_Byte, ["TILED=YES"])
    ds.SetGeoTransform((500000, 0.5, 0, 5200000, 0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32614)
    ds.SetProjection(srs.ExportToWkt())
    coarse = rng.integers(20, 235, (3, n // 64 + 1, n // 64 + 1)).astype(np.uint8)
    for b in range(3):
        plane = np.kron(coarse[b], np.ones((64, 64), np.uint8))[:n, :n]
        ds.GetRasterBand(b + 1).WriteArray(np.clip(plane + rng.integers(-20, 20, (n, n)), 0, 255).astype(np.uint8))
    ds = None
    tmp.rename(path)
    return path


def mosaic(path: Path, source: Path, side_tiles: int, origin: tuple[float, float]) -> Path:
    """A VRT of ``side_tiles``² tiles made of copies of ``source``, its top-left corner at ``origin`` (UTM 14N)."""
    from osgeo import gdal

    from run import huge_vrt

    size = side_tiles * TILE
    return huge_vrt(path, source, math.ceil(size / gdal.Open(str(source)).RasterXSize), size=size, origin=origin)


def layout(total: int) -> tuple[int, list[tuple[float, float]]]:
    """Tiles per raster side and the 16 rasters' origins (a 4 × 4 grid, 1 km apart)."""
    side = int(round(math.sqrt(total / RASTERS)))
    extent = side * TILE * 0.5
    return side, [(440000.0 + (k % 4) * (extent + 1000), 5260000.0 - (k // 4) * (extent + 1000)) for k in range(16)]


def tiny_model(folder: Path) -> dict:
    """A tiny random-weight open_clip model with 512-d output, recorded by the index like any local model."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config, ckpt = folder / "tiny-512.json", folder / "tiny-512.pt"
    if not ckpt.exists():
        config.write_text(json.dumps(TINY_512))
        torch.manual_seed(0)
        torch.save(open_clip.CLIP(**TINY_512).state_dict(), ckpt)
    return {"arch": str(config), "checkpoint": str(ckpt)}


class PlantedEncoder:
    """The no-op encoder: the real tiny model's encoder for everything but the tiles and the text sample.

    ``encode_pixels`` receives each staged batch and returns planted image embeddings;
    ``encode_prompts`` returns a planted text vector per phrase (stable per phrase). ``preprocess``
    (today's code prepares batches with it in its reader thread) returns the batch unchanged.
    """

    def __init__(self, real, world, seed: int = 1) -> None:
        self._real, self._world = real, world
        self._rng = np.random.default_rng(seed)
        self.batches = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def preprocess(self, tiles):
        return tiles

    def stage(self, tiles):
        return tiles

    def encode_pixels(self, pixels) -> np.ndarray:
        self.batches += 1
        return self._world.images(len(pixels), seed=int(self._rng.integers(1 << 62)))

    def encode_prompts(self, phrases, templates=()) -> np.ndarray:
        import zlib

        salt = "|".join(templates)
        return np.concatenate([self._world.texts(1, seed=zlib.crc32(f"{p}|{salt}".encode())) for p in phrases])


def use_planted_encoder(jobs, model: dict, world) -> PlantedEncoder:
    """Make ``jobs.get_encoder`` hand out the planted encoder (the real tiny model's, with planted embeddings)."""
    real = jobs.get_encoder(model)
    planted = PlantedEncoder(real, world)
    jobs.get_encoder = lambda *args, **kwargs: planted
    return planted


def machine_load() -> str:
    """The CPU and its load when a side starts (the build machine is shared: absolute times vary with it)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} when this version's side started"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- one side of the table (run in a child process: this code or today's) ----------------------------------
def measure(args) -> dict:
    """Build, add, search: every row of the table for the engine found first on sys.path."""
    from engine import jobs
    from engine.index import TileIndex
    from planted_search import ModalityWorld, exact_top, recall

    out: dict = {"tiles": args.tiles, "load": machine_load()}
    work = Path(args.work)
    folder = work / "index"
    world = ModalityWorld(dim=512, clusters=2000, seed=0)
    model = json.loads(args.model)
    model = jobs.resolve_model(folder, arch=model["arch"], checkpoint=model["checkpoint"])
    planted = use_planted_encoder(jobs, model, world)
    source = Path(args.source)
    side, origins = layout(args.tiles)
    rasters = [str(mosaic(work / f"r{k:02d}.vrt", source, side, origins[k])) for k in range(RASTERS)]
    added = str(mosaic(work / "added.vrt", source, int(math.sqrt(ADDED_TILES)), (440000.0, 5300000.0)))
    from engine.tiling import TilingSpec

    # 1. pipeline: distinct files read once (the OS page cache holds them; GDAL's block cache does not), after a
    #    warm-up job on another small raster: the process's one-time start (imports, GDAL's drivers, the first
    #    index) is the cold-start rows' business, not the pipeline's rate
    scratch = work / "pipeline-index"
    distinct = [str(p) for p in sorted(Path(args.distinct).glob("d*.tif"))]
    warmup = source_raster(work / "warmup.tif", tiles=4, seed=99)
    for path in (scratch, work / "warmup-index"):
        shutil.rmtree(path, ignore_errors=True)
    jobs.index_rasters(work / "warmup-index", [str(warmup)], model=model, tiling=TilingSpec(size=TILE))
    shutil.rmtree(work / "warmup-index", ignore_errors=True)
    for path in distinct:
        with open(path, "rb") as fh:
            while fh.read(16 << 20):
                pass
    rates = []
    for _ in range(PIPELINE_RUNS):  # GDAL reads uncompressed GeoTIFFs past its block cache: each run reads alike
        t = time.perf_counter()
        report = jobs.index_rasters(scratch, distinct, model=model, tiling=TilingSpec(size=TILE), batch_size=64)
        rates.append(report.total_tiles / (time.perf_counter() - t))
        shutil.rmtree(scratch, ignore_errors=True)
    out["pipeline_files"] = {"tiles": report.total_tiles, "tiles_s": float(np.median(rates)), "runs": rates,
                             "rasters": len(distinct)}

    # 2. the big index, through the real index job; the embedding phase ends at the first search-index message
    shutil.rmtree(folder, ignore_errors=True)
    marks: dict = {}
    t0 = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        if "tiles embedded" in message:
            marks["embedded"] = time.perf_counter()

    report = jobs.index_rasters(folder, rasters, model=model, tiling=TilingSpec(size=TILE), batch_size=64,
                                progress=progress)
    end = time.perf_counter()
    n = report.total_tiles
    out["build"] = {"tiles": n, "seconds": end - t0, "embed_seconds": marks.get("embedded", end) - t0,
                    "tiles_s": n / (marks.get("embedded", end) - t0)}
    out["bytes_before_add"] = folder_bytes(folder)
    print(f"built {n:,} tiles in {end - t0:.0f} s", file=sys.stderr, flush=True)

    # 3. adding 10,000 tiles, then searching again (a new handle, as the next search of a user would)
    t = time.perf_counter()
    jobs.index_rasters(folder, [added], batch_size=64)
    t_added = time.perf_counter() - t
    with TileIndex.open(folder) as idx:
        from engine.search import top_k

        top_k(idx, world.texts(1, seed=99), 10)
    out["add"] = {"tiles": ADDED_TILES, "index_seconds": t_added, "total_seconds": time.perf_counter() - t}
    print(f"added {ADDED_TILES:,} tiles in {t_added:.1f} s", file=sys.stderr, flush=True)
    out["bytes"] = folder_bytes(folder)

    # 4. cold command-line search, and the bare interpreter + model start it includes
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.engine_root, str(ROOT / "tests")]))
    cli = [sys.executable, "-m", "engine", "search", "farmland", "--index", str(folder), "--top-k", "10"]
    start = [sys.executable, "-c", "import sys, json; from engine import jobs; from engine.prompts import "
             "model_templates; m = json.loads(sys.argv[1]); jobs.get_encoder(m).encode_prompts(['farmland'], "
             "tuple(model_templates(m)))", json.dumps(model)]
    runs = {"cli": [], "start": []}
    for _ in range(5):  # medians of 5: a cold start varies by ±0.5 s here
        for name, cmd in (("cli", cli), ("start", start)):
            t = time.perf_counter()
            done = subprocess.run(cmd, env=env, cwd=args.engine_root, capture_output=True, text=True)
            runs[name].append(time.perf_counter() - t)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
    out["cold"] = {"cli_s": statistics.median(runs["cli"]), "start_s": statistics.median(runs["start"])}
    print(f"cold search {out['cold']}", file=sys.stderr, flush=True)

    # 5. warm search: text-tower and image queries against exact search over the stored vectors
    import inspect

    from engine import search as engine_search

    def kind(name: str) -> dict:  # this version searches each kind of query as calibrated for it
        return {"kind": name} if "kind" in inspect.signature(engine_search.top_k).parameters else {}

    with TileIndex.open(folder) as idx:
        ids, vecs = idx.embeddings()
        texts = world.texts(QUERIES, seed=7)
        images = world.image_queries(vecs, QUERIES, seed=8)
        store = idx.vector_store()
        out["store"] = store.describe() if hasattr(store, "describe") else store.kind
        for name, queries in (("text", texts), ("image", images)):
            truth = exact_top(queries, ids, vecs, 10)
            got, times = [], []
            for q in queries:
                t = time.perf_counter()
                hits = engine_search.top_k(idx, q[None], 10, **kind(name))
                times.append((time.perf_counter() - t) * 1000)
                got.append([h.tile.id for h in hits])
            out[f"warm_{name}"] = {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
                                   "recall10": recall(got, truth)}
        print(f"warm {out['warm_text']} {out['warm_image']}", file=sys.stderr, flush=True)

        # 6. restricted: to one raster, and to an area (a 6 km square across two rasters' edge)
        raster = rasters[5]
        area = area_wkt(origins, side)
        for name, restriction in (("raster", {"rasters": [raster]}), ("area", {"within_wgs84_wkt": area})):
            times, exact = [], True
            count = RESTRICTED_QUERIES if args.restricted_queries is None else args.restricted_queries
            for i, q in enumerate(texts[:count]):
                t = time.perf_counter()
                allowed = engine_search.candidate_ids(idx, restriction.get("rasters"),
                                                      restriction.get("within_wgs84_wkt"))
                hits = engine_search.top_k(idx, q[None], 10, allowed=allowed, **kind("text"))
                times.append((time.perf_counter() - t) * 1000)
                if i < 5:
                    mask = np.isin(ids, allowed)
                    want = exact_top(q[None], ids[mask], vecs[mask], 10)[0].tolist()
                    exact &= [h.tile.id for h in hits] == want
            out[f"restricted_{name}"] = {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
                                         "tiles": int(len(allowed)), "exact": bool(exact), "queries": len(times)}
        print(f"restricted {out['restricted_raster']} {out['restricted_area']}", file=sys.stderr, flush=True)
    del vecs
    out["planted_batches"] = planted.batches
    return out


def area_wkt(origins: list[tuple[float, float]], side: int) -> str:
    """WGS84 polygon of a 6 km square centred on the edge between rasters 5 and 6."""
    from osgeo import osr

    extent = side * TILE * 0.5
    cx, cy = origins[5][0] + extent + 500, origins[5][1] - extent / 2
    half = min(3000.0, extent / 2)
    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32614)
    wgs.ImportFromEPSG(4326)
    for s in (utm, wgs):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(utm, wgs)
    ring = [ct.TransformPoint(x, y)[:2] for x, y in ((cx - half, cy + half), (cx + half, cy + half),
                                                    (cx + half, cy - half), (cx - half, cy - half))]
    ring.append(ring[0])
    return "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in ring) + "))"


# -- the ViT-B-32 row: 1,024 tiles from a cold start, the engine against the plain per-tile loop -----------
def vit_row(source: Path) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from run import random_vitb32

    ckpt = random_vitb32(ROOT / "bench" / "work" / "vit-b-32-random.pt")
    folder = WORK / "vit-index"
    shutil.rmtree(folder, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "engine", "index", str(source), "--index", str(folder), "--arch",
                           "ViT-B-32", "--checkpoint", str(ckpt), "--batch-size", "64"], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    engine_s = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    t = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--plain-loop", str(source), str(ckpt)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    plain_s = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    precision = next((line for line in done.stderr.splitlines() if "precision" in line), "")
    shutil.rmtree(folder, ignore_errors=True)
    return {"tiles": SOURCE_TILES ** 2, "engine_s": engine_s, "plain_s": plain_s, "note": precision}


def plain_loop_child(raster: str, ckpt: str) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from run import plain_loop

    plain_loop(Path(raster), Path(ckpt))


# -- the table ---------------------------------------------------------------------------------------------
def markdown(new: dict, old: dict | None, vit: dict | None, kept: set[str] | frozenset[str] = frozenset()) -> list[str]:
    def cell(side: dict | None, fn, fmt: str = "{}") -> str:
        if side is None:
            return "–"
        try:
            return fmt.format(fn(side))
        except (KeyError, TypeError):
            return "–"

    n = new["tiles"]
    emb = 4 * 512
    old_n = f" ({old['tiles']:,} tiles)" if old and old.get("tiles") != n else ""
    rows = [
        ("pipeline tiles/s without the model: the index job, distinct uncompressed GeoTIFFs "
         f"({new['pipeline_files']['rasters']} × 1,024 tiles)", lambda s: s["pipeline_files"]["tiles_s"], "{:,.0f}",
         "≥ 3,000"),
        (f"pipeline tiles/s without the model: building the {n:,}-tile index (VRT mosaics; their source in "
         "GDAL's cache)", lambda s: s["build"]["tiles_s"], "{:,.0f}", "≥ 3,000"),
        ("building it, in all (with the search index)", lambda s: s["build"]["seconds"], "{:,.0f} s", ""),
        (f"adding {ADDED_TILES:,} tiles and searching again", lambda s: s["add"]["total_seconds"], "{:.1f} s",
         "≤ 15 s"),
        ("cold command-line search, minus the bare interpreter + model start",
         lambda s: s["cold"]["cli_s"] - s["cold"]["start_s"], "{:.2f} s", "≤ 1 s"),
        ("(cold command-line search, in all / interpreter + model start alone)",
         lambda s: f"{s['cold']['cli_s']:.2f} s / {s['cold']['start_s']:.2f} s", "{}", ""),
        ("warm search, text-tower queries: p95 / recall@10",
         lambda s: f"{s['warm_text']['p95_ms']:.1f} ms / {s['warm_text']['recall10']:.3f}", "{}", "≤ 20 ms / ≥ 0.95"),
        ("warm search, image queries: p95 / recall@10",
         lambda s: f"{s['warm_image']['p95_ms']:.1f} ms / {s['warm_image']['recall10']:.3f}", "{}",
         "≤ 20 ms / ≥ 0.95"),
        ("search restricted to one raster: p95 (exact answers?)",
         lambda s: f"{s['restricted_raster']['p95_ms']:.0f} ms ({'yes' if s['restricted_raster']['exact'] else 'no'})",
         "{}", "≤ 100 ms"),
        ("search restricted to an area: p95 (exact answers?)",
         lambda s: f"{s['restricted_area']['p95_ms']:.0f} ms ({'yes' if s['restricted_area']['exact'] else 'no'})",
         "{}", "≤ 100 ms"),
        ("bytes per tile of the index folder (database and cache), × the float32 embedding",
         lambda s: f"{s['bytes'] / (s['tiles'] + ADDED_TILES):,.0f} B = "
                   f"{s['bytes'] / (s['tiles'] + ADDED_TILES) / emb:.2f}×",
         "{}", "≤ 1.25×"),
    ]
    lines = [f"**A million tiles** ({n:,} tiles of 224 px in 16 rasters, 512-d planted embeddings, built "
             "through the real `index` job with a no-op encoder; search index: "
             f"`{new.get('store', '?')}`):", "",
             f"| | this version | today's code (`{BASELINE}`){old_n} | goal |", "| --- | ---: | ---: | ---: |"]
    for label, fn, fmt, goal in rows:
        lines.append(f"| {label} | {cell(new, fn, fmt)} | {cell(old, fn, fmt)} | {goal} |")
    if vit:
        ratio = vit["plain_s"] / vit["engine_s"]
        lines.append(f"| engine `index` of {vit['tiles']:,} tiles with ViT-B-32 (random weights) from a cold start "
                     f"vs the plain per-tile loop, start-up included | {vit['engine_s']:.0f} s vs "
                     f"{vit['plain_s']:.0f} s = **{ratio:.1f}×** | – | ≥ 4× |")
    if new.get("load"):
        lines += ["", f"Machine: {new['load']}."]
    if old and old.get("load"):
        lines.append("Today's code: " + old["load"].replace("this version's", "its") + ".")
    if kept:
        lines.append("Kept from an earlier run of this bench (`--keep`): " + ", ".join(
            {"old": "today's code's column", "vit": "the ViT-B-32 row"}[part] for part in sorted(kept)) + ".")
    runs = new.get("pipeline_files", {}).get("runs")
    lines += ["", "The distinct-files row is timed after a warm-up job on another small raster in the same "
              "process (the one-time start of a run is in the cold rows), with the files in the OS page cache"
              + (f"; it is the median of {len(runs)} runs, each into a new index ("
                 + " / ".join(f"{r:,.0f}" for r in runs) + " tiles/s; GDAL reads uncompressed GeoTIFFs past its "
                 "block cache, so no run reads another's blocks from it)" if runs else "") + ". "
              "Text-tower queries are planted text vectors (a common text direction plus a mix of 8 image "
              "clusters: off the images' cone, matching many looks at once); image queries are at cosine 0.5 to "
              "stored vectors; recall@10 is against exact search over every stored vector. Restricted searches "
              "include finding the allowed tiles (SQL, R*Tree) and are checked against exact search within the "
              "restriction. The cold search runs `python -m engine search` in a new process; the model start "
              "(importing torch and open_clip, loading the tiny 512-d model, embedding the query) is measured "
              "alone in another and subtracted."]
    if vit and vit.get("note"):
        lines.append(f"ViT-B-32 row: {vit['note']}")
    return lines


def baseline_tree(commit: str) -> Path | None:
    """Today's code (``git archive``), or None where the commit is not in this clone."""
    tree = WORK / f"baseline-{commit}"
    if (tree / "engine").is_dir():
        return tree
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "engine", "resources"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        shutil.rmtree(tree, ignore_errors=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_side(engine_root: Path, tiles: int, model: dict, source: Path, distinct: Path, name: str,
             restricted_queries: int | None = None) -> dict:
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(engine_root), str(ROOT / "tests")]))
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        cmd = [sys.executable, __file__, "--measure", "--engine-root", str(engine_root), "--tiles", str(tiles),
               "--work", str(work), "--model", json.dumps(model), "--source", str(source), "--distinct",
               str(distinct), "--out", result.name]
        if restricted_queries is not None:
            cmd += ["--restricted-queries", str(restricted_queries)]
        done = subprocess.run(cmd, env=env, cwd=engine_root)
        if done.returncode != 0:
            raise SystemExit(f"the {name} side failed")
        return json.loads(Path(result.name).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain-loop", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--engine-root", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--distinct", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--restricted-queries", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tiles", type=int, default=int(os.environ.get("RSCLIP_BENCH_TILES", 1 << 20)))
    parser.add_argument("--baseline-tiles", type=int, default=None)
    parser.add_argument("--no-vit", action="store_true", help="skip the ViT-B-32 row")
    parser.add_argument("--keep", default="", help="comma-separated parts of the last run to reuse instead of "
                        "measuring again: old (today's code), vit (the ViT-B-32 row)")
    args = parser.parse_args(argv)
    if args.plain_loop:
        plain_loop_child(*args.plain_loop)
        return 0
    if args.measure:
        sys.path[:0] = [args.engine_root, str(ROOT / "tests"), str(ROOT / "bench")]
        result = measure(args)
        Path(args.out).write_text(json.dumps(result))
        return 0
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
    WORK.mkdir(parents=True, exist_ok=True)
    source = source_raster(WORK / "source.tif")
    distinct = WORK / "distinct"
    distinct.mkdir(exist_ok=True)
    for k in range(4):
        source_raster(distinct / f"d{k}.tif", seed=100 + k)
    model = tiny_model(WORK / "model")
    keep = {part.strip() for part in args.keep.split(",") if part.strip()}
    last = json.loads((WORK / "million.json").read_text()) if keep and (WORK / "million.json").exists() else {}
    print(f"this version, {args.tiles:,} tiles …", file=sys.stderr, flush=True)
    new = run_side(ROOT, args.tiles, model, source, distinct, "new")
    old = last.get("old") if "old" in keep else None
    baseline_tiles = args.baseline_tiles
    if baseline_tiles is None:
        baseline_tiles = int(os.environ.get("RSCLIP_BENCH_BASELINE_TILES", args.tiles))
    tree = baseline_tree(BASELINE) if baseline_tiles and "old" not in keep else None
    if tree is not None:
        print(f"today's code ({BASELINE}), {baseline_tiles:,} tiles …", file=sys.stderr, flush=True)
        old = run_side(tree, baseline_tiles, model, source, distinct, "old", restricted_queries=5)
    vit = last.get("vit") if "vit" in keep else None if args.no_vit else vit_row(source)
    lines = markdown(new, old, vit, {part for part in keep if {"old": old, "vit": vit}.get(part) is not None})
    (ROOT / "bench" / "million.md").write_text("\n".join(lines) + "\n")
    (WORK / "million.json").write_text(json.dumps({"new": new, "old": old, "vit": vit}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
