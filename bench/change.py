"""`make bench` rows for change between dates and heat maps (also runnable alone: `make bench-change`).

Pairing and scoring: two dates of 100,000 tiles each (a 400 × 250 grid of 224 m tiles, 512-d unit
embeddings), built directly as matrices like the concepts row (reading 200,000 embeddings from SQLite
is the index's cost, measured by the search rows); the pairing and scoring code is the product's
(``engine.change.pair_tiles``, ``score_pairs``, ``best_pairs``), called as ``engine.jobs.change`` calls
it. Twice: the second date on a grid offset by 30 m in the same CRS (IoU from the boxes' bounds), and
the second date in Web Mercator (every tile reprojected by PROJ and intersected as a polygon).

Heat map: one 224 px tile of a synthetic raster, with open_clip's ViT-B-32 with **random weights**
(the compute of RemoteCLIP ViT-B-32; real weights cannot be downloaded here), through
``engine.jobs.heatmaps`` as the CLI and the dock call it: read the tile, embed it with the patch
tokens, the heat, and the GeoTIFF. The model is loaded and the text embedded once before timing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _grid_matrix(cols: int, rows: int, dim: int, seed: int):
    """Two dates of a cols × rows grid of 224 m tiles: date 2 is date 1 plus noise, 1 % of tiles changed."""
    from osgeo import osr

    from engine.scoring import IndexMatrix, RasterGeo

    rng = np.random.default_rng(seed)
    n = cols * rows
    base = rng.standard_normal((n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    later = base + 0.3 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    changed = rng.choice(n, n // 100, replace=False)
    later[changed] = rng.standard_normal((len(changed), dim)).astype(np.float32)
    later /= np.linalg.norm(later, axis=1, keepdims=True)
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    win = np.column_stack([c.ravel() * 224, r.ravel() * 224, np.full(n, 224), np.full(n, 224)]).astype(np.int64)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32614)
    merc = osr.SpatialReference()
    merc.ImportFromEPSG(3857)
    return base, later, win, utm.ExportToWkt(), merc.ExportToWkt(), IndexMatrix, RasterGeo


def pair_and_score(cols: int = 400, rows: int = 250, dim: int = 512, seed: int = 0, log=print) -> list[dict]:
    from osgeo import osr

    from engine.change import best_pairs, pair_tiles, score_pairs

    base, later, win, utm_wkt, merc_wkt, IndexMatrix, RasterGeo = _grid_matrix(cols, rows, dim, seed)
    n = len(base)
    # UTM 14N, centred on the zone's central meridian at about 47.6° N
    left, top = 500000.0 - cols * 112, 5300000.0
    utm_affine = (left, 1.0, 0.0, top, 0.0, -1.0)
    # the same ground in Web Mercator: the corner moved by PROJ, the pixel scaled by 1/cos(latitude) at the centre
    utm = osr.SpatialReference(wkt=utm_wkt)
    merc = osr.SpatialReference(wkt=merc_wkt)
    geo = utm.CloneGeogCS()
    for srs in (utm, merc, geo):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x0, y0, _ = osr.CoordinateTransformation(utm, merc).TransformPoint(left, top)
    _, lat, _ = osr.CoordinateTransformation(utm, geo).TransformPoint(500000.0, top - rows * 112)
    scale = 1 / np.cos(np.radians(lat))
    cases = [("same CRS, grid offset 30 m", RasterGeo(2, "after", utm_wkt, (left + 30, 1.0, 0.0, top - 30, 0.0, -1.0))),
             ("other CRS (Web Mercator, same corner), reprojected", RasterGeo(2, "after", merc_wkt,
                                                                 (x0, scale, 0.0, y0, 0.0, -scale)))]
    query = np.random.default_rng(seed + 1).standard_normal(dim).astype(np.float32)
    out = []
    for label, after_geo in cases:
        matrix = IndexMatrix(np.arange(2 * n), np.concatenate([base, later]), np.repeat([1, 2], n),
                             np.concatenate([win, win]),
                             {1: RasterGeo(1, "before", utm_wkt, utm_affine), 2: after_geo})
        before_rows, after_rows = np.arange(n), np.arange(n, 2 * n)
        times: dict[str, list[float]] = {"pair_s": [], "distance_s": [], "text_s": []}
        for _ in range(3):  # the median of three runs: the machine is shared
            t0 = time.perf_counter()
            pairs = pair_tiles(matrix, before_rows, after_rows)
            t1 = time.perf_counter()
            best_pairs(score_pairs(matrix, pairs).change, 20)
            t2 = time.perf_counter()
            best_pairs(score_pairs(matrix, pairs, query, "appeared").change, 20)
            t3 = time.perf_counter()
            for key, value in (("pair_s", t1 - t0), ("distance_s", t2 - t1), ("text_s", t3 - t2)):
                times[key].append(value)
        row = {"case": label, "tiles": n, "pairs": len(pairs), "iou": float(np.median(pairs.iou)),
               **{key: float(np.median(values)) for key, values in times.items()}}
        log(f"change, {label}: {len(pairs):,} pairs in {row['pair_s']:.2f} s, scored in {row['distance_s']:.2f} s "
            f"(no text) / {row['text_s']:.2f} s (text)")
        out.append(row)
    return out


def heatmap(work: Path, log=print) -> dict:
    from engine import jobs
    from engine.models import resolve_model_ref
    from run import random_vitb32, synthetic_raster

    work.mkdir(parents=True, exist_ok=True)
    raster = synthetic_raster(work / "synthetic_448.tif", 448)
    ckpt = random_vitb32(work / "vit-b-32-random.pt")
    model = resolve_model_ref(arch="ViT-B-32", checkpoint=str(ckpt)).to_dict()
    index = work / "heat-index"
    import shutil

    shutil.rmtree(index, ignore_errors=True)
    from engine.tiling import TilingSpec

    jobs.index_rasters(index, [str(raster)], model=model, tiling=TilingSpec(size=224))
    tile = jobs.tiles(index)[0]
    encoder = jobs.get_encoder(model)
    jobs.heatmaps(index, "airport runway", [tile.id], work / "heat")  # warm: model loaded, text embedded
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        heat = jobs.heatmaps(index, "airport runway", [tile.id], work / "heat")[0]
        times.append(time.perf_counter() - t0)
    row = {"seconds": float(np.median(times)), "grid": list(heat.values.shape),
           "precision": f"{encoder.precision} ({encoder.reason})"}
    log(f"heat map, ViT-B-32 (random weights): {row['seconds'] * 1000:.0f} ms for a {heat.values.shape} grid")
    return row


def run(log=print) -> dict:
    return {"pairs": pair_and_score(log=log), "heatmap": heatmap(ROOT / "bench" / "work", log=log)}


def markdown(result: dict) -> list[str]:
    lines = ["**Change between dates**: pairing and scoring two dates of 100,000 tiles each (512-d embeddings, "
             "built as matrices; 224 m tiles):", "",
             "| second date | pairs | pair (STRtree + IoU) s | score, no text s | score, text s | median IoU |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["pairs"]:
        lines.append(f"| {r['case']} | {r['pairs']:,} | {r['pair_s']:.2f} | {r['distance_s']:.2f} | "
                     f"{r['text_s']:.2f} | {r['iou']:.2f} |")
    lines += ["", "A Web Mercator grid drifts from the UTM one across the 90 × 56 km extent (Mercator's scale changes "
              "with latitude, UTM's north turns away from the meridians), so only where the two grids line up do "
              "tiles overlap by half and pair; the time is that of reprojecting and intersecting every candidate."]
    h = result["heatmap"]
    lines += ["", f"**Heat map** of one 224 px tile with ViT-B-32 (**random weights**, the compute of RemoteCLIP "
              f"ViT-B-32), {h['precision']}: **{h['seconds'] * 1000:.0f} ms** (read the tile, patch tokens, heat, "
              f"GeoTIFF; a {h['grid'][0]} × {h['grid'][1]} grid; model loaded and text embedded beforehand).", ""]
    return lines


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__).parse_args()
    section = markdown(run())
    (ROOT / "bench" / "change.md").write_text("\n".join(section))
    print("\n".join(section))
