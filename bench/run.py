"""`make bench`: indexing throughput, search latency/recall and memory, in one run.

Everything runs on the same synthetic raster and the same random-weight ViT-B-32 checkpoint
(the compute of RemoteCLIP ViT-B-32; real weights cannot be downloaded here). Results go to
bench/results.md and bench/results.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
sys.path.insert(0, str(ROOT))


def synthetic_raster(path: Path, size: int, seed: int = 0) -> Path:
    """A textured 3-band uint8 GeoTIFF in UTM: blocks of colour with noise, like fields and roads."""
    from osgeo import gdal, osr

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 3, gdal.GDT_Byte,
                                              ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((500000, 0.5, 0, 5200000, 0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32614)
    ds.SetProjection(srs.ExportToWkt())
    coarse = rng.integers(20, 235, (3, size // 64 + 1, size // 64 + 1)).astype(np.uint8)
    for b in range(3):
        plane = np.kron(coarse[b], np.ones((64, 64), np.uint8))[:size, :size]
        noise = rng.integers(-20, 20, (size, size))
        ds.GetRasterBand(b + 1).WriteArray(np.clip(plane + noise, 0, 255).astype(np.uint8))
    ds = None
    return path


def huge_vrt(path: Path, source: Path, repeat: int, size: int | None = None,
             origin: tuple[float, float] | None = None) -> Path:
    """A (repeat × source size)² raster as a VRT mosaic of one file: 40,000 px wide without 4.8 GB on disk.

    ``size`` (pixels) crops it; ``origin`` moves its top-left corner (the source's pixel size is kept).
    """
    from osgeo import gdal

    src = gdal.Open(str(source))
    n = src.RasterXSize
    side = size or n * repeat
    bands = []
    for b in (1, 2, 3):
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/><DstRect xOff="{i * n}" yOff="{j * n}" '
            f'xSize="{n}" ySize="{n}"/></SimpleSource>' for i in range(repeat) for j in range(repeat))
        bands.append(f'<VRTRasterBand dataType="Byte" band="{b}">{sources}</VRTRasterBand>')
    srs = src.GetProjection().replace('"', "&quot;")
    gt = list(src.GetGeoTransform())
    if origin is not None:
        gt[0], gt[3] = origin
    path.write_text(f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}"><SRS>{srs}</SRS>'
                    f"<GeoTransform>{', '.join(str(v) for v in gt)}</GeoTransform>{''.join(bands)}</VRTDataset>")
    return path


def random_vitb32(path: Path) -> Path:
    import open_clip
    import torch

    if not path.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    return path


def plain_loop(raster: Path, checkpoint: Path, tile: int = 224) -> tuple[float, int]:
    """The naive baseline: rasterio read → PIL → open_clip preprocess → encode one tile in fp32 → FAISS add."""
    import faiss
    import open_clip
    import rasterio
    import torch
    from PIL import Image
    from rasterio.windows import Window

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    preprocess = open_clip.image_transform(224, is_train=False)
    index = faiss.IndexFlatIP(512)
    n = 0
    start = time.perf_counter()
    with rasterio.open(raster) as src:
        for row in range(0, src.height - tile + 1, tile):
            for col in range(0, src.width - tile + 1, tile):
                arr = src.read((1, 2, 3), window=Window(col, row, tile, tile))
                image = Image.fromarray(np.moveaxis(arr, 0, -1))
                with torch.no_grad():
                    emb = model.encode_image(preprocess(image)[None]).numpy()
                emb /= np.linalg.norm(emb, axis=1, keepdims=True)
                index.add(emb)
                n += 1
    return n / (time.perf_counter() - start), n


def engine_index(raster: Path, model: dict, folder: Path, batch: int) -> tuple[float, int, str]:
    from engine import jobs
    from engine.tiling import TilingSpec

    encoder = jobs.get_encoder(model)
    start = time.perf_counter()
    report = jobs.index_rasters(folder, [str(raster)], model=model, tiling=TilingSpec(size=224), batch_size=batch)
    precision = f"{encoder.precision} ({encoder.reason})"
    return report.total_tiles / (time.perf_counter() - start), report.total_tiles, precision


def model_only(model: dict, batch: int, batches: int = 6) -> float:
    """The encoder alone on pre-made, preprocessed batches: the ceiling for end-to-end indexing."""
    from engine import jobs
    from engine.device import calibration_tiles

    encoder = jobs.get_encoder(model)
    tiles = np.concatenate([calibration_tiles(n=8, size=224, seed=s) for s in range(batch // 8)])
    pixels = encoder.preprocess(tiles)
    encoder.encode_pixels(pixels)
    start = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batches * len(tiles) / (time.perf_counter() - start)


def clustered(n: int, dim: int = 512, clusters: int = 2000, seed: int = 0) -> np.ndarray:
    """Unit vectors around cluster centres: embeddings of imagery are clustered, not uniform."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def search_bench(n: int, queries: int = 200) -> dict:
    import faiss

    from engine.vectors import VectorStore, perturbed_queries

    vecs = clustered(n)
    rng = np.random.default_rng(1)
    q = perturbed_queries(vecs, rng, queries, cosine=0.5)
    t0 = time.perf_counter()
    store = VectorStore.build(np.arange(n), vecs)
    build_s = time.perf_counter() - t0
    exact = faiss.IndexFlatIP(vecs.shape[1])
    exact.add(vecs)
    _, truth = exact.search(q, 10)
    times, hits = [], []
    for i in range(queries):
        t = time.perf_counter()
        _, got = store.search(q[i:i + 1], 10)
        times.append((time.perf_counter() - t) * 1000)
        hits.append(len(set(got[0].tolist()) & set(truth[i].tolist())) / 10)
    return {"n": n, "kind": store.kind, "build_s": round(build_s, 1), "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)), "recall10": float(np.mean(hits))}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM); ru_maxrss would include the parent's from before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(vrt: str, model_json: str, folder: str) -> None:
    """Index the huge raster in this (child) process and print peak RSS above the loaded model's."""
    from engine import jobs
    from engine.tiling import TilingSpec

    model = json.loads(model_json)
    jobs.get_encoder(model)
    base = peak_rss_mb()
    start = time.perf_counter()
    report = jobs.index_rasters(folder, [vrt], model=model, tiling=TilingSpec(size=1000), batch_size=64)
    peak = peak_rss_mb()
    print(json.dumps({"tiles": report.total_tiles, "model_rss_mb": base, "peak_rss_mb": peak,
                      "seconds": time.perf_counter() - start}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raster-px", type=int, default=4032, help="side of the synthetic raster")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="vector counts for the search benchmark")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    import shutil

    from engine.models import resolve_model_ref

    WORK.mkdir(parents=True, exist_ok=True)
    raster = synthetic_raster(WORK / f"synthetic_{args.raster_px}.tif", args.raster_px)
    ckpt = random_vitb32(WORK / "vit-b-32-random.pt")
    model = resolve_model_ref(arch="ViT-B-32", checkpoint=str(ckpt)).to_dict()
    log = print
    log("plain per-tile loop …")
    plain_tps, plain_n = plain_loop(raster, ckpt)
    shutil.rmtree(WORK / "index", ignore_errors=True)
    log("engine index …")
    eng_tps, eng_n, precision = engine_index(raster, model, WORK / "index", args.batch_size)
    log("model only …")
    model_tps = model_only(model, args.batch_size)
    searches = []
    for n in (int(s) for s in args.sizes.split(",")):
        log(f"search at {n} vectors …")
        searches.append(search_bench(n))
    log("40,000 px raster (peak memory) …")
    vrt = huge_vrt(WORK / "huge.vrt", raster, repeat=max(1, round(40000 / args.raster_px)))
    shutil.rmtree(WORK / "huge-index", ignore_errors=True)
    child = subprocess.run([sys.executable, __file__, "--rss-child", str(vrt), json.dumps(model),
                            str(WORK / "huge-index")], capture_output=True, text=True, cwd=ROOT)
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return 1
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    write_results(plain_tps, plain_n, eng_tps, eng_n, precision, model_tps, searches, rss, args)
    log("find every X: the concept loop on 1,000,000 planted tiles …")
    import concepts  # bench/concepts.py: its own row, also runnable alone (make bench-concepts)

    section = concepts.markdown(concepts.run(log=log))
    (ROOT / "bench" / "concepts.md").write_text("\n".join(section))
    with open(ROOT / "bench" / "results.md", "a") as fh:
        fh.write("\n".join(["", *section]))
    log("change between dates (2 × 100,000 tiles) and one heat map …")
    import change  # bench/change.py: its own rows, also runnable alone (make bench-change)

    section = change.markdown(change.run(log=log))
    (ROOT / "bench" / "change.md").write_text("\n".join(section))
    with open(ROOT / "bench" / "results.md", "a") as fh:
        fh.write("\n".join(["", *section]))
    log("a million tiles: building, adding, cold and restricted searches (RSCLIP_BENCH_TILES sets the size) …")
    import million  # bench/million.py: its own table, also runnable alone (make bench-million)

    if million.main([]) != 0:
        return 1
    with open(ROOT / "bench" / "results.md", "a") as fh:
        fh.write("\n" + (ROOT / "bench" / "million.md").read_text())
    log("indexing on Dask: local:2 against one process …")
    import cluster  # bench/cluster.py: its own row, also runnable alone (make bench-dask)

    section = cluster.markdown(cluster.run(args.raster_px, log=log))
    (ROOT / "bench" / "cluster.md").write_text("\n".join(section))
    with open(ROOT / "bench" / "results.md", "a") as fh:
        fh.write("\n".join(["", *section]))
    return 0


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.system()} {platform.release()}"


def write_results(plain_tps, plain_n, eng_tps, eng_n, precision, model_tps, searches, rss, args) -> None:
    above = rss["peak_rss_mb"] - rss["model_rss_mb"]
    lines = [
        "# Benchmark results", "",
        f"Machine: {machine()}. Model: ViT-B-32 with random weights (same compute as RemoteCLIP ViT-B-32).",
        f"Raster: synthetic {args.raster_px}×{args.raster_px} px, 3-band uint8, 224 px tiles; "
        f"batch {args.batch_size}.", "",
        "| indexing | tiles | tiles/s | vs plain loop | share of model-only |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| plain per-tile loop (rasterio → PIL → preprocess → fp32, one tile) | {plain_n} | {plain_tps:.1f} | 1.0× | "
        f"{plain_tps / model_tps:.0%} |",
        f"| engine `index` ({precision}) | {eng_n} | {eng_tps:.1f} | {eng_tps / plain_tps:.1f}× | "
        f"{eng_tps / model_tps:.0%} |",
        f"| model only (encoder on pre-made batches) | – | {model_tps:.1f} | {model_tps / plain_tps:.1f}× | 100% |", "",
        "| search | index | build s | p50 ms | p95 ms | recall@10 |", "| --- | --- | ---: | ---: | ---: | ---: |",
        *[f"| {s['n']:,} vectors | {s['kind']} | {s['build_s']} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | "
          f"{s['recall10']:.3f} |" for s in searches], "",
        "Search vectors are 512-d unit vectors around 2,000 cluster centres (embeddings of imagery are clustered); "
        "queries are unit vectors at cosine 0.5 to random indexed ones (off the data, like text queries; the IVF "
        "nprobe is calibrated on a different sample at cosine 0.6); recall@10 is against exact search.", "",
        f"40,000 px raster (VRT mosaic, 1000 px tiles read at 224 px): {rss['tiles']} tiles in {rss['seconds']:.0f} s; "
        f"peak RSS {rss['peak_rss_mb']:.0f} MB, of which the loaded model and libraries {rss['model_rss_mb']:.0f} MB: "
        f"**{above:.0f} MB above the model** (bound: 1,500 MB).", "",
    ]
    (ROOT / "bench" / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(["plain loop", "engine", "model only"], [plain_tps, eng_tps, model_tps], color=["#999", "#2b8cbe", "#045a8d"])
    a.set_ylabel("tiles / s")
    a.set_title("Indexing throughput, ViT-B-32")
    xs = [s["n"] for s in searches]
    b.plot(xs, [s["p50_ms"] for s in searches], "o-", label="p50")
    b.plot(xs, [s["p95_ms"] for s in searches], "s-", label="p95")
    b.set_xscale("log")
    b.set_xlabel("vectors")
    b.set_ylabel("ms per query")
    b.set_title("Search latency")
    b.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "results.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
