"""From tiles to places: the tiles above a score threshold, dissolved into areas.

Rule: two tiles above the threshold belong to the same area when their footprints touch (an
edge or a corner) or overlap. Within a raster this is decided on the pixel windows (closed
intervals in both axes), with a sort-and-search over the windows' grid positions and a
union-find, never by intersecting polygons; areas of different rasters (a mosaic, or several
dates of one place) whose outlines touch or overlap are then merged too.

Each area reports its tile count, its best and mean tile score and its area on the ground in m²
and ha. The area is that of the union of its tiles' footprints, so overlapping tiles (tiles cut
with overlap, or two dates of one place) are never counted twice; it is measured in a Lambert
azimuthal equal-area projection centred on the result, i.e. true ellipsoidal area whatever the
rasters' CRS (degrees included). Shapely is used only to draw each area's outline.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EngineError
from .gdalutil import gdal_exceptions
from .scoring import IndexMatrix, check_threshold

AREA_FIELDS = (("area_id", "int"), ("tiles", "int"), ("best_score", "real"), ("mean_score", "real"),
               ("area_m2", "real"), ("area_ha", "real"), ("rasters", "str"), ("concept", "str"), ("query", "str"),
               ("negative", "str"), ("method", "str"), ("examples", "int"), ("accepted", "int"), ("rejected", "int"),
               ("marks", "int"), ("threshold", "real"))
AREA_TILE_FIELDS = (("tile_id", "int"), ("score", "real"), ("area_id", "int"), ("verdict", "str"), ("raster", "str"),
                    ("concept", "str"))


@dataclass(frozen=True)
class Area:
    """One place: its tiles (matrix rows), scores, size on the ground and outline (WKT in the result's CRS)."""

    id: int
    rows: np.ndarray
    best_score: float
    mean_score: float
    area_m2: float
    rasters: tuple[str, ...]
    outline_wkt: str

    @property
    def tiles(self) -> int:
        return int(len(self.rows))

    @property
    def area_ha(self) -> float:
        return self.area_m2 / 10_000.0


@dataclass
class AreasResult:
    """The areas above ``threshold``, biggest first, and each selected tile's area (1-based ids)."""

    threshold: float
    crs_wkt: str
    areas: list[Area]
    tile_rows: np.ndarray          # rows of the tiles at or above the threshold
    tile_area: np.ndarray          # area id of each of those rows
    timings: dict = field(default_factory=dict)

    def area_of_row(self) -> dict[int, int]:
        return dict(zip(self.tile_rows.tolist(), self.tile_area.tolist()))

    @property
    def total_m2(self) -> float:
        return float(sum(a.area_m2 for a in self.areas))


# -- connectivity -----------------------------------------------------------------------------
def touching_pairs(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of pixel windows (col, row, width, height) that touch or overlap.

    Windows are ranked by their distinct column and row offsets; a window can only touch those
    a few ranks away (one for edge-to-edge tiles, more with overlap), so each rank offset is one
    vectorised look-up in the sorted grid keys, checked exactly on the intervals afterwards.
    """
    k = len(windows)
    if k < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    col, row, width, height = (windows[:, i] for i in range(4))
    ucol, urow = np.unique(col), np.unique(row)
    ci, ri = np.searchsorted(ucol, col), np.searchsorted(urow, row)
    span_c = int((np.searchsorted(ucol, col + width, side="right") - 1 - ci).max())
    span_r = int((np.searchsorted(urow, row + height, side="right") - 1 - ri).max())
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
            pos = np.searchsorted(skey, target)
            pos = np.minimum(pos, k - 1)
            hit = skey[pos] == target
            # several windows can share a grid key only if they share both offsets (same window twice)
            i, j = ok[hit], order[pos[hit]]
            touch = ((col[j] <= col[i] + width[i]) & (col[i] <= col[j] + width[j])
                     & (row[j] <= row[i] + height[i]) & (row[i] <= row[j] + height[j]))
            first.append(i[touch])
            second.append(j[touch])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
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

    with gdal_exceptions():
        return shapely.transform(geoms, move)


def _pixel_to_crs(geoms: np.ndarray, affine: Sequence[float]) -> np.ndarray:
    import shapely

    a, b, c, d, e, f = affine
    matrix = np.array([[b, e], [c, f]])
    offset = np.array([a, d])
    return shapely.transform(geoms, lambda pts: pts @ matrix + offset)


def tile_polygons(matrix: IndexMatrix, rows: np.ndarray, crs_wkt: str) -> np.ndarray:
    """Footprint polygons of matrix rows, in ``crs_wkt`` (from their windows and their raster's affine)."""
    import shapely

    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=object)
    rids = matrix.raster_ids[rows]
    for rid in np.unique(rids):
        part = np.flatnonzero(rids == rid)
        geo = matrix.rasters[int(rid)]
        w = matrix.windows[rows[part]]
        boxes = shapely.box(w[:, 0], w[:, 1], w[:, 0] + w[:, 2], w[:, 1] + w[:, 3])
        out[part] = _transform(_pixel_to_crs(boxes, geo.affine), geo.crs_wkt, crs_wkt)
    return out


def equal_area_m2(geoms: np.ndarray, crs_wkt: str) -> np.ndarray:
    """Ground area in m² of each geometry: measured in a Lambert azimuthal equal-area projection
    (WGS84 ellipsoid) centred on the geometries, so the CRS's own scale distortion does not count."""
    import shapely

    if not len(geoms):
        return np.zeros(0)
    wgs84 = 'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],' \
            'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]'
    bounds = shapely.bounds(geoms)
    centre = shapely.points(0.5 * (bounds[:, 0].min() + bounds[:, 2].max()), 0.5 * (bounds[:, 1].min() + bounds[:, 3].max()))
    lon, lat = shapely.get_coordinates(_transform(np.array([centre], dtype=object), crs_wkt, wgs84))[0]
    from osgeo import osr

    laea = osr.SpatialReference()
    laea.ImportFromProj4(f"+proj=laea +lat_0={lat:.8f} +lon_0={lon:.8f} +datum=WGS84 +units=m +no_defs")
    return shapely.area(_transform(geoms, crs_wkt, laea.ExportToWkt()))


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
    # 1. components within each raster, from the windows
    labels = np.empty(len(rows), np.int64)
    rids = matrix.raster_ids[rows]
    next_label = 0
    overlapping: set[int] = set()  # components with overlapping tiles (the others are coverages: faster union)
    for rid in np.unique(rids):
        part = np.flatnonzero(rids == rid)
        windows = matrix.windows[rows[part]]
        a, b = touching_pairs(windows)
        lab = components(len(part), a, b)
        labels[part] = lab + next_label
        wa, wb = windows[a], windows[b]
        inner = ((np.minimum(wa[:, 0] + wa[:, 2], wb[:, 0] + wb[:, 2]) > np.maximum(wa[:, 0], wb[:, 0]))
                 & (np.minimum(wa[:, 1] + wa[:, 3], wb[:, 1] + wb[:, 3]) > np.maximum(wa[:, 1], wb[:, 1])))
        overlapping.update((lab[a[inner]] + next_label).tolist())
        next_label += int(lab.max()) + 1 if len(lab) else 0
    timings["connect_s"] = time.perf_counter() - t0
    # 2. each component's outline: the union of its pixel boxes, moved into the output CRS
    t1 = time.perf_counter()
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    groups = np.split(order, starts[1:]) if len(order) else []
    outlines = np.empty(len(groups), dtype=object)
    group_raster = np.empty(len(groups), np.int64)
    for gi, group in enumerate(groups):
        group_raster[gi] = rids[group[0]]
    by_raster: dict[int, list[int]] = {}
    for gi in range(len(groups)):
        by_raster.setdefault(int(group_raster[gi]), []).append(gi)
    for rid, gis in by_raster.items():
        geo = matrix.rasters[rid]
        pixel = np.empty(len(gis), dtype=object)
        for n, gi in enumerate(gis):
            group = groups[gi]
            w = matrix.windows[rows[group]]
            boxes = shapely.box(w[:, 0], w[:, 1], w[:, 0] + w[:, 2], w[:, 1] + w[:, 3])
            if len(boxes) == 1:
                pixel[n] = boxes[0]
            elif int(labels[group[0]]) in overlapping:
                pixel[n] = shapely.union_all(boxes)
            else:
                pixel[n] = shapely.coverage_union_all(boxes)
        outlines[gis] = _transform(_pixel_to_crs(pixel, geo.affine), geo.crs_wkt, crs_wkt)
    # 3. components of different rasters that touch or overlap are one place
    if len(by_raster) > 1 and len(outlines) > 1:
        tree = shapely.STRtree(outlines)
        left, right = tree.query(outlines, predicate="intersects")
        keep = (left < right) & (group_raster[left] != group_raster[right])
        merged = components(len(outlines), left[keep], right[keep])
    else:
        merged = np.arange(len(outlines))
    final_outlines, final_members = [], []
    for m in range(int(merged.max()) + 1 if len(merged) else 0):
        parts = np.flatnonzero(merged == m) if len(by_raster) > 1 else np.array([m])
        final_members.append(np.concatenate([groups[p] for p in parts]))
        final_outlines.append(outlines[parts[0]] if len(parts) == 1 else shapely.union_all(outlines[parts]))
    timings["outline_s"] = time.perf_counter() - t1
    # 4. sizes and scores; biggest first
    t2 = time.perf_counter()
    geoms = np.array(final_outlines, dtype=object) if final_outlines else np.empty(0, dtype=object)
    m2 = equal_area_m2(geoms, crs_wkt)
    areas = []
    for members, geom, size in zip(final_members, geoms, m2):
        member_rows = rows[members]
        s = scores[member_rows]
        names = tuple(sorted({matrix.rasters[int(r)].path for r in np.unique(matrix.raster_ids[member_rows])}))
        areas.append((float(size), member_rows, float(s.max()), float(s.mean()), names, geom))
    areas.sort(key=lambda a: (-a[0], -a[2]))
    result_areas, tile_area = [], np.empty(len(rows), np.int64)
    for n, (size, member_rows, best, mean, names, geom) in enumerate(areas, start=1):
        result_areas.append(Area(n, np.sort(member_rows), best, mean, size, names,
                                 shapely.to_wkt(geom, rounding_precision=-1)))
        tile_area[np.searchsorted(rows, member_rows)] = n  # rows is ascending
    timings["measure_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return AreasResult(float(threshold), crs_wkt, result_areas, rows, tile_area, timings)


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
    if tmp.exists():
        driver.DeleteDataSource(str(tmp))
    with gdal_exceptions():
        try:
            ds = driver.CreateDataSource(str(tmp))
            for name, gtype, crs_wkt, fields, rows, description in layers:
                srs = _srs(crs_wkt) if crs_wkt else None
                lyr = ds.CreateLayer(name, srs, geom_types[gtype], options=[f"DESCRIPTION={description}"])
                for fname, kind in fields:
                    lyr.CreateField(ogr.FieldDefn(fname, ogr_types[kind]))
                for key, value in (metadata or {}).items():
                    lyr.SetMetadataItem(key, str(value))
                defn = lyr.GetLayerDefn()
                lyr.StartTransaction()
                for values, wkt in rows:
                    feat = ogr.Feature(defn)
                    for fname, _ in fields:
                        value = values[fname]
                        if value is not None:
                            feat.SetField(fname, value)
                    geom = ogr.CreateGeometryFromWkt(wkt)
                    if gtype == "multipolygon":
                        geom = ogr.ForceToMultiPolygon(geom)
                    feat.SetGeometry(geom)
                    lyr.CreateFeature(feat)
                    feat = None
                lyr.CommitTransaction()
                lyr = defn = None
            ds = None
        except RuntimeError as exc:
            ds = None
            if tmp.exists():
                tmp.unlink()
            raise EngineError(f"Cannot write {path}: {exc}.") from None
    os.replace(tmp, path)
    return path
