"""Tile footprints from numbers: a pixel window and its raster's geotransform, never stored text.

An index stores each raster's GDAL geotransform once and each tile's pixel window; a tile's
polygon in the raster's CRS (its four corners through the full affine, rotation terms
included), its polygon in WGS84 (those corners through PROJ) and its bounds are computed
here, for one tile or for thousands in one NumPy/PROJ call. The WKT is written exactly as the
tiler always wrote it (``POLYGON ((x y, …))`` with ``repr`` of each coordinate), so a footprint
computed today equals the one stored by earlier versions.
"""
from __future__ import annotations

import json
import math
import threading
from typing import Any, Sequence

import numpy as np

#: (a, b, c, d, e, f): x = a + col·b + row·c, y = d + col·e + row·f (GDAL's geotransform order).
Affine = tuple[float, float, float, float, float, float]

#: Corner order of every footprint: top-left, top-right, bottom-right, bottom-left (clockwise on a north-up map).
_CORNERS = ((0, 0), (1, 0), (1, 1), (0, 1))


def parse_transform(text: object) -> Affine | None:
    """A stored geotransform (JSON list of six numbers), or None when it is missing or not a usable affine."""
    if not isinstance(text, str):
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != 6 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    gt = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in gt) or gt[1] * gt[5] - gt[2] * gt[4] == 0:
        return None
    return gt  # type: ignore[return-value]


def transform_text(gt: Sequence[float]) -> str:
    """The stored form of a geotransform."""
    return json.dumps([float(v) for v in gt])


def corners(gt: Affine, windows: np.ndarray) -> np.ndarray:
    """(n, 4, 2) corners in the raster CRS of (n, 4) windows (col_off, row_off, width, height)."""
    w = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(w), 4, 2), dtype=np.float64)
    for k, (dc, dr) in enumerate(_CORNERS):
        c = w[:, 0] + dc * w[:, 2]
        r = w[:, 1] + dr * w[:, 3]
        out[:, k, 0] = gt[0] + c * gt[1] + r * gt[2]
        out[:, k, 1] = gt[3] + c * gt[4] + r * gt[5]
    return out


def window_corners(gt: Sequence[float], window: Sequence[int]) -> list[tuple[float, float]]:
    """The four corners of one window in the raster CRS, computed exactly as ``corners`` does (plain floats)."""
    c0, r0, width, height = window
    return [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5])
            for c, r in ((c0 + dc * width, r0 + dr * height) for dc, dr in _CORNERS)]


def polygon_wkt(points: Sequence[Sequence[float]]) -> str:
    """A closed polygon of four corners, as the tiler writes it."""
    ring = [(float(x), float(y)) for x, y in points]
    ring.append(ring[0])
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


def bounds_of(points: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def affine_from_footprint(footprint_wkt: str, window: Sequence[float]) -> Affine:
    """A raster's pixel → CRS affine recovered from one tile's footprint polygon and its window.

    The footprint's corners are the window's, clockwise from top-left (as ``corners`` makes them).
    """
    inner = footprint_wkt[footprint_wkt.index("((") + 2: footprint_wkt.index(")")]
    pts = [tuple(float(v) for v in p.split()[:2]) for p in inner.split(",")]
    (x0, y0), (x1, y1), _, (x3, y3) = pts[:4]
    col, row, w, h = (float(v) for v in window)
    b, e = (x1 - x0) / w, (y1 - y0) / w
    c, f = (x3 - x0) / h, (y3 - y0) / h
    return (x0 - col * b - row * c, b, c, y0 - col * e - row * f, e, f)


def wkt_bounds(wkt: object) -> tuple[float, float, float, float] | None:
    """(min x, min y, max x, max y) of a polygon WKT's coordinates, or None when it does not parse."""
    if not isinstance(wkt, str) or "((" not in wkt:
        return None
    try:
        inner = wkt[wkt.index("((") + 2: wkt.index(")")]
        pts = [tuple(float(v) for v in p.split()[:2]) for p in inner.split(",")]
        box = bounds_of(pts)
    except (ValueError, IndexError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


class ToWgs84:
    """Points of one CRS to WGS84 longitude/latitude, in batches; safe to share between threads.

    PROJ transformations are not thread-safe, so calls are serialised; the transformation is
    made on first use. Points that cannot be converted come back as NaN.
    """

    def __init__(self, crs_wkt: str) -> None:
        self.crs_wkt = crs_wkt
        self._lock = threading.Lock()
        self._ct: Any = None
        self._failed = False

    def _transformation(self) -> Any:
        from osgeo import osr

        from .tiling import _quiet_gdal

        if self._ct is None and not self._failed:
            src, dst = osr.SpatialReference(), osr.SpatialReference()
            with _quiet_gdal():
                ok = bool(self.crs_wkt) and src.ImportFromWkt(self.crs_wkt) == 0
                dst.ImportFromEPSG(4326)
                for srs in (src, dst):
                    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
                try:
                    self._ct = osr.CreateCoordinateTransformation(src, dst) if ok else None
                except RuntimeError:
                    self._ct = None
            self._failed = self._ct is None
        return self._ct

    def available(self) -> bool:
        """Whether this CRS converts to WGS84 at all."""
        with self._lock:
            return self._transformation() is not None

    def points(self, xy: np.ndarray) -> np.ndarray:
        """(m, 2) lon/lat of (m, 2) points; NaN where the conversion fails."""
        from .tiling import _quiet_gdal

        xy = np.ascontiguousarray(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
        out = np.full(xy.shape, np.nan)
        if not len(xy):
            return out
        with self._lock:
            ct = self._transformation()
            if ct is None:
                return out
            with _quiet_gdal():
                try:
                    got = np.asarray(ct.TransformPoints(xy), dtype=np.float64)
                except (RuntimeError, TypeError):
                    return out
        if got.shape[0] == len(xy):
            out = got[:, :2].copy()
            out[~np.isfinite(out).all(axis=1)] = np.nan
        return out


class RasterGeometry:
    """Where one raster's tiles lie: its CRS and geotransform, with the WGS84 conversion made once."""

    def __init__(self, crs_wkt: str, transform: Affine | None) -> None:
        self.crs_wkt = crs_wkt
        self.transform = transform
        self._wgs84 = ToWgs84(crs_wkt)

    @property
    def valid(self) -> bool:
        return self.transform is not None

    @property
    def placeable(self) -> bool:
        """Whether its tiles can be placed in WGS84: a usable geotransform and a CRS PROJ converts from."""
        return self.transform is not None and self._wgs84.available()

    def native_wkt(self, window: Sequence[int]) -> str:
        """The window's polygon in the raster CRS; "" when the geotransform is damaged."""
        if self.transform is None:
            return ""
        return polygon_wkt(window_corners(self.transform, window))

    def native_bounds(self, window: Sequence[int]) -> tuple[float, float, float, float]:
        if self.transform is None:
            return (math.nan, math.nan, math.nan, math.nan)
        return bounds_of(window_corners(self.transform, window))

    def wgs84_corners(self, windows: np.ndarray) -> np.ndarray:
        """(n, 4, 2) lon/lat corners of (n, 4) windows; NaN rows where they cannot be placed."""
        w = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
        if self.transform is None:
            return np.full((len(w), 4, 2), np.nan)
        return self._wgs84.points(corners(self.transform, w).reshape(-1, 2)).reshape(-1, 4, 2)

    def wgs84_wkt(self, window: Sequence[int]) -> str:
        """The window's polygon in WGS84 (lon, lat); "" when it cannot be placed."""
        if self.transform is None:
            return ""
        native = np.asarray(window_corners(self.transform, window), dtype=np.float64)
        lonlat = self._wgs84.points(native)
        if not np.isfinite(lonlat).all():
            return ""
        return polygon_wkt(lonlat.tolist())

    def wgs84_bounds(self, windows: np.ndarray) -> np.ndarray:
        """(n, 4) min lon, min lat, max lon, max lat of (n, 4) windows (NaN where they cannot be placed)."""
        c = self.wgs84_corners(windows)
        return np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1)
