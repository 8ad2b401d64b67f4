"""From tiles to places: the tiles above a score threshold, dissolved into areas.

Rule: two tiles above the threshold belong to the same area when their footprints touch (an
edge or a corner) or overlap. Within a raster this is decided on the pixel windows (closed
intervals in both axes) with a sort-and-search over the windows' grid positions and a
union-find, all as array operations over every raster at once, never by intersecting polygons;
areas of different rasters (a mosaic, or several dates of one place) whose outlines touch or
overlap are then merged too.

Each area reports its tile count, its best and mean tile score and its area on the ground in m²
and ha. The area is that of the union of its tiles' footprints, so overlapping tiles (tiles cut
with overlap, or two dates of one place) are never counted twice. It is ground (ellipsoidal)
area: in degrees, from the WGS84 ellipsoid's radii at each area's latitude; in a projected CRS,
the planar area times the projection's areal scale at the centre of each raster's areas (for UTM
the correction is under 0.1 %). Shapely only draws the
outlines: the union of each area's tile boxes in pixel space (vectorised over areas of similar
size), moved into the CRS by the raster's affine.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EngineError
from .gdalutil import gdal_errors
from .scoring import IndexMatrix, check_threshold

AREA_FIELDS = (("area_id", "int"), ("tiles", "int"), ("best_score", "real"), ("mean_score", "real"),
               ("area_m2", "real"), ("area_ha", "real"), ("rasters", "str"), ("concept", "str"), ("query", "str"),
               ("negative", "str"), ("method", "str"), ("examples", "int"), ("accepted", "int"), ("rejected", "int"),
               ("marks", "int"), ("threshold", "real"), ("model", "str"))
AREA_TILE_FIELDS = (("tile_id", "int"), ("score", "real"), ("area_id", "int"), ("verdict", "str"), ("raster", "str"),
                    ("concept", "str"), ("model", "str"))
WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
             'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')
#: Areas up to these many tiles are unioned together as rows of one padded array (one GEOS call per size class).
_SIZE_CLASSES = (4, 16, 64, 256)


@dataclass(frozen=True)
class Area:
    """One place: its tiles (matrix rows), scores, size on the ground and outline (in the result's CRS)."""

    id: int
    rows: np.ndarray
    best_score: float
    mean_score: float
    area_m2: float
    rasters: tuple[str, ...]
    outline: object = field(repr=False)  # a shapely (Multi)Polygon

    @property
    def tiles(self) -> int:
        return int(len(self.rows))

    @property
    def area_ha(self) -> float:
        return self.area_m2 / 10_000.0

    @property
    def outline_wkt(self) -> str:
        import shapely

        return shapely.to_wkt(self.outline, rounding_precision=-1, output_dimension=2)


@dataclass
class AreasResult:
    """The areas above ``threshold``, biggest first, and each selected tile's area (1-based ids)."""

    threshold: float
    crs_wkt: str
    areas: list[Area]
    tile_rows: np.ndarray          # rows of the tiles at or above the threshold, ascending
    tile_area: np.ndarray          # area id of each of those rows
    timings: dict = field(default_factory=dict)

    def area_of_row(self) -> dict[int, int]:
        return dict(zip(self.tile_rows.tolist(), self.tile_area.tolist()))

    @property
    def total_m2(self) -> float:
        return float(sum(a.area_m2 for a in self.areas))


# -- connectivity -----------------------------------------------------------------------------
def touching_pairs(windows: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of pixel windows (col, row, width, height) of the same group (raster) that
    touch or overlap.

    Windows are ranked by their distinct column and row offsets within their group; a window can
    only touch those a few ranks away (one for edge-to-edge tiles, more with overlap), so each rank
    offset is one vectorised look-up in the sorted grid keys, checked exactly on the intervals.
    """
    k = len(windows)
    empty = np.zeros(0, np.int64)
    if k < 2:
        return empty, empty
    g = np.zeros(k, np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    col, row, width, height = (windows[:, i].astype(np.int64) for i in range(4))
    big = np.int64(1) << 32  # offsets are pixel counts, far below 2³²
    ckey, rkey = g * big + col, g * big + row
    ucol, urow = np.unique(ckey), np.unique(rkey)
    ci, ri = np.searchsorted(ucol, ckey), np.searchsorted(urow, rkey)
    span_c = int((np.searchsorted(ucol, ckey + width, side="right") - 1 - ci).max())
    span_r = int((np.searchsorted(urow, rkey + height, side="right") - 1 - ri).max())
    nc, nr = len(ucol), len(urow)
    key = ri * nc + ci
    order = np.argsort(key, kind="stable")
    skey = key[order]
    first, second = [], []
    for dc in range(0, span_c + 1):
        for dr in range(-span_r, span_r + 1):
            if dc == 0 and dr <= 0:
                continue
            tc, tr = ci + dc, ri + dr
            ok = np.flatnonzero((tc < nc) & (tr >= 0) & (tr < nr))
            if not len(ok):
                continue
            target = tr[ok] * nc + tc[ok]
            pos = np.minimum(np.searchsorted(skey, target), k - 1)
            hit = skey[pos] == target
            i, j = ok[hit], order[pos[hit]]
            touch = ((g[i] == g[j]) & (col[j] <= col[i] + width[i]) & (col[i] <= col[j] + width[j])
                     & (row[j] <= row[i] + height[i]) & (row[i] <= row[j] + height[j]))
            first.append(i[touch])
            second.append(j[touch])
    if not first:
        return empty, empty
    return np.concatenate(first), np.concatenate(second)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label (0..k-1) of each of ``n`` nodes joined by edges (a, b): a union-find
    done with array operations (hook each root to the smaller root across an edge, then pointer-jump)."""
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while True:
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        a, b, pa, pb = a[differ], b[differ], pa[differ], pb[differ]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))
    _, labels = np.unique(parent, return_inverse=True)
    return labels


def _groups(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, sizes, starts): members of label L are order[starts[L]:starts[L] + sizes[L]]."""
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=n)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return order, sizes, starts


# -- geometry ---------------------------------------------------------------------------------
def _srs(wkt: str):
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _transform(geoms: np.ndarray, src_wkt: str, dst_wkt: str) -> np.ndarray:
    """Shapely geometries from one CRS to another (GDAL/PROJ), all vertices in one call."""
    import shapely
    from osgeo import osr

    if src_wkt == dst_wkt or not len(geoms):
        return geoms
    ct = osr.CoordinateTransformation(_srs(src_wkt), _srs(dst_wkt))

    def move(points: np.ndarray) -> np.ndarray:
        if not len(points):
            return points
        out = np.asarray(ct.TransformPoints(np.ascontiguousarray(points, dtype=np.float64)), dtype=np.float64)
        return out[:, :2]

    with gdal_errors() as errors:
        moved = shapely.transform(geoms, move)
        errors.check()  # a point PROJ could not transform
        return moved


def _pixel_to_crs(geoms: np.ndarray, affines: np.ndarray) -> np.ndarray:
    """Pixel-space geometries into their rasters' CRS; ``affines`` is one (a, b, c, d, e, f) row per geometry."""
    import shapely

    if not len(geoms):
        return geoms
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    a, b, c, d, e, f = (affines[index, i] for i in range(6))
    moved = np.column_stack([a + coords[:, 0] * b + coords[:, 1] * c, d + coords[:, 0] * e + coords[:, 1] * f])
    return shapely.set_coordinates(geoms.copy(), moved)


def _to_crs(matrix: IndexMatrix, pixel: np.ndarray, raster_of: np.ndarray, crs_wkt: str) -> np.ndarray:
    """Pixel-space geometries of rasters ``raster_of`` into ``crs_wkt``."""
    present, index = np.unique(raster_of, return_inverse=True)
    geo = [matrix.rasters[int(r)] for r in present.tolist()]
    affines = np.array([g.affine for g in geo], dtype=np.float64).reshape(-1, 6)
    out = _pixel_to_crs(pixel, affines[index])
    for other in {g.crs_wkt for g in geo} - {crs_wkt}:
        part = np.flatnonzero(np.isin(index, [i for i, g in enumerate(geo) if g.crs_wkt == other]))
        out[part] = _transform(out[part], other, crs_wkt)
    return out


def tile_polygons(matrix: IndexMatrix, rows: np.ndarray, crs_wkt: str) -> np.ndarray:
    """Footprint polygons of matrix rows, in ``crs_wkt`` (from their windows and their raster's affine)."""
    import shapely

    rows = np.asarray(rows, dtype=np.int64)
    w = matrix.windows[rows]
    boxes = shapely.box(w[:, 0], w[:, 1], w[:, 0] + w[:, 2], w[:, 1] + w[:, 3])
    return _to_crs(matrix, boxes, matrix.raster_ids[rows], crs_wkt)


def _union_by_label(boxes: np.ndarray, labels: np.ndarray, n: int, overlapping: np.ndarray) -> np.ndarray:
    """The union of the boxes of each label. Labels of similar size are unioned together as the rows of
    a padded array (one GEOS call each); a coverage union where no two boxes overlap, else a full one."""
    import shapely

    order, sizes, starts = _groups(labels, n)
    out = np.empty(n, dtype=object)
    single = np.flatnonzero(sizes == 1)
    out[single] = boxes[order[starts[single]]]
    sorted_labels = labels[order]
    position = np.arange(len(order)) - starts[sorted_labels]
    low = 1
    for high in _SIZE_CLASSES:
        for overlap in (False, True):
            chosen = (sizes > low) & (sizes <= high) & (overlapping == overlap)
            if not chosen.any():
                continue
            ids = np.flatnonzero(chosen)
            member = chosen[sorted_labels]
            grid = np.full((len(ids), high), None, dtype=object)
            grid[np.searchsorted(ids, sorted_labels[member]), position[member]] = boxes[order[member]]
            out[ids] = (shapely.union_all if overlap else shapely.coverage_union_all)(grid, axis=1)
        low = high
    for lab in np.flatnonzero(sizes > low):
        members = boxes[order[starts[lab]:starts[lab] + sizes[lab]]]
        out[lab] = shapely.union_all(members) if overlapping[lab] else shapely.coverage_union_all(members)
    return out


def ground_area_m2(geoms: np.ndarray, crs_wkt: str, groups: np.ndarray | None = None) -> np.ndarray:
    """Ground area in m² of geometries in ``crs_wkt`` (see the module docstring).

    Geographic CRS: the planar area in degrees² times the lengths of a degree of latitude and of
    longitude on the WGS84 ellipsoid at each geometry's latitude. Projected CRS: the planar area
    times the projection's areal scale at the centre of each group (raster) of geometries, from a
    small square there taken to latitude/longitude (one transformation for all groups).
    """
    import shapely

    if not len(geoms):
        return np.zeros(0)
    planar = shapely.area(geoms)
    bounds = shapely.bounds(geoms)
    if _srs(crs_wkt).IsGeographic():
        return planar * _m2_per_degree2(np.radians(0.5 * (bounds[:, 1] + bounds[:, 3])))
    groups = np.zeros(len(geoms), np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    keys, index = np.unique(groups, return_inverse=True)
    cx = np.zeros(len(keys))
    cy = np.zeros(len(keys))
    span = np.zeros(len(keys))
    for k in range(len(keys)):  # one bounding box per group (raster): a handful of groups
        part = bounds[index == k]
        x0, y0, x1, y1 = part[:, 0].min(), part[:, 1].min(), part[:, 2].max(), part[:, 3].max()
        cx[k], cy[k], span[k] = 0.5 * (x0 + x1), 0.5 * (y0 + y1), max(x1 - x0, y1 - y0)
    side = np.maximum(span * 0.01, 1e-6 * np.maximum(np.abs(cx), np.abs(cy)) + 1e-9)
    corners = np.stack([np.column_stack([cx + dx * side, cy + dy * side])
                        for dx, dy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))], axis=1)
    lonlat = _to_wgs84(corners.reshape(-1, 2), crs_wkt).reshape(-1, 4, 2)
    x, y = lonlat[:, :, 0], lonlat[:, :, 1]
    degree2 = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))
    scale = degree2 * _m2_per_degree2(np.radians(y.mean(axis=1))) / side ** 2
    return planar * scale[index]


def _m2_per_degree2(lat: np.ndarray) -> np.ndarray:
    """Square metres in one degree of latitude times one of longitude at latitude ``lat`` (radians), WGS84."""
    a, e2 = 6378137.0, 6.69437999014e-3
    w = np.sqrt(1 - e2 * np.sin(lat) ** 2)
    meridian = a * (1 - e2) / w ** 3 * math.pi / 180
    parallel = a / w * np.cos(lat) * math.pi / 180
    return meridian * parallel


def _to_wgs84(points: np.ndarray, crs_wkt: str) -> np.ndarray:
    from osgeo import osr

    ct = osr.CoordinateTransformation(_srs(crs_wkt), _srs(WGS84_WKT))
    with gdal_errors() as errors:
        out = np.asarray(ct.TransformPoints(np.ascontiguousarray(points, dtype=np.float64)), dtype=np.float64)[:, :2]
        errors.check()
        return out


def _majority_crs(matrix: IndexMatrix, rows: np.ndarray) -> str:
    per_crs: Counter = Counter()
    ids, n = np.unique(matrix.raster_ids[rows], return_counts=True)
    for rid, count in zip(ids.tolist(), n.tolist()):
        per_crs[matrix.rasters[rid].crs_wkt] += count
    return per_crs.most_common(1)[0][0] if per_crs else ""


# -- areas ------------------------------------------------------------------------------------
def make_areas(matrix: IndexMatrix, scores: np.ndarray, threshold: float, crs_wkt: str | None = None) -> AreasResult:
    """Dissolve the tiles scoring at or above ``threshold`` into areas (see the module docstring).

    ``crs_wkt``: the CRS of the outlines; by default the one most of those tiles are in.
    A threshold outside the scores is refused with one sentence.
    """
    import shapely

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    threshold = check_threshold(scores, threshold)
    rows = np.flatnonzero(scores >= threshold)
    crs_wkt = crs_wkt or _majority_crs(matrix, rows)
    rids = matrix.raster_ids[rows]
    windows = matrix.windows[rows]
    # 1. connected tiles within each raster, from the windows
    a, b = touching_pairs(windows, rids)
    labels = components(len(rows), a, b)
    n = int(labels.max()) + 1 if len(labels) else 0
    wa, wb = windows[a], windows[b]
    inner = ((np.minimum(wa[:, 0] + wa[:, 2], wb[:, 0] + wb[:, 2]) > np.maximum(wa[:, 0], wb[:, 0]))
             & (np.minimum(wa[:, 1] + wa[:, 3], wb[:, 1] + wb[:, 3]) > np.maximum(wa[:, 1], wb[:, 1])))
    overlapping = np.zeros(n, bool)
    overlapping[labels[a[inner]]] = True
    timings["connect_s"] = time.perf_counter() - t0
    # 2. outlines: the union of each component's pixel boxes, into the output CRS
    t1 = time.perf_counter()
    boxes = shapely.box(windows[:, 0], windows[:, 1], windows[:, 0] + windows[:, 2], windows[:, 1] + windows[:, 3])
    component_raster = np.zeros(n, np.int64)
    component_raster[labels] = rids
    outlines = _to_crs(matrix, _union_by_label(boxes, labels, n, overlapping), component_raster, crs_wkt)
    # 3. components of different rasters that touch or overlap are one place
    place = np.arange(n)
    if len(np.unique(component_raster)) > 1:
        left, right = shapely.STRtree(outlines).query(outlines, predicate="intersects")
        keep = (left < right) & (component_raster[left] != component_raster[right])
        if keep.any():
            place = components(n, left[keep], right[keep])
    m = int(place.max()) + 1 if n else 0
    if m < n:
        p_order, p_sizes, p_starts = _groups(place, m)
        merged = np.empty(m, dtype=object)
        for p in range(m):
            parts = p_order[p_starts[p]:p_starts[p] + p_sizes[p]]
            merged[p] = outlines[parts[0]] if len(parts) == 1 else shapely.union_all(outlines[parts])
        outlines = merged
    tile_place = place[labels]
    timings["outline_s"] = time.perf_counter() - t1
    # 4. sizes and scores, biggest first
    t2 = time.perf_counter()
    first_raster = np.zeros(m, np.int64)
    first_raster[place] = component_raster
    m2 = ground_area_m2(outlines, crs_wkt, first_raster)
    s = scores[rows].astype(np.float64)
    count = np.bincount(tile_place, minlength=m)
    mean = np.bincount(tile_place, weights=s, minlength=m) / np.maximum(count, 1)
    best = np.full(m, -np.inf)
    np.maximum.at(best, tile_place, s)
    rank = np.lexsort((-best, -m2))                 # biggest first, then best score
    area_id = np.empty(m, np.int64)
    area_id[rank] = np.arange(1, m + 1)
    base = int(rids.max()) + 1 if len(rids) else 1
    names: dict[int, list[str]] = {}
    for code in np.unique(tile_place * base + rids).tolist():
        p, r = divmod(code, base)
        names.setdefault(p, []).append(matrix.rasters[r].path)
    order, _, starts = _groups(tile_place, m)
    members = np.split(rows[order], starts[1:])
    ids, best_l, mean_l, m2_l = area_id.tolist(), best.tolist(), mean.tolist(), m2.tolist()
    areas = [Area(ids[p], members[p], best_l[p], mean_l[p], m2_l[p], tuple(sorted(names[p])), outlines[p])
             for p in rank.tolist()]
    timings["measure_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return AreasResult(float(threshold), crs_wkt, areas, rows, area_id[tile_place] if m else np.zeros(0, np.int64),
                       timings)


# -- GeoPackage -------------------------------------------------------------------------------
def check_gpkg_path(path: str | Path) -> Path:
    path = Path(path).expanduser().resolve()
    if path.suffix.lower() != ".gpkg":
        raise EngineError(f"The output {path.name} must be a .gpkg file.")
    if not path.parent.is_dir():
        raise EngineError(f"The folder {path.parent} for the output does not exist.")
    return path


def write_layers_gpkg(path: str | Path, layers: Sequence[tuple], metadata: dict | None = None) -> Path:
    """Write several layers into a new GeoPackage, atomically (a temporary file renamed into place).

    Each layer is ``(name, geometry type ("polygon"/"multipolygon"), crs_wkt, fields, rows,
    description)`` where rows are ``(values dict, WKT)``. ``metadata`` goes into every layer's
    GDAL metadata (key → text), readable by QGIS and ``ogrinfo``.
    """
    from osgeo import ogr

    path = check_gpkg_path(path)
    tmp = path.with_name(f".{path.stem}.tmp.gpkg")
    driver = ogr.GetDriverByName("GPKG")
    ogr_types = {"int": ogr.OFTInteger64, "real": ogr.OFTReal, "str": ogr.OFTString}
    geom_types = {"polygon": ogr.wkbPolygon, "multipolygon": ogr.wkbMultiPolygon}
    with gdal_errors() as errors:
        try:
            if tmp.exists():
                errors.check(driver.DeleteDataSource(str(tmp)))
            ds = errors.check(driver.CreateDataSource(str(tmp)))
            for name, gtype, crs_wkt, fields, rows, description in layers:
                srs = _srs(crs_wkt) if crs_wkt else None
                lyr = errors.check(ds.CreateLayer(name, srs, geom_types[gtype], options=[f"DESCRIPTION={description}"]))
                for fname, kind in fields:
                    errors.check(lyr.CreateField(ogr.FieldDefn(fname, ogr_types[kind])))
                for key, value in (metadata or {}).items():
                    errors.check(lyr.SetMetadataItem(key, str(value)))
                defn = lyr.GetLayerDefn()
                errors.check(lyr.StartTransaction())
                for values, wkt in rows:
                    feat = ogr.Feature(defn)
                    for fname, _ in fields:
                        value = values[fname]
                        if value is not None:
                            feat.SetField(fname, value)
                    geom = errors.check(ogr.CreateGeometryFromWkt(wkt))
                    if gtype == "multipolygon":
                        geom = ogr.ForceToMultiPolygon(geom)
                    feat.SetGeometry(geom)
                    errors.check(lyr.CreateFeature(feat))
                    feat = None
                errors.check(lyr.CommitTransaction())
                lyr = defn = None
            ds = None
            errors.check()  # what closing the file reported (a full disk)
        except RuntimeError as exc:
            ds = None
            if tmp.exists():
                tmp.unlink()
            raise EngineError(f"Cannot write {path}: {exc}.") from None
    os.replace(tmp, path)
    return path
