"""A planted world for concept tests and the bench: embeddings with a known answer.

Rasters are grids of square tiles. Each tile has a land cover (patches of a few tiles, spatially
smooth) and a unit embedding shaped like a CLIP image embedding: a direction shared by all
images, its land cover's direction, noise, and — for the hidden concept's tiles, which lie in
compact spatial clusters — the concept's direction. The text vector points only partly at the
concept (cosine ``text_cosine``, 0.3 by default, as CLIP text-to-image similarities are) and
mostly at two "confuser" land covers (a text like "airport" also matches pavement and grass), so
text alone ranks many confuser tiles above the concept's.

``world.matrix`` is an ``engine.scoring.IndexMatrix`` built directly from arrays (the bench does
this at a million tiles); ``build_index`` writes a small world into a real index instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from engine.scoring import IndexMatrix, RasterGeo

UTM14_WKT = (
    'PROJCS["NAD83 / UTM zone 14N",GEOGCS["NAD83",DATUM["North_American_Datum_1983",SPHEROID["GRS 1980",'
    '6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",-99],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","26914"]]'
)
TILE_PX = 100
PIXEL_M = 1.0


@dataclass
class World:
    matrix: IndexMatrix
    truth: np.ndarray  # (N,) bool: the concept's tiles
    cluster: np.ndarray  # (N,) int: planted cluster id per tile, -1 outside the concept
    text: np.ndarray  # (D,) unit text vector at ``text_cosine`` to the concept's direction
    concept: np.ndarray  # (D,) unit concept direction
    confusers: np.ndarray  # (2, D) land-cover directions the text also points at
    grid: tuple[int, int]  # tiles per raster (cols, rows)

    @property
    def clusters(self) -> int:
        return int(self.cluster.max()) + 1


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def raster_origin(r: int, grid: tuple[int, int]) -> tuple[float, float]:
    """Rasters side by side in one UTM zone, 10 tile-widths apart (so they never touch)."""
    cols, rows = grid
    return 500000.0 + r * (cols + 10) * TILE_PX * PIXEL_M, 5200000.0


def planted_world(
    rasters: int = 4,
    grid: tuple[int, int] = (40, 40),
    dim: int = 64,
    clusters_per_raster: int = 6,
    seed: int = 0,
    text_cosine: float = 0.3,
    classes: int = 12,
    common: float = 1.0,
    cover: float = 0.5,
    signal: float = 0.55,
    noise: float = 0.55,
    spread: float = 0.1,
    confusion: float = 0.3,
    chunk: int = 200_000,
) -> World:
    """Build a planted world; see the module docstring. All sizes are in tiles."""
    rng = np.random.default_rng(seed)
    cols, rows = grid
    per = cols * rows
    n = rasters * per
    basis = _unit(rng.standard_normal((classes + 2, dim)))
    shared, concept = basis[0], basis[1]
    centres = _unit(basis[2:] + 0.0)
    confusers = centres[:2]
    # text: cosine text_cosine to the concept, the rest mostly towards two confuser land covers
    rest = _unit(confusion * _unit(confusers.sum(axis=0)) + (1 - confusion) * _unit(rng.standard_normal(dim)))
    rest = _unit(rest - (rest @ concept) * concept)
    text = _unit(text_cosine * concept + np.sqrt(1 - text_cosine**2) * rest).astype(np.float32)

    # land cover in patches of 4 x 4 tiles; the concept in compact clusters (radius 1-2.5 tiles)
    cover_class = np.empty(n, np.int64)
    truth = np.zeros(n, bool)
    cluster = np.full(n, -1, np.int64)
    cc, rr = np.meshgrid(np.arange(cols), np.arange(rows))
    cc, rr = cc.ravel(), rr.ravel()
    next_cluster = 0
    for r in range(rasters):
        patches = rng.integers(0, classes, ((rows + 3) // 4, (cols + 3) // 4))
        cover_class[r * per : (r + 1) * per] = patches[rr // 4, cc // 4]
        placed = 0
        tries = 0
        while placed < clusters_per_raster and tries < 1000:
            tries += 1
            cx, cy = rng.uniform(3, cols - 3), rng.uniform(3, rows - 3)
            radius = rng.uniform(1.0, 2.5)
            inside = (cc - cx) ** 2 + (rr - cy) ** 2 <= radius**2
            # keep clusters apart (two tiles of gap), so each planted cluster is one place
            near = (cc - cx) ** 2 + (rr - cy) ** 2 <= (radius + 2.5) ** 2
            block = slice(r * per, (r + 1) * per)
            if not inside.any() or truth[block][near].any():
                continue
            idx = np.flatnonzero(inside) + r * per
            truth[idx] = True
            cluster[idx] = next_cluster
            next_cluster += 1
            placed += 1

    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        # noise: isotropic, plus spread along the concept and the text's other direction, so that
        # neither the text nor the concept direction separates the tiles perfectly
        block = (
            common * shared
            + cover * centres[cover_class[start:stop]]
            + noise * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
            + (signal * truth[start:stop] + spread * rng.standard_normal(m))[:, None] * concept
            + (spread * rng.standard_normal(m))[:, None] * rest
        )
        vectors[start:stop] = _unit(block).astype(np.float32)

    windows = np.empty((n, 4), np.int64)
    raster_ids = np.repeat(np.arange(1, rasters + 1), per)
    windows[:, 0] = np.tile(cc * TILE_PX, rasters)
    windows[:, 1] = np.tile(rr * TILE_PX, rasters)
    windows[:, 2] = windows[:, 3] = TILE_PX
    geo = {}
    for r in range(rasters):
        x0, y0 = raster_origin(r, grid)
        geo[r + 1] = RasterGeo(
            r + 1, f"/planted/raster_{r + 1:04d}.tif", UTM14_WKT, (x0, PIXEL_M, 0.0, y0, 0.0, -PIXEL_M)
        )
    matrix = IndexMatrix(np.arange(1, n + 1, dtype=np.int64), vectors, raster_ids, windows, geo)
    return World(matrix, truth, cluster, text, concept.astype(np.float32), confusers.astype(np.float32), grid)


def tile_records(world: World, raster: int):
    """Tile objects (as the tiler makes) of one planted raster, for TileIndex.add_tiles."""
    m = world.matrix
    geo = m.rasters[raster]
    a, b, c, d, e, f = geo.affine
    rows = np.flatnonzero(m.raster_ids == raster)
    out = []
    for row in rows:
        col, rw, w, h = (int(v) for v in m.windows[row])
        corners = [
            (a + x * b + y * c, d + x * e + y * f)
            for x, y in ((col, rw), (col + w, rw), (col + w, rw + h), (col, rw + h))
        ]
        ring = corners + [corners[0]]
        wkt = "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"
        xs, ys = zip(*corners)
        lon, lat = -99 + col * 1e-5 + raster * 0.1, 47 - rw * 1e-5
        wgs = f"POLYGON (({lon} {lat}, {lon + 1e-3} {lat}, {lon + 1e-3} {lat - 1e-3}, {lon} {lat - 1e-3}, {lon} {lat}))"
        out.append(
            SimpleNamespace(
                window=SimpleNamespace(col_off=col, row_off=rw, width=w, height=h),
                bounds=(min(xs), min(ys), max(xs), max(ys)),
                footprint_wkt=wkt,
                footprint_wgs84_wkt=wgs,
            )
        )
    return rows, out


def build_index(world: World, folder, model: dict | None = None):
    """Write a (small) planted world into a real index; tile ids equal the world's row + 1."""
    from engine.index import TileIndex

    m = world.matrix
    idx = TileIndex.create(
        folder,
        model or {"kind": "registry", "name": "planted"},
        {"size": TILE_PX, "units": "px", "overlap": 0.0},
        m.vectors.shape[1],
    )
    cols, rows_ = world.grid
    for raster in sorted(m.rasters):
        geo = m.rasters[raster]
        rows, tiles = tile_records(world, raster)
        rid, _ = idx.begin_raster(
            geo.path, f"fp{raster}", geo.crs_wkt, cols * TILE_PX, rows_ * TILE_PX, (1, 2, 3), len(rows)
        )
        assert rid == raster
        idx.add_tiles(rid, tiles, m.vectors[rows])
        idx.finish_raster(rid)
    return idx


def recall_at_truth(scores: np.ndarray, truth: np.ndarray) -> float:
    """Share of the concept's tiles among the |truth| best-scoring tiles (R-precision)."""
    k = int(truth.sum())
    top = np.argpartition(-scores, k - 1)[:k]
    return float(truth[top].mean())


def cluster_recall(world: World, area_of_row: dict, min_share: float = 0.5) -> float:
    """Share of planted clusters of which an area covers at least ``min_share`` of the tiles."""
    found = 0
    for c in range(world.clusters):
        rows = np.flatnonzero(world.cluster == c)
        covered = sum(1 for r in rows if int(r) in area_of_row)
        found += covered >= min_share * len(rows)
    return found / max(world.clusters, 1)


def analyst_round(world: World, scores, marked: set, accepted: list, rejected: list, n: int = 20) -> None:
    """The simulated analyst: looks at the best ``n`` tiles not marked yet and marks each from the truth."""
    order = scores.best(n + len(marked), exclude_marked=True)[:n]
    for row in order.tolist():
        marked.add(row)
        (accepted if world.truth[row] else rejected).append(row)
