"""Change between dates: pair the tiles of two sets of indexed rasters by ground overlap, then rank the pairs.

Pairing. Every tile of the "before" set and of the "after" set is drawn in one CRS (the CRS most of the
before set's tiles are in; tiles of other CRSs are reprojected by GDAL/PROJ, vertex by vertex). Candidate
pairs come from an STRtree of the after tiles queried with the before tiles (bounding boxes), and each
candidate's intersection over union (IoU) is computed exactly: from the boxes' bounds when every tile is
an unrotated rectangle in that CRS, else from the polygons' intersection (shapely, vectorised). Pairs
with IoU ≥ ``MIN_IOU`` (one half) are kept, each tile in at most one pair (the pairs of highest IoU
first), and only tiles of the same scale are paired in an index with several scales. IoU is a ratio of
areas, which an affine map keeps, so its value hardly depends on the CRS chosen for tiles a few hundred
metres across. Rasters of different resolutions pair well when the index cuts tiles in metres.

Ranking. With a text query, each paired tile is scored like a search (cosine with the query's
embedding); the change is ``score after − score before``: largest first for where the concept
*appeared*, smallest first for where it *disappeared*, largest in absolute value for *either*. Without
text, the change is the cosine distance ``1 − cos`` between the two tiles' embeddings: the places that
changed most, whatever changed. In an index with several scales, places rank across scales and a
place that a better one covers by half or more is left out (the rule of ``engine.scales``, applied to
the before tiles), unless one scale is asked for.

Results carry both scores, their difference, the distance, the IoU and both tiles; their footprint is
the ground both tiles show (the intersection of the two footprints, in the pairing CRS).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EngineError
from .index import TileRecord
from .progress import CancelFn, ProgressFn, check_cancel, no_progress

MIN_IOU = 0.5
APPEARED, DISAPPEARED, EITHER, CHANGED = "appeared", "disappeared", "either", "changed"
DIRECTIONS = (APPEARED, DISAPPEARED, EITHER)
CHANGE_FIELDS = (("rank", "int"), ("change", "real"), ("score_before", "real"), ("score_after", "real"),
                 ("difference", "real"), ("distance", "real"), ("iou", "real"), ("before_raster", "str"),
                 ("after_raster", "str"), ("before_tile", "int"), ("after_tile", "int"), ("scale", "int"),
                 ("query", "str"), ("direction", "str"), ("model", "str"))
_CHUNK = 65536


@dataclass(frozen=True)
class TilePairs:
    """Paired tiles as matrix rows, their IoU, and both footprints in the pairing CRS."""

    before: np.ndarray  # (P,) int64 rows of the matrix
    after: np.ndarray  # (P,) int64
    iou: np.ndarray  # (P,) float64
    crs_wkt: str
    before_geoms: np.ndarray = field(repr=False)  # (P,) shapely polygons
    after_geoms: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.before)


@dataclass(frozen=True)
class ChangeScores:
    """Per pair: the ranking value (higher = more change) and what it is made of."""

    change: np.ndarray
    distance: np.ndarray
    score_before: np.ndarray | None = None
    score_after: np.ndarray | None = None

    @property
    def difference(self) -> np.ndarray | None:
        if self.score_before is None or self.score_after is None:
            return None
        return self.score_after - self.score_before


@dataclass(frozen=True)
class ChangeRow:
    """One ranked place: both tiles, their scores and the ground both show (``footprint_wkt`` in ``crs_wkt``)."""

    rank: int
    change: float
    before: TileRecord
    after: TileRecord
    iou: float
    distance: float
    score_before: float | None
    score_after: float | None
    scale: int | None
    crs_wkt: str
    footprint_wkt: str

    @property
    def difference(self) -> float | None:
        if self.score_before is None or self.score_after is None:
            return None
        return self.score_after - self.score_before


@dataclass
class ChangeResult:
    """The ranked places of a change search, with what was compared."""

    index_dir: str
    query: str
    direction: str  # appeared / disappeared / either with a query; "changed" without
    before: list[str]
    after: list[str]
    rows: list[ChangeRow]
    before_tiles: int
    after_tiles: int
    pairs: int
    crs_wkt: str
    timings: dict = field(default_factory=dict)
    model: str = ""  # the index's model, as ``jobs.model_label`` names it (recorded on every output row)

    def summary(self) -> str:
        what = (f"where '{self.query}' {self.direction}" if self.query and self.direction != EITHER
                else f"where '{self.query}' appeared or disappeared" if self.query else "the tiles that changed most")
        unpaired = max(self.before_tiles, self.after_tiles) - self.pairs
        tail = f"; {unpaired} tile(s) had no partner overlapping by half" if unpaired > 0 else ""
        return (f"{len(self.rows)} place(s) {what}, from {self.pairs} pair(s) of tiles of {_names(self.before)} "
                f"(before) and {_names(self.after)} (after){tail}.")


def _names(paths: Sequence[str]) -> str:
    names = [Path(p).name for p in paths]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# -- pairing --------------------------------------------------------------------------------
def pair_tiles(matrix, before_rows: np.ndarray, after_rows: np.ndarray, min_iou: float = MIN_IOU,
               before_groups: np.ndarray | None = None, after_groups: np.ndarray | None = None,
               crs_wkt: str | None = None) -> TilePairs:
    """Pair tiles (matrix rows) of two sets by ground overlap; see the module docstring.

    ``before_groups``/``after_groups`` (e.g. each tile's scale) restrict pairs to equal groups.
    """
    import shapely

    from .areas import tile_polygons

    before_rows = np.asarray(before_rows, dtype=np.int64)
    after_rows = np.asarray(after_rows, dtype=np.int64)
    if crs_wkt is None:
        crs_wkt = _majority_crs(matrix, before_rows)
    if not len(before_rows) or not len(after_rows):
        empty = np.zeros(0, np.int64)
        return TilePairs(empty, empty, np.zeros(0), crs_wkt, np.zeros(0, object), np.zeros(0, object))
    pb = tile_polygons(matrix, before_rows, crs_wkt)
    pa = tile_polygons(matrix, after_rows, crs_wkt)
    i, j = shapely.STRtree(pa).query(pb)
    if before_groups is not None and after_groups is not None:
        same = np.asarray(before_groups)[i] == np.asarray(after_groups)[j]
        i, j = i[same], j[same]
    bb, ba = shapely.bounds(pb), shapely.bounds(pa)
    area_b, area_a = shapely.area(pb)[i], shapely.area(pa)[j]
    iw = np.minimum(bb[i, 2], ba[j, 2]) - np.maximum(bb[i, 0], ba[j, 0])
    ih = np.minimum(bb[i, 3], ba[j, 3]) - np.maximum(bb[i, 1], ba[j, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)  # exact for boxes, an upper bound for other polygons
    if not _all_boxes(matrix, np.concatenate([before_rows, after_rows]), crs_wkt):
        # IoU grows with the intersection, so the boxes' bound already rules out most neighbours
        bound = np.divide(inter, area_b + area_a - inter, out=np.zeros_like(inter), where=area_b + area_a > inter)
        near = bound >= min_iou - 1e-9
        i, j, area_b, area_a = i[near], j[near], area_b[near], area_a[near]
        inter = shapely.area(shapely.intersection(pb[i], pa[j]))
    union = area_b + area_a - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ok = iou >= min_iou - 1e-9
    i, j, iou = i[ok], j[ok], iou[ok]
    i, j, iou = _one_to_one(i, j, iou)
    return TilePairs(before_rows[i], after_rows[j], iou, crs_wkt, pb[i], pa[j])


def _one_to_one(i: np.ndarray, j: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep each tile in one pair at most: pairs of higher IoU first (ties by position), greedily per side."""
    for side in (0, 1):
        order = np.lexsort((j, i, -iou))
        key = (i, j)[side][order]
        _, first = np.unique(key, return_index=True)
        keep = np.sort(order[first])
        i, j, iou = i[keep], j[keep], iou[keep]
    order = np.lexsort((j, i))
    return i[order], j[order], iou[order]


def _majority_crs(matrix, rows: np.ndarray) -> str:
    if not len(rows):
        return ""
    counts = Counter(matrix.raster_ids[rows].tolist())
    by_crs: Counter = Counter()
    for rid, n in counts.items():
        by_crs[matrix.rasters[int(rid)].crs_wkt] += n
    return by_crs.most_common(1)[0][0]


def _all_boxes(matrix, rows: np.ndarray, crs_wkt: str) -> bool:
    """Whether every tile of these rows is an axis-aligned rectangle in ``crs_wkt`` (no reprojection, no rotation)."""
    for rid in np.unique(matrix.raster_ids[rows]).tolist():
        geo = matrix.rasters[int(rid)]
        if geo.crs_wkt != crs_wkt or geo.affine[2] != 0 or geo.affine[4] != 0:
            return False
    return True


# -- scoring --------------------------------------------------------------------------------
def score_pairs(matrix, pairs: TilePairs, query_vec: np.ndarray | None = None,
                direction: str = APPEARED) -> ChangeScores:
    """Score every pair (see the module docstring); vectorised in chunks of pairs."""
    vectors = matrix.vectors
    n = len(pairs)
    distance = np.empty(n, np.float32)
    before = after = None
    q = None
    if query_vec is not None:
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        before, after = np.empty(n, np.float32), np.empty(n, np.float32)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(n, start + _CHUNK))
        vb, va = vectors[pairs.before[part]], vectors[pairs.after[part]]
        distance[part] = 1.0 - np.einsum("ij,ij->i", vb, va)
        if q is not None and before is not None and after is not None:
            before[part] = vb @ q
            after[part] = va @ q
    if q is None or before is None or after is None:
        return ChangeScores(distance.copy(), distance)
    diff = after - before
    change = {APPEARED: diff, DISAPPEARED: -diff, EITHER: np.abs(diff)}[check_direction(direction)]
    return ChangeScores(change, distance, before, after)


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise EngineError(f"The direction of change must be one of {', '.join(DIRECTIONS)}, not {direction!r}.")
    return direction


def best_pairs(change: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest changes, largest first (ties in pair order)."""
    k = int(min(max(k, 0), len(change)))
    if k == 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-change, k - 1)[:k]
    return part[np.lexsort((part, -change[part]))]


# -- the whole search -----------------------------------------------------------------------
def find_changes(idx, before: Sequence[str], after: Sequence[str], query_vec: np.ndarray | None = None,
                 query: str = "", direction: str = APPEARED, top_k: int = 20, scale: int | None = None,
                 min_iou: float = MIN_IOU, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, suppress: bool | None = None) -> ChangeResult:
    """The ``top_k`` places that changed most between two sets of an index's rasters (see the module docstring).

    In an index with several scales, places rank across scales and a place that a better one covers is
    left out, by the rule of ``engine.scales`` applied to the before tiles (``suppress`` False keeps them).
    """
    from .scales import ScaleMap, ranked_across_scales
    from .scoring import index_matrix

    progress = progress or no_progress
    if top_k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    if not 0 < min_iou <= 1:
        raise EngineError(f"The overlap needed to pair two tiles (IoU) is a fraction above 0 and at most 1, "
                          f"not {min_iou!r}.")
    if query_vec is not None:
        check_direction(direction)
    before_ids, after_ids = _raster_ids(idx, before, "before"), _raster_ids(idx, after, "after")
    both = sorted(set(before_ids) & set(after_ids))
    if both:
        name = next(Path(r.path).name for r in idx.rasters() if r.id == both[0])
        raise EngineError(f"{name} is in both the before and the after set; each raster belongs to one date.")
    timings: dict = {}
    t0 = time.perf_counter()
    matrix = index_matrix(idx, progress)
    timings["read_s"] = time.perf_counter() - t0
    check_cancel(cancel)
    rows_b = np.flatnonzero(np.isin(matrix.raster_ids, before_ids))
    rows_a = np.flatnonzero(np.isin(matrix.raster_ids, after_ids))
    smap = ScaleMap.of(idx)
    groups_b = smap.scales_of(matrix.raster_ids[rows_b], matrix.windows[rows_b])
    groups_a = smap.scales_of(matrix.raster_ids[rows_a], matrix.windows[rows_a])
    if scale is not None:
        if int(scale) not in smap.scales:
            have = ", ".join(f"×{s}" for s in smap.scales)
            raise EngineError(f"The index at {idx.folder} holds tiles at {have} only, not at ×{scale}.")
        rows_b, groups_b = rows_b[groups_b == scale], groups_b[groups_b == scale]
        rows_a, groups_a = rows_a[groups_a == scale], groups_a[groups_a == scale]
    progress(0.3, f"Pairing {len(rows_b)} tiles before with {len(rows_a)} tiles after")
    t0 = time.perf_counter()
    pairs = pair_tiles(matrix, rows_b, rows_a, min_iou, groups_b, groups_a)
    timings["pair_s"] = time.perf_counter() - t0
    check_cancel(cancel)
    if not len(pairs):
        raise EngineError(f"No tile of {_names(before)} overlaps a tile of {_names(after)} by at least "
                          f"{min_iou:.0%} (IoU): they do not cover the same ground, or their tiles differ in "
                          "size (for rasters of different resolutions, index with a tile size in metres).")
    progress(0.7, f"Scoring {len(pairs)} pairs of tiles")
    t0 = time.perf_counter()
    scores = score_pairs(matrix, pairs, query_vec, direction)
    timings["score_s"] = time.perf_counter() - t0

    def best_rows(n: int) -> list[ChangeRow]:
        return _rows(idx, matrix, pairs, scores, smap, best_pairs(scores.change, n))

    do_suppress = smap.several and scale is None if suppress is None else bool(suppress)
    rows = ranked_across_scales(best_rows, top_k, do_suppress, len(pairs), tile_of=lambda row: row.before)
    progress(1.0, f"{len(rows)} places ranked")
    from .jobs import model_label

    return ChangeResult(str(idx.folder), query, direction if query_vec is not None else CHANGED,
                        [_path_of(idx, r) for r in before_ids], [_path_of(idx, r) for r in after_ids], rows,
                        len(rows_b), len(rows_a), len(pairs), pairs.crs_wkt, timings, model_label(idx.model))


def _rows(idx, matrix, pairs: TilePairs, scores: ChangeScores, smap, top: np.ndarray) -> list[ChangeRow]:
    """Result rows of the pairs at positions ``top``, ranked in that order."""
    import shapely

    records = idx.tiles(np.concatenate([matrix.ids[pairs.before[top]], matrix.ids[pairs.after[top]]]).tolist())
    shapes = shapely.intersection(pairs.before_geoms[top], pairs.after_geoms[top])
    pair_scale = smap.scales_of(matrix.raster_ids[pairs.before[top]], matrix.windows[pairs.before[top]])
    rows = []
    for n, p in enumerate(top.tolist()):
        rows.append(ChangeRow(
            rank=n + 1, change=float(scores.change[p]), before=records[int(matrix.ids[pairs.before[p]])],
            after=records[int(matrix.ids[pairs.after[p]])], iou=float(pairs.iou[p]),
            distance=float(scores.distance[p]),
            score_before=None if scores.score_before is None else float(scores.score_before[p]),
            score_after=None if scores.score_after is None else float(scores.score_after[p]),
            scale=int(pair_scale[n]) if smap.several else None, crs_wkt=pairs.crs_wkt,
            footprint_wkt=shapely.to_wkt(shapes[n], rounding_precision=-1, output_dimension=2)))
    return rows


def _raster_ids(idx, paths: Sequence[str], which: str) -> list[int]:
    """Ids of the index's rasters at ``paths`` (canonical paths); an empty set or an unknown raster is refused."""
    if not paths:
        raise EngineError(f"Choose the raster(s) of the {which} date.")
    known = {r.path: r.id for r in idx.rasters()}
    ids = []
    for path in paths:
        if path not in known:
            names = ", ".join(sorted(Path(p).name for p in known)[:8])
            raise EngineError(f"{Path(path).name} is not in the index at {idx.folder} (it holds {names}); "
                              "index it first.")
        ids.append(known[path])
    return ids


def _path_of(idx, raster_id: int) -> str:
    return next(r.path for r in idx.rasters() if r.id == raster_id)


# -- output ---------------------------------------------------------------------------------
def change_values(row: ChangeRow, result: ChangeResult) -> dict:
    """A row's attributes, as the GeoPackage, the layer and ``--json`` show them."""
    return {"rank": row.rank, "change": round(row.change, 6), "score_before": _round(row.score_before),
            "score_after": _round(row.score_after), "difference": _round(row.difference),
            "distance": round(row.distance, 6), "iou": round(row.iou, 4), "before_raster": row.before.raster,
            "after_raster": row.after.raster, "before_tile": row.before.id, "after_tile": row.after.id,
            "scale": row.scale, "query": result.query, "direction": result.direction, "model": result.model}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def write_change_gpkg(path: str | Path, result: ChangeResult, layer: str = "change") -> Path:
    """The ranked places as polygons (the ground both tiles show) with both scores and the difference."""
    from .export import write_tiles_gpkg
    from .results import change_table

    return write_tiles_gpkg(path, change_table(result), layer)
