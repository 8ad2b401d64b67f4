"""Cut any raster GDAL reads into georeferenced tiles, shaped like torchgeo's GridGeoSampler.

Tiles are read window by window (resampled on read to a fixed ``read_size``), so memory does
not grow with the raster. Non-8-bit data is stretched with per-band percentiles computed once
from one decimated read. GDAL (not rasterio) is used because inside QGIS it is the same
library QGIS already links; a second libgdal in the process risks clashes.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import EngineError
from .gdalutil import gdal_exceptions
from .progress import CancelFn, ProgressFn, check_cancel

_WGS84_WKT = None


@dataclass(frozen=True)
class TilingSpec:
    """Tile size in pixels or ground metres, overlap fraction, bands, and nodata tolerance."""

    size: float = 224.0
    units: str = "px"
    overlap: float = 0.0
    bands: tuple[int, ...] | None = None
    max_nodata: float = 0.5
    read_size: int = 224

    def validate(self) -> "TilingSpec":
        if self.units not in ("px", "m"):
            raise EngineError(f"Tile units must be 'px' or 'm', not {self.units!r}.")
        if not self.size > 0 or not math.isfinite(self.size):
            raise EngineError(f"The tile size must be a positive number, not {self.size}.")
        if not 0.0 <= self.overlap <= 0.9:
            raise EngineError(f"The overlap must be a fraction between 0 and 0.9, not {self.overlap}.")
        if self.bands is not None and (len(self.bands) not in (1, 3) or min(self.bands) < 1):
            raise EngineError("Bands must be one band (grey) or three (R,G,B), counted from 1.")
        if not 0.0 <= self.max_nodata <= 1.0:
            raise EngineError("The nodata tolerance must be between 0 and 1.")
        if self.read_size < 8:
            raise EngineError("The tile read size must be at least 8 pixels.")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bands"] = list(self.bands) if self.bands else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TilingSpec":
        known = {k: d[k] for k in ("size", "units", "overlap", "max_nodata", "read_size") if k in d}
        bands = d.get("bands")
        return cls(bands=tuple(int(b) for b in bands) if bands else None, **known)


@dataclass(frozen=True)
class TileWindow:
    col_off: int
    row_off: int
    width: int
    height: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True)
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    dtype: str
    crs_wkt: str
    transform: tuple[float, ...]
    bands: tuple[int, int, int]
    nodata: tuple[float | None, ...]
    fingerprint: str


@dataclass(frozen=True)
class Tile:
    """A tile's place: its pixel window and its footprint in the raster's CRS and in WGS84."""

    raster: str
    window: TileWindow
    footprint_wkt: str
    footprint_wgs84_wkt: str
    bounds: tuple[float, float, float, float]


def raster_fingerprint(path: str | Path) -> str:
    """Cheap identity of a raster file: size, mtime and its first and last MiB.

    Hashing whole rasters would cost as much as reading them; this catches any rewrite
    (mtime/size) and most in-place edits, so an unchanged raster is skipped on re-index and a
    changed one is re-indexed.
    """
    path = Path(path)
    st = path.stat()
    digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        if st.st_size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()


def _open_dataset(path: str):
    from osgeo import gdal

    name = Path(path).name
    if not Path(path).exists():
        raise EngineError(f"{path} does not exist.")
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise EngineError(f"{name} is an empty file, not a raster.")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        gdal.ErrorReset()
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
        reason = gdal.GetLastErrorMsg().strip()
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise EngineError(f"{name} is not a raster GDAL can read ({reason or 'unknown format'}).")
    if ds.RasterCount == 0:
        raise EngineError(f"{name} is not a raster GDAL can read (it has no raster bands).")
    return ds


def choose_bands(ds, requested: tuple[int, ...] | None) -> tuple[int, int, int]:
    """R,G,B band numbers: as asked; else by colour interpretation; else the first three.

    One band is shown as grey (replicated three times); a 2-band raster uses its first
    non-alpha band as grey.
    """
    from osgeo import gdal

    count = ds.RasterCount
    if requested:
        bad = [b for b in requested if b > count]
        if bad:
            raise EngineError(f"{Path(ds.GetDescription()).name} has {count} band(s); band {bad[0]} does not exist.")
        return tuple(requested) * 3 if len(requested) == 1 else tuple(requested)  # type: ignore[return-value]
    interp = {ds.GetRasterBand(i).GetColorInterpretation(): i for i in range(count, 0, -1)}
    rgb = [interp.get(c) for c in (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)]
    if all(rgb):
        return tuple(rgb)  # type: ignore[return-value]
    if count >= 3:
        return (1, 2, 3)
    grey = next((i for i in range(1, count + 1)
                 if ds.GetRasterBand(i).GetColorInterpretation() != gdal.GCI_AlphaBand), 1)
    return (grey, grey, grey)


def open_raster(path: str | Path, spec: TilingSpec) -> RasterInfo:
    """Check a raster can be tiled and describe it; problems raise ``EngineError``."""
    path = str(Path(path).expanduser().resolve())
    name = Path(path).name
    ds = _open_dataset(path)
    if ds.RasterXSize < 1 or ds.RasterYSize < 1:
        raise EngineError(f"{name} has no pixels.")
    crs_wkt = ds.GetProjection() or ""
    if not crs_wkt:
        raise EngineError(f"{name} has no coordinate reference system; assign one (in QGIS: Layer ▸ Set CRS) "
                          "and try again.")
    bands = choose_bands(ds, spec.bands)
    from osgeo import gdal

    dtype = gdal.GetDataTypeName(ds.GetRasterBand(bands[0]).DataType)
    if dtype.startswith("C"):
        raise EngineError(f"{name} holds complex numbers ({dtype}); convert it to a real-valued raster first.")
    nodata = tuple(ds.GetRasterBand(b).GetNoDataValue() for b in bands)
    return RasterInfo(path, ds.RasterXSize, ds.RasterYSize, ds.RasterCount, dtype, crs_wkt,
                      tuple(ds.GetGeoTransform()), bands, nodata, raster_fingerprint(path))


def tile_size_pixels(info: RasterInfo, spec: TilingSpec) -> tuple[int, int]:
    """Tile width and height in pixels; metres are converted on the ground, also for degrees."""
    if spec.units == "px":
        return max(1, round(spec.size)), max(1, round(spec.size))
    gt = info.transform
    px_x, px_y = math.hypot(gt[1], gt[4]), math.hypot(gt[2], gt[5])
    if px_x == 0 or px_y == 0:
        raise EngineError(f"{Path(info.path).name} has no pixel size in its georeferencing.")
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(info.crs_wkt)
    if srs.IsGeographic():
        lat = gt[3] + gt[4] * info.width / 2 + gt[5] * info.height / 2
        m_x = 111320.0 * max(math.cos(math.radians(lat)), 1e-6)
        return max(1, round(spec.size / (px_x * m_x))), max(1, round(spec.size / (px_y * 110574.0)))
    unit = srs.GetLinearUnits() or 1.0
    return max(1, round(spec.size / (px_x * unit))), max(1, round(spec.size / (px_y * unit)))


def _starts(length: int, size: int, stride: int) -> list[int]:
    if size >= length:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def plan_windows(info: RasterInfo, spec: TilingSpec) -> list[TileWindow]:
    """Row-major grid of windows; the last row/column is snapped to the edge so all is covered."""
    tw, th = tile_size_pixels(info, spec)
    sx, sy = max(1, round(tw * (1 - spec.overlap))), max(1, round(th * (1 - spec.overlap)))
    w, h = min(tw, info.width), min(th, info.height)
    return [TileWindow(c, r, w, h) for r in _starts(info.height, th, sy) for c in _starts(info.width, tw, sx)]


def compute_stretch(ds, bands, nodata) -> list[tuple[float, float]]:
    """Per-band (low, high) for mapping to 0–255: identity for 8-bit, else 2nd–98th percentile.

    One decimated read of the whole raster (longest side at most 1024 px) keeps this cheap.
    """
    from osgeo import gdal

    out = []
    scale = min(1.0, 1024.0 / max(ds.RasterXSize, ds.RasterYSize))
    bx, by = max(1, int(ds.RasterXSize * scale)), max(1, int(ds.RasterYSize * scale))
    for band_no, nd in zip(bands, nodata):
        band = ds.GetRasterBand(band_no)
        if band.DataType == gdal.GDT_Byte:
            out.append((0.0, 255.0))
            continue
        with gdal_exceptions():
            data = band.ReadAsArray(buf_xsize=bx, buf_ysize=by).astype(np.float64)
        valid = np.isfinite(data)
        if nd is not None:
            valid &= data != nd
        values = data[valid]
        if values.size == 0:
            out.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, [2, 98])
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return out


class RasterTiler:
    """Reads the tiles of one raster; used from one thread at a time."""

    def __init__(self, path: str | Path, spec: TilingSpec) -> None:
        self.spec = spec.validate()
        self.info = open_raster(path, spec)
        self._ds = _open_dataset(self.info.path)
        self.windows = plan_windows(self.info, spec)
        self.stretch = compute_stretch(self._ds, self.info.bands, self.info.nodata)
        self._to_wgs84 = _transform_to_wgs84(self.info.crs_wkt)

    def close(self) -> None:
        self._ds = None

    def __enter__(self) -> "RasterTiler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, window: TileWindow) -> np.ndarray | None:
        """uint8 (read_size, read_size, 3) pixels of a window, or None if mostly nodata."""
        from osgeo import gdal

        n = self.spec.read_size
        alg = gdal.GRIORA_Average if max(window.width, window.height) > n else gdal.GRIORA_Bilinear
        invalid = np.ones((n, n), dtype=bool)
        planes = []
        try:
            with gdal_exceptions():
                for band_no, nd, (lo, hi) in zip(self.info.bands, self.info.nodata, self.stretch):
                    band = self._ds.GetRasterBand(band_no)
                    data = band.ReadAsArray(window.col_off, window.row_off, window.width, window.height,
                                            buf_xsize=n, buf_ysize=n, resample_alg=alg).astype(np.float32)
                    bad = ~np.isfinite(data)
                    if nd is not None:
                        bad |= data == nd
                    invalid &= bad
                    scaled = np.where(bad, 0.0, (data - lo) * (255.0 / (hi - lo)))
                    planes.append(np.clip(scaled, 0, 255).astype(np.uint8))
                mask_flags = self._ds.GetRasterBand(self.info.bands[0]).GetMaskFlags()
                if not mask_flags & gdal.GMF_ALL_VALID and not mask_flags & gdal.GMF_NODATA:
                    mask = self._ds.GetRasterBand(self.info.bands[0]).GetMaskBand().ReadAsArray(
                        window.col_off, window.row_off, window.width, window.height, buf_xsize=n, buf_ysize=n,
                        resample_alg=gdal.GRIORA_NearestNeighbour)
                    invalid |= mask == 0
        except RuntimeError as exc:
            raise EngineError(f"Cannot read {Path(self.info.path).name} at window {window.as_tuple()}: "
                              f"{str(exc).strip()} (the file may be truncated or damaged).") from None
        if invalid.mean() > self.spec.max_nodata:
            return None
        return np.dstack(planes)

    def footprint(self, window: TileWindow) -> tuple[str, str, tuple[float, float, float, float]]:
        """(WKT in the raster CRS, WKT in WGS84 lon/lat, native bounds) of a window."""
        gt = self.info.transform
        cols = (window.col_off, window.col_off + window.width)
        rows = (window.row_off, window.row_off + window.height)
        corners = [(cols[0], rows[0]), (cols[1], rows[0]), (cols[1], rows[1]), (cols[0], rows[1])]
        pts = [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5]) for c, r in corners]
        wgs = [tuple(self._to_wgs84.TransformPoint(x, y)[:2]) for x, y in pts]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return _polygon_wkt(pts), _polygon_wkt(wgs), (min(xs), min(ys), max(xs), max(ys))

    def iter_tiles(self, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                   skip=frozenset()) -> Iterator[tuple[Tile, np.ndarray]]:
        """Yield (tile, pixels) for every window not in ``skip`` and not mostly nodata."""
        total = len(self.windows)
        every = max(1, total // 100)
        for i, window in enumerate(self.windows):
            check_cancel(cancel)
            if progress is not None and i % every == 0:
                progress(i / max(total, 1), f"tile {i + 1} of {total}")
            if window.as_tuple() in skip:
                continue
            pixels = self.read(window)
            if pixels is None:
                continue
            native, wgs, bounds = self.footprint(window)
            yield Tile(self.info.path, window, native, wgs, bounds), pixels
        if progress is not None:
            progress(1.0, f"{total} tiles read")


def _polygon_wkt(points) -> str:
    ring = list(points) + [points[0]]
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


def _transform_to_wgs84(crs_wkt: str):
    from osgeo import osr

    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(crs_wkt)
    dst.ImportFromEPSG(4326)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(src, dst)
