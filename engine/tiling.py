"""Cut any raster GDAL reads into georeferenced tiles, shaped like torchgeo's GridGeoSampler.

A tile is a pixel window on a regular grid (size, stride = size × (1 − overlap), in pixels or
in metres on the ground). Each window is read resampled to a fixed ``read_size`` square, so
memory per tile is the same for a 64 px tile and a 50 km one, and the grid itself is computed
on demand, so a 200,000 px raster costs no more memory than a small one.

GDAL (not rasterio) is used because inside QGIS it is the library QGIS already links; a second
libgdal in the process risks PROJ/GDAL clashes. GDAL's process-wide exception mode is never
changed here (QGIS and other plugins depend on it): calls run under a thread-local quiet error
handler and their results are checked, whichever mode the process is in.

Thread-safety: a GDAL dataset must not be used by two threads at once. A ``RasterTiler`` is
used from one thread at a time; a background reader thread may own it.
"""
from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence, TypeVar

import numpy as np

from .errors import EngineError
from .gdalutil import thread_config
from .progress import CancelFn, ProgressFn, check_cancel
from .sources import TileUnavailable, canonical_path, is_remote

#: Bytes hashed at each end of a file by ``raster_fingerprint``.
FINGERPRINT_CHUNK = 1 << 20
#: Longest side of the one decimated read that ``compute_stretch`` samples.
STRETCH_SAMPLE_PX = 1024
#: Largest allowed ``read_size``, so a tile's pixels stay a few tens of MiB at most.
MAX_READ_SIZE = 4096
#: Fewest pixels a side of a tile given in metres: a smaller one is enlarged to this (see ``tile_size_pixels``).
#: The smallest tiles remote-sensing CLIP models are evaluated on are EuroSAT's 64 px; a 6 px tile blown up to
#: the model's 224 px input is a blur that matches every query a little and swamps the results.
MIN_TILE_PX = 32

_T = TypeVar("_T")


@dataclass(frozen=True)
class TilingSpec:
    """How to cut rasters: tile size in pixels or ground metres, overlap, bands, nodata tolerance.

    Stored in the index as JSON (``to_dict``) so later runs cut new rasters the same way.
    """

    size: float = 224.0
    units: str = "px"
    overlap: float = 0.0
    bands: tuple[int, ...] | None = None
    max_nodata: float = 0.5
    read_size: int = 224
    #: Tile sizes as multiples of ``size`` held by one index, e.g. (1, 2, 4): 224, 448 and 896 px windows, each
    #: read at ``read_size`` (see engine/scales.py). Recorded only when it is not just (1,).
    scales: tuple[int, ...] = (1,)
    #: Tiles in metres are at least this many pixels a side; 1 for indexes made before the rule (cut as they were).
    min_px: int = MIN_TILE_PX

    def validate(self) -> "TilingSpec":
        """Return self, or raise ``EngineError`` saying which setting is wrong."""
        if self.units not in ("px", "m"):
            raise EngineError(f"Tile units must be 'px' (pixels) or 'm' (metres), not {self.units!r}.")
        if not _is_real(self.size) or not math.isfinite(self.size) or self.size <= 0:
            raise EngineError(f"The tile size must be a positive number, not {self.size!r}.")
        if self.units == "px" and self.size < 1:
            raise EngineError(f"A tile in pixels must be at least 1 pixel, not {self.size!r}.")
        if not _is_real(self.overlap) or not 0.0 <= self.overlap <= 0.9:
            raise EngineError(f"The overlap must be a fraction from 0 to 0.9, not {self.overlap!r}.")
        if self.bands is not None:
            if len(self.bands) not in (1, 3):
                raise EngineError(f"Give one band (shown as grey) or three (red, green, blue), not {len(self.bands)}.")
            if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in self.bands):
                raise EngineError(f"Band numbers count from 1; {list(self.bands)} is not valid.")
        if not _is_real(self.max_nodata) or not 0.0 <= self.max_nodata <= 1.0:
            raise EngineError(f"The nodata tolerance must be a fraction from 0 to 1, not {self.max_nodata!r}.")
        if not isinstance(self.read_size, int) or isinstance(self.read_size, bool) \
                or not 8 <= self.read_size <= MAX_READ_SIZE:
            raise EngineError(f"The tile read size must be a whole number of pixels from 8 to {MAX_READ_SIZE}, "
                              f"not {self.read_size!r}.")
        if not isinstance(self.min_px, int) or isinstance(self.min_px, bool) or self.min_px < 1:
            raise EngineError(f"The smallest tile must be a whole number of pixels, not {self.min_px!r}.")
        from .scales import check_scales

        check_scales(self.scales)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, as recorded in an index."""
        out = {"size": float(self.size), "units": self.units, "overlap": float(self.overlap),
               "bands": list(self.bands) if self.bands else None, "max_nodata": float(self.max_nodata),
               "read_size": int(self.read_size), "min_px": int(self.min_px)}
        if tuple(self.scales) != (1,):
            out["scales"] = [int(s) for s in self.scales]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TilingSpec":
        """Inverse of ``to_dict``; missing keys take defaults, unknown keys are ignored.

        A recorded spec without ``min_px`` is an index made before metre tiles had a minimum size: it
        gets 1, so its rasters keep being cut exactly as they were.
        """
        default = cls()
        try:
            bands = data.get("bands")
            return cls(size=float(data.get("size", default.size)), units=str(data.get("units", default.units)),
                       overlap=float(data.get("overlap", default.overlap)),
                       bands=tuple(int(b) for b in bands) if bands else None,
                       max_nodata=float(data.get("max_nodata", default.max_nodata)),
                       read_size=int(data.get("read_size", default.read_size)),
                       scales=tuple(int(s) for s in data.get("scales") or (1,)), min_px=int(data.get("min_px", 1)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise EngineError(f"The recorded tile settings {data!r} are not valid ({exc}).") from None


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """Bands typed by a user, e.g. "4,3,2" (R,G,B) or "2" (grey); empty means automatic."""
    if text is None or not str(text).strip():
        return None
    try:
        bands = tuple(int(b) for b in str(text).replace(" ", "").split(","))
    except ValueError:
        raise EngineError(f"Bands {text!r} must be band numbers like 1,2,3 or 4,3,2.") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise EngineError(f"Bands {text!r} must name one band (grey) or three bands (R,G,B), counted from 1.")
    return bands


@dataclass(frozen=True)
class TileWindow:
    """A pixel window: offsets of its top-left pixel, and its size."""

    col_off: int
    row_off: int
    width: int
    height: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True)
class RasterInfo:
    """What tiling needs to know about a raster, read once without reading pixels."""

    path: str
    width: int
    height: int
    band_count: int
    dtype: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    bands: tuple[int, int, int]
    nodata: tuple[float | None, float | None, float | None]
    fingerprint: str


@dataclass(frozen=True)
class Tile:
    """A tile's place: its pixel window and its footprint in the raster's CRS and in WGS84."""

    raster: str
    window: TileWindow
    footprint_wkt: str
    footprint_wgs84_wkt: str
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class TileBatch:
    """Tiles read together: their windows, uint8 pixels (m, 3, read_size, read_size) and WGS84 bounds (m, 4)."""

    raster: str
    windows: list[TileWindow]
    pixels: np.ndarray
    wgs84_bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)


class _Offsets(Sequence[int]):
    """Window start offsets along one axis: a regular range plus one start snapped to the edge."""

    def __init__(self, length: int, size: int, stride: int) -> None:
        if size >= length:
            self._range, self._tail = range(1), None
        else:
            self._range = range(0, length - size + 1, stride)
            self._tail = length - size if self._range[-1] + size < length else None

    def __len__(self) -> int:
        return len(self._range) + (self._tail is not None)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = _index(i, len(self))
        return self._range[i] if i < len(self._range) else self._tail

    def __iter__(self) -> Iterator[int]:
        yield from self._range
        if self._tail is not None:
            yield self._tail

    def __contains__(self, value: object) -> bool:
        return value in self._range or (self._tail is not None and value == self._tail)


class WindowGrid(Sequence[TileWindow]):
    """Row-major tile windows, made on demand: the grid of a huge raster costs no memory.

    Behaves like a read-only list (``len``, indexing, slicing, iteration, ``in``, ``==`` with a
    list of ``TileWindow``).
    """

    def __init__(self, cols: _Offsets, rows: _Offsets, width: int, height: int) -> None:
        self._cols, self._rows, self.tile_width, self.tile_height = cols, rows, width, height

    def __len__(self) -> int:
        return len(self._cols) * len(self._rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row, col = divmod(_index(i, len(self)), len(self._cols))
        return TileWindow(self._cols[col], self._rows[row], self.tile_width, self.tile_height)

    def __iter__(self) -> Iterator[TileWindow]:
        for row in self._rows:
            for col in self._cols:
                yield TileWindow(col, row, self.tile_width, self.tile_height)

    def __contains__(self, window: object) -> bool:
        return (isinstance(window, TileWindow) and (window.width, window.height) == (self.tile_width, self.tile_height)
                and window.col_off in self._cols and window.row_off in self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"WindowGrid({len(self._cols)} columns × {len(self._rows)} rows of "
                f"{self.tile_width}×{self.tile_height} px)")


def _index(i: int, n: int) -> int:
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError("window index out of range")
    return i


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: GDAL options of a local raster's opening, for this thread only (``gdalutil.thread_config``). An uncompressed
#: GeoTIFF is then read straight from the file into the tile buffer instead of through GDAL's block
#: cache (compressed files and other formats read as before; the pixels are the same either way, resampled
#: windows included: tests/test_tiling.py). Every tile is read once, so the
#: cache only cost a copy: 4,096 tiles of 224 px from four uncompressed GeoTIFFs (in the OS page cache) read in
#: 0.48 s instead of 0.75 s here; the cache also no longer fills with blocks of rasters a job will not read again.
DIRECT_READS = {"GTIFF_DIRECT_IO": "YES"}


@contextmanager
def _quiet_gdal() -> Iterator[None]:
    """Silence GDAL's stderr messages in this thread and clear the last error.

    The error handler stack and last-error state are per thread in GDAL, so this does not
    affect QGIS or other threads (unlike switching the global exception mode).
    """
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    gdal.ErrorReset()
    try:
        yield
    finally:
        gdal.PopErrorHandler()


def _gdal_exception_text(exc: RuntimeError) -> str:
    """The error of a GDAL exception, as ``GetLastErrorMsg`` gives it without exceptions: its first line.

    Exceptions are on wherever QGIS 3.40's Processing has loaded (its GDAL provider turns them on for the
    whole process), and GDAL 3.10 adds the earlier errors to the message as "May be caused by: …" lines.
    """
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else ""


def _gdal_call(fn: Callable[..., _T], *args: Any, what: str, **kwargs: Any) -> _T:
    """Run a GDAL call that signals failure by returning None or (in exception mode) raising."""
    from osgeo import gdal

    with _quiet_gdal():
        try:
            result = fn(*args, **kwargs)
            detail = "" if result is not None else gdal.GetLastErrorMsg()
        except RuntimeError as exc:
            result, detail = None, _gdal_exception_text(exc)
    if result is None:
        raise EngineError(f"{what}: {detail.strip().rstrip('.') or 'unknown GDAL error'}.")
    return result


def raster_fingerprint(path: str | Path) -> str:
    """Cheap, stable identity of a raster file: sha256 of its size, mtime and first and last MiB.

    The index keys rasters by path; the fingerprint decides whether a raster seen before must be
    re-indexed (it changed) or can be skipped (it did not). Hashing whole rasters would cost as
    much as reading them; size and mtime catch any rewrite and the two ends catch in-place edits
    that kept both (headers and, in GeoTIFFs, the tile index sit at the ends). Sidecar files
    (.aux.xml, .ovr) and the sources of a VRT are not included.
    """
    if is_remote(path):
        from .sources import remote_fingerprint

        return remote_fingerprint(str(path))
    path = Path(path)
    try:
        st = path.stat()
        digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(FINGERPRINT_CHUNK))
            if st.st_size > FINGERPRINT_CHUNK:
                fh.seek(max(FINGERPRINT_CHUNK, st.st_size - FINGERPRINT_CHUNK))
                digest.update(fh.read(FINGERPRINT_CHUNK))
    except OSError as exc:
        raise EngineError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    return digest.hexdigest()


def _open_dataset(path: str) -> Any:
    """Open a raster read-only, or raise ``EngineError`` naming the file and the problem."""
    from osgeo import gdal

    if is_remote(path):
        from .sources import open_remote

        return open_remote(path).dataset
    p = Path(path)
    if not p.exists():
        raise EngineError(f"{path} does not exist.")
    if p.is_dir():
        raise EngineError(f"{p.name} is a folder, not a raster file.")
    if p.stat().st_size == 0:
        raise EngineError(f"{p.name} is an empty file, not a raster.")
    with _quiet_gdal(), thread_config(DIRECT_READS):  # GDAL's GeoTIFF driver reads the option when it opens
        try:
            ds = gdal.OpenEx(str(p), gdal.OF_RASTER | gdal.OF_READONLY | gdal.OF_VERBOSE_ERROR)
            reason = gdal.GetLastErrorMsg().strip()
        except RuntimeError as exc:
            ds, reason = None, _gdal_exception_text(exc)
    if ds is None:
        if not os.access(p, os.R_OK):
            reason = "permission denied"
        elif not reason or ("not recognized as" in reason and "supported file format" in reason):
            # GDAL 3.6 says "not recognized as a supported file format", 3.10 "as being in a supported file format"
            reason = "GDAL does not recognise its format"
        raise EngineError(f"{p.name} is not a raster GDAL can read ({reason}).")
    if ds.RasterCount == 0:
        subs = ds.GetSubDatasets()
        hint = f"; it holds {len(subs)} sub-dataset(s), open one of them, e.g. {subs[0][0]}" if subs else ""
        raise EngineError(f"{p.name} is not a raster GDAL can read (it has no raster bands{hint}).")
    return ds


def choose_bands(ds: Any, requested: tuple[int, ...] | None) -> tuple[int, int, int]:
    """Bands shown as red, green, blue: as asked; else by colour interpretation; else the first three.

    One band is shown as grey (replicated three times). With fewer than three usable bands (a
    2-band raster, or grey + alpha) the first band that is not alpha is shown as grey.
    """
    from osgeo import gdal

    count = ds.RasterCount
    if requested:
        bad = [b for b in requested if not 1 <= b <= count]
        if bad:
            raise EngineError(f"{Path(ds.GetDescription()).name} has {count} band(s); band {bad[0]} does not exist.")
        return (requested[0],) * 3 if len(requested) == 1 else (requested[0], requested[1], requested[2])
    interp = {i: ds.GetRasterBand(i).GetColorInterpretation() for i in range(1, count + 1)}
    by_colour = {c: i for i, c in sorted(interp.items(), reverse=True)}
    red, green, blue = (by_colour.get(c) for c in (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand))
    if red and green and blue:
        return (red, green, blue)
    usable = [i for i in range(1, count + 1) if interp[i] != gdal.GCI_AlphaBand] or [1]
    if len(usable) >= 3:
        return (usable[0], usable[1], usable[2])
    return (usable[0],) * 3


def _describe(ds: Any, path: str, spec: TilingSpec) -> RasterInfo:
    """Check an open dataset can be tiled and describe it."""
    from osgeo import gdal

    name = Path(path).name
    if ds.RasterXSize < 1 or ds.RasterYSize < 1:
        raise EngineError(f"{name} has no pixels (its size is {ds.RasterXSize}×{ds.RasterYSize}).")
    crs_wkt = ds.GetProjection() or ""
    transform = ds.GetGeoTransform(can_return_null=True)
    if not crs_wkt and ds.GetGCPCount() and ds.GetGCPProjection():
        raise EngineError(f"{name} is georeferenced by ground control points only; warp it first "
                          "(e.g. in QGIS: Raster ▸ Projections ▸ Warp) and try again.")
    if not crs_wkt:
        raise EngineError(f"{name} has no coordinate reference system; assign one "
                          "(e.g. in QGIS: Layer ▸ Set CRS) and try again.")
    if transform is None or transform[1] * transform[5] - transform[2] * transform[4] == 0:
        raise EngineError(f"{name} has a coordinate reference system but no position on the map "
                          "(no geotransform); georeference it and try again.")
    _check_lonlat(name, crs_wkt, transform, ds.RasterXSize, ds.RasterYSize)
    bands = choose_bands(ds, spec.bands)
    types = [gdal.GetDataTypeName(ds.GetRasterBand(b).DataType) for b in bands]
    complex_types = [t for t in types if t.startswith("C")]
    if complex_types:
        raise EngineError(f"{name} holds complex numbers ({complex_types[0]}); "
                          "convert it to a real-valued raster first.")
    nodata = tuple(ds.GetRasterBand(b).GetNoDataValue() for b in bands)
    return RasterInfo(path, ds.RasterXSize, ds.RasterYSize, ds.RasterCount, types[0], crs_wkt,
                      tuple(float(v) for v in transform), bands, nodata,  # type: ignore[arg-type]
                      raster_fingerprint(path))


def _check_lonlat(name: str, crs_wkt: str, transform: Sequence[float], width: int, height: int) -> None:
    """Refuse a CRS whose coordinates cannot be turned into longitude/latitude (a local or engineering
    CRS, or a raster placed outside its projection's domain), before any tile is written."""
    from osgeo import osr

    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs = osr.SpatialReference()
    with _quiet_gdal():
        ok = srs.ImportFromWkt(crs_wkt) == 0
        to_wgs84 = osr.CreateCoordinateTransformation(srs, wgs84) if ok else None
    if to_wgs84 is None:
        raise EngineError(f"{name}'s coordinate reference system ({srs.GetName() or 'unknown'}) cannot be converted "
                          "to latitude/longitude (a local or engineering CRS?); assign a real CRS "
                          "(in QGIS: Layer ▸ Set CRS) and try again.")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    gt = transform
    corners = [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5])
               for c, r in ((0, 0), (width, 0), (width, height), (0, height), (width / 2, height / 2))]
    with _quiet_gdal():
        try:
            points = [tuple(p[:2]) for p in to_wgs84.TransformPoints(corners)]
        except (RuntimeError, TypeError):
            points = []
    if len(points) != len(corners) or not all(math.isfinite(v) for p in points for v in p):
        raise EngineError(f"{name} lies where its coordinate reference system cannot be converted to "
                          "latitude/longitude; check its CRS and georeferencing and try again.")


def open_raster(path: str | Path, spec: TilingSpec) -> RasterInfo:
    """Check a raster can be tiled with ``spec`` and describe it; problems raise ``EngineError``."""
    spec.validate()
    resolved = canonical_path(path)
    ds = _open_dataset(resolved)
    try:
        return _describe(ds, resolved, spec)
    finally:
        ds = None


def _osr(wkt: str) -> Any:
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def ground_pixel_size(info: RasterInfo) -> tuple[float, float]:
    """Metres on the ground covered by one pixel step along a row and down a column.

    Measured at the raster's centre on the CRS's own ellipsoid, so it is right for rasters in
    degrees (a degree of longitude shrinks with cos(latitude)) and for projections whose map
    metres are not ground metres (Web Mercator away from the equator).
    """
    from osgeo import osr

    gt = info.transform
    steps = ((gt[1], gt[4]), (gt[2], gt[5]))
    srs = _osr(info.crs_wkt)
    geog = None if srs.IsLocal() else srs.CloneGeogCS()
    if geog is None or not geog.GetSemiMajor():
        unit = srs.GetLinearUnits() or 1.0
        return math.hypot(*steps[0]) * unit, math.hypot(*steps[1]) * unit
    geog.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_geog = osr.CoordinateTransformation(srs, geog) if not srs.IsGeographic() else None
    radian = geog.GetAngularUnits() or math.radians(1.0)
    a, inv_f = geog.GetSemiMajor(), geog.GetInvFlattening()
    e2 = (2 - 1 / inv_f) / inv_f if inv_f else 0.0
    cx = gt[0] + gt[1] * info.width / 2 + gt[2] * info.height / 2
    cy = gt[3] + gt[4] * info.width / 2 + gt[5] * info.height / 2
    sizes = []
    for dx, dy in steps:
        ends = [(cx - dx / 2, cy - dy / 2), (cx + dx / 2, cy + dy / 2)]
        if to_geog is not None:
            with _quiet_gdal():
                try:
                    ends = [tuple(p[:2]) for p in to_geog.TransformPoints(ends)]
                except RuntimeError:
                    ends = [(math.inf, math.inf)] * 2
        (lon0, lat0), (lon1, lat1) = ends
        if not all(map(math.isfinite, (lon0, lat0, lon1, lat1))):
            raise EngineError(f"Cannot measure metres on {Path(info.path).name}: its centre cannot be converted "
                              "to latitude and longitude; give the tile size in pixels instead.")
        phi = (lat0 + lat1) / 2 * radian
        dlon = math.remainder((lon1 - lon0) * radian, 2 * math.pi)
        dlat = (lat1 - lat0) * radian
        w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
        n_radius, m_radius = a / w, a * (1 - e2) / w ** 3
        sizes.append(math.hypot(n_radius * math.cos(phi) * dlon, m_radius * dlat))
    return sizes[0], sizes[1]


def tile_size_pixels(info: RasterInfo, spec: TilingSpec) -> tuple[int, int]:
    """Tile width and height in pixels; metres are ground metres at the raster's centre.

    A size in pixels is used as given. A size in metres is enlarged, for this raster only, to at least
    ``spec.min_px`` pixels a side (square on the ground): one request in metres covers rasters of any
    resolution, and on coarse pixels (500 m on Landsat's 89 m) it would be a few pixels nobody asked for.
    ``engine.planning`` says so per raster.
    """
    if spec.units == "px":
        return max(1, round(spec.size)), max(1, round(spec.size))
    mx, my = ground_pixel_size(info)
    width, height = round(spec.size / mx), round(spec.size / my)
    if spec.min_px > 1 and min(width, height) < spec.min_px:
        metres = spec.min_px * max(mx, my)
        width, height = round(metres / mx), round(metres / my)
    if width < 1 or height < 1:
        raise EngineError(f"A {spec.size:g} m tile is smaller than one pixel of {Path(info.path).name} "
                          f"(pixels are {mx:.3g} × {my:.3g} m); use a larger tile.")
    return width, height


def plan_windows(info: RasterInfo, spec: TilingSpec) -> WindowGrid:
    """Row-major grid of windows covering the whole raster with full-size tiles.

    Stride is size × (1 − overlap), at least one pixel; the last row and column are snapped to
    the raster's edge (so they overlap their neighbours more) rather than cut short; a raster
    smaller than a tile is one tile covering all of it. No pixels are read.
    """
    tw, th = tile_size_pixels(info, spec)
    sx, sy = max(1, round(tw * (1 - spec.overlap))), max(1, round(th * (1 - spec.overlap)))
    return WindowGrid(_Offsets(info.width, tw, sx), _Offsets(info.height, th, sy),
                      min(tw, info.width), min(th, info.height))


def _nodata_hits(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels equal to the nodata value, compared in the data's own type (float32 rounding)."""
    if nodata is None or math.isnan(nodata):
        return np.zeros(data.shape, dtype=bool)
    if data.dtype.kind == "f":
        return data == data.dtype.type(nodata)
    info = np.iinfo(data.dtype)
    if nodata != int(nodata) or not info.min <= nodata <= info.max:
        return np.zeros(data.shape, dtype=bool)
    return data == int(nodata)


def _palette(ds: Any, bands: tuple[int, int, int]) -> np.ndarray | None:
    """RGB lookup table (entries × 3, uint8) when the raster is one palette-indexed band."""
    from osgeo import gdal

    if len(set(bands)) != 1:
        return None
    band = ds.GetRasterBand(bands[0])
    table = band.GetColorTable()
    if table is None or band.GetColorInterpretation() != gdal.GCI_PaletteIndex \
            or table.GetPaletteInterpretation() != gdal.GPI_RGB \
            or band.DataType not in (gdal.GDT_Byte, gdal.GDT_UInt16):
        return None
    lut = np.zeros((256 if band.DataType == gdal.GDT_Byte else 65536, 3), dtype=np.uint8)
    for i in range(min(table.GetCount(), len(lut))):
        lut[i] = table.GetColorEntry(i)[:3]
    return lut


def _mask_needed(ds: Any, band_no: int) -> bool:
    """True when a band's validity comes from an alpha band or mask file, not from nodata values."""
    from osgeo import gdal

    flags = ds.GetRasterBand(band_no).GetMaskFlags()
    return not flags & gdal.GMF_ALL_VALID and not flags & gdal.GMF_NODATA


def compute_stretch(ds: Any, info: RasterInfo) -> list[tuple[float, float]]:
    """Per chosen band (low, high) mapped to 0 and 255: identity for 8-bit, else 2nd–98th percentile.

    Sampled from one decimated read of the whole raster (longest side at most 1024 px, GDAL uses
    overviews when there are any), ignoring nodata, masked pixels, NaN and ±inf, so the cost
    does not grow with the raster. A constant band gets a one-unit range, never zero.
    """
    from osgeo import gdal

    byte = [ds.GetRasterBand(b).DataType == gdal.GDT_Byte for b in info.bands]
    if all(byte) or _palette(ds, info.bands) is not None:
        return [(0.0, 255.0)] * len(info.bands)
    scale = min(1.0, STRETCH_SAMPLE_PX / max(info.width, info.height))
    bx, by = max(1, round(info.width * scale)), max(1, round(info.height * scale))
    name = Path(info.path).name
    unique = list(dict.fromkeys(b for b, is_byte in zip(info.bands, byte) if not is_byte))
    sample = _gdal_call(ds.ReadAsArray, buf_xsize=bx, buf_ysize=by, band_list=unique,
                        what=f"Cannot read {name} (the file may be truncated or damaged)").reshape(len(unique), by, bx)
    masked = np.zeros((by, bx), dtype=bool)
    if _mask_needed(ds, info.bands[0]):
        masked = _gdal_call(ds.GetRasterBand(info.bands[0]).GetMaskBand().ReadAsArray, buf_xsize=bx, buf_ysize=by,
                            what=f"Cannot read the mask of {name}") == 0
    ranges: dict[int, tuple[float, float]] = {}
    for band_no, data in zip(unique, sample):
        valid = ~(masked | _nodata_hits(data, ds.GetRasterBand(band_no).GetNoDataValue()))
        if data.dtype.kind == "f":
            valid &= np.isfinite(data)
        values = data[valid].astype(np.float64)
        if values.size == 0:
            ranges[band_no] = (0.0, 1.0)
            continue
        lo, hi = (float(v) for v in np.percentile(values, [2, 98]))
        ranges[band_no] = (lo, hi) if hi > lo else (lo, lo + 1.0)
    return [(0.0, 255.0) if is_byte else ranges[b] for b, is_byte in zip(info.bands, byte)]


def _polygon_wkt(points: Sequence[tuple[float, float]]) -> str:
    ring = list(points) + [points[0]]
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"


class RasterTiler:
    """Reads the tiles of one raster as fixed-size uint8 RGB arrays with their footprints.

    Opens the raster once, plans the windows and computes the stretch once. Use from one thread
    at a time (a background reader thread may own it); close it, or use it as a context manager.
    """

    def __init__(self, path: str | Path, spec: TilingSpec) -> None:
        from osgeo import osr

        self.spec = spec.validate()
        resolved = canonical_path(path)
        self.unavailable = 0  # tiles of a remote source that could not be downloaded (skipped, not failed)
        self.unavailable_reason = ""
        self._remote: Any = None
        if is_remote(resolved):
            from .sources import open_remote

            self._remote = open_remote(resolved)
        self._ds: Any = self._remote.dataset if self._remote is not None else _open_dataset(resolved)
        try:
            self.info = _describe(self._ds, resolved, spec)
            self.windows = plan_windows(self.info, spec)
            self._lut = _palette(self._ds, self.info.bands)
            with self._io():
                self.stretch = compute_stretch(self._ds, self.info)
            self._mask = _mask_needed(self._ds, self.info.bands[0])
            wgs84 = osr.SpatialReference()
            wgs84.ImportFromEPSG(4326)
            wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            self._to_wgs84 = _gdal_call(osr.CoordinateTransformation, _osr(self.info.crs_wkt), wgs84,
                                        what=f"Cannot convert the coordinate reference system of "
                                             f"{Path(resolved).name} to latitude/longitude")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the GDAL dataset (and a remote source's downloads); further reads fail."""
        self._ds = None
        if self._remote is not None:
            self._remote.close()

    def _io(self, window: TileWindow | None = None) -> Any:
        """Context of every read: a remote source's HTTP options and downloads; nothing for a file."""
        from contextlib import nullcontext

        return self._remote.io(window) if self._remote is not None else nullcontext()

    def __enter__(self) -> "RasterTiler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, window: TileWindow) -> np.ndarray | None:
        """uint8 (read_size, read_size, 3) pixels of a window, or None if mostly nodata (see ``_read``).

        A remote source downloads what the window needs first, or raises ``TileUnavailable``.
        """
        with self._io(window):
            return self._read(window)

    def _read(self, window: TileWindow) -> np.ndarray | None:
        """uint8 (read_size, read_size, 3) pixels of a window, or None if mostly nodata.

        Downsampling averages (upsampling is bilinear), both skipping nodata; values are
        stretched to 0–255 and nodata, NaN and ±inf become 0. A pixel counts as nodata when every
        chosen band that can be missing is missing there, or the GDAL mask (alpha) is 0.
        """
        keep, pixels = self._read_many([window])
        return np.ascontiguousarray(pixels[0].transpose(1, 2, 0)) if keep[0] else None

    def _resampling(self, window: TileWindow) -> int:
        from osgeo import gdal

        n = self.spec.read_size
        if self._lut is not None:
            return gdal.GRIORA_NearestNeighbour
        if window.width > n or window.height > n:
            return gdal.GRIORA_Average
        return gdal.GRIORA_Bilinear

    def _read_many(self, windows: Sequence[TileWindow]) -> tuple[np.ndarray, np.ndarray]:
        """(keep, uint8 (m, 3, n, n) pixels) of m windows, each resampled to ``read_size`` (n) where its size differs.

        GDAL writes each window's distinct chosen bands straight into its slot of one (m, bands, n, n)
        buffer (no per-tile arrays, no strip to cut up), and the whole buffer is converted at once
        by ``_convert``; 8-bit RGB needs no conversion at all.
        """
        from osgeo import gdal

        if self._ds is None:
            raise EngineError(f"The tiler of {Path(self.info.path).name} is closed.")
        n = self.spec.read_size
        unique = list(dict.fromkeys(self.info.bands))
        raw: np.ndarray | None = None
        mask = np.empty((len(windows), n, n), dtype=np.uint8) if self._mask else None
        mask_band = self._ds.GetRasterBand(self.info.bands[0]).GetMaskBand() if self._mask else None
        name = Path(self.info.path).name
        with _quiet_gdal():
            for i, w in enumerate(windows):
                box = (w.col_off, w.row_off, w.width, w.height)
                alg = self._resampling(w)
                try:
                    if raw is None:  # the first read decides the buffer's type, as GDAL picks it
                        first = self._ds.ReadAsArray(*box, buf_xsize=n, buf_ysize=n, resample_alg=alg,
                                                     band_list=unique)
                        if first is not None:
                            raw = np.empty((len(windows), len(unique), n, n), dtype=first.dtype)
                            raw[0] = first.reshape(len(unique), n, n)
                        got = first
                    else:
                        got = self._ds.ReadAsArray(*box, buf_obj=raw[i] if len(unique) > 1 else raw[i, 0],
                                                   buf_xsize=n, buf_ysize=n, resample_alg=alg, band_list=unique)
                    if got is not None and mask_band is not None and mask is not None:
                        got = mask_band.ReadAsArray(*box, buf_xsize=n, buf_ysize=n, buf_obj=mask[i])
                        what = f"Cannot read the mask of {name}"
                    else:
                        what = f"Cannot read {name} at window {w.as_tuple()} (the file may be truncated or damaged)"
                    detail = "" if got is not None else gdal.GetLastErrorMsg()
                except RuntimeError as exc:
                    got, detail = None, _gdal_exception_text(exc)
                    what = f"Cannot read {name} at window {w.as_tuple()} (the file may be truncated or damaged)"
                if got is None:
                    raise EngineError(f"{what}: {detail.strip().rstrip('.') or 'unknown GDAL error'}.")
        assert raw is not None
        return self._convert(raw, unique, mask)

    def _convert(self, block: np.ndarray, unique: list[int], mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(keep, pixels) of m tiles: ``block`` (m, len(unique), n, n) holds the distinct chosen bands' native
        values, ``mask`` the GDAL mask (m, n, n) or None; ``pixels`` is uint8 (m, 3, n, n), ``keep`` False for
        tiles over the nodata tolerance. The same arithmetic for one tile and for a batch of them."""
        m, n = block.shape[0], block.shape[-1]
        if (self._lut is None and mask is None and block.dtype == np.uint8 and unique == list(self.info.bands)
                and len(unique) == 3 and all(v is None for v in self.info.nodata)
                and all(tuple(r) == (0.0, 255.0) for r in self.stretch)):
            return np.ones(m, dtype=bool), block  # 8-bit RGB as stored: nothing to convert
        raw = {b: block[:, j] for j, b in enumerate(unique)}
        bad: dict[int, np.ndarray] = {}
        for band_no, nodata in zip(self.info.bands, self.info.nodata):
            data = raw[band_no]
            if band_no not in bad and (nodata is not None or data.dtype.kind == "f"):
                hits = _nodata_hits(data, nodata)
                bad[band_no] = hits | ~np.isfinite(data) if data.dtype.kind == "f" else hits
        invalid = np.logical_and.reduce(list(bad.values())) if bad else None
        if mask is not None:
            invalid = (mask == 0) if invalid is None else invalid | (mask == 0)
        keep = invalid.mean(axis=(1, 2)) <= self.spec.max_nodata if invalid is not None else np.ones(m, dtype=bool)
        out = np.empty((m, 3, n, n), dtype=np.uint8)
        if self._lut is not None:
            index = raw[self.info.bands[0]].astype(np.intp)
            rgb = self._lut[np.clip(index, 0, len(self._lut) - 1)]
            if invalid is not None:
                rgb[invalid] = 0
            out[:] = rgb.transpose(0, 3, 1, 2)
            return keep, out
        for k, (band_no, (lo, hi)) in enumerate(zip(self.info.bands, self.stretch)):
            data = raw[band_no]
            if data.dtype == np.uint8 and (lo, hi) == (0.0, 255.0):
                out[:, k] = data
            else:
                scaled = (data.astype(np.float64) - lo) * (255.0 / (hi - lo))
                out[:, k] = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)), 0, 255)
            if band_no in bad:
                np.putmask(out[:, k], bad[band_no], 0)
            if invalid is not None:
                np.putmask(out[:, k], invalid, 0)
        return keep, out

    def iter_batches(self, batch_size: int, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                     skip: Collection[tuple[int, int, int, int]] = frozenset()) -> Iterator[TileBatch]:
        """The tiles of ``iter_tiles`` (same windows, pixels and order), ``batch_size`` at a time, channels first.

        GDAL reads each window straight into the batch's buffer, the batch is converted with array
        operations, and the WGS84 bounds come from one PROJ call per batch.
        """
        pending: list[TileWindow] = []
        kept: list[tuple[list[TileWindow], np.ndarray]] = []
        held = 0
        for window in self._windows_to_read(progress, cancel, skip):
            pending.append(window)
            if len(pending) >= batch_size:
                got = self._read_windows(pending)
                pending = []
                kept.append(got)
                held += len(got[0])
                while held >= batch_size:
                    batch, kept, held = self._take(kept, batch_size)
                    yield batch
        if pending:
            got = self._read_windows(pending)
            kept.append(got)
            held += len(got[0])
        while held:
            batch, kept, held = self._take(kept, batch_size)
            yield batch
        if progress is not None:
            progress(1.0, f"{len(self.windows)} tiles read")

    def _windows_to_read(self, progress: ProgressFn | None, cancel: CancelFn | None,
                         skip: Collection[tuple[int, int, int, int]]) -> Iterator[TileWindow]:
        """The windows not in ``skip``, in order, checking ``cancel`` and reporting progress on the way.

        A remote source learns first which windows will be read (it downloads ahead).
        """
        total = len(self.windows)
        every = max(1, math.ceil(total / 100))  # at most ~100 updates: enough for a bar, cheap for a Qt signal
        if self._remote is not None:
            self._remote.expect((w for w in self.windows if w.as_tuple() not in skip), cancel)
        for i, window in enumerate(self.windows):
            check_cancel(cancel)
            if progress is not None and i % every == 0:
                progress(i / total, f"tile {i + 1} of {total}")
            if window.as_tuple() not in skip:
                yield window

    def _take(self, kept: list, size: int) -> tuple[TileBatch, list, int]:
        windows = [w for ws, _ in kept for w in ws]
        pixels = np.concatenate([p for _, p in kept]) if len(kept) > 1 else kept[0][1]
        rest = [(windows[size:], pixels[size:])] if len(windows) > size else []
        windows, pixels = windows[:size], pixels[:size]
        return (TileBatch(self.info.path, windows, pixels, self.wgs84_bounds(windows)), rest,
                len(rest[0][0]) if rest else 0)

    def _read_windows(self, windows: list[TileWindow]) -> tuple[list[TileWindow], np.ndarray]:
        """The kept windows among ``windows`` and their uint8 (m, 3, n, n) pixels."""
        n = self.spec.read_size
        if self._remote is not None:  # each window downloads what it needs first (or is skipped)
            out_w, out_p = [], []
            for window in windows:
                try:
                    pixels = self.read(window)
                except TileUnavailable as exc:
                    self.unavailable += 1
                    self.unavailable_reason = str(exc)
                    continue
                if pixels is not None:
                    out_w.append(window)
                    out_p.append(pixels.transpose(2, 0, 1))
            return out_w, (np.stack(out_p) if out_p else np.zeros((0, 3, n, n), dtype=np.uint8))
        keep, pixels = self._read_many(windows)
        if keep.all():
            return list(windows), pixels
        return [w for w, k in zip(windows, keep.tolist()) if k], pixels[keep]

    def read_batch(self, windows: Sequence[TileWindow]) -> tuple[list[TileWindow], np.ndarray]:
        """The windows among ``windows`` with enough data and their uint8 (m, 3, n, n) pixels, read as
        ``iter_batches`` reads them (a Dask worker reads the windows it is sent this way: engine/distributed.py)."""
        return self._read_windows(list(windows))

    def wgs84_bounds(self, windows: Sequence[TileWindow]) -> np.ndarray:
        """(m, 4) min lon, min lat, max lon, max lat of windows, from one PROJ call."""
        from .footprints import corners

        table = np.array([w.as_tuple() for w in windows], dtype=np.float64).reshape(-1, 4)
        if not len(table):
            return np.zeros((0, 4))
        xy = np.ascontiguousarray(corners(self.info.transform, table).reshape(-1, 2))
        with _quiet_gdal():
            try:
                lonlat = np.asarray(self._to_wgs84.TransformPoints(xy), dtype=np.float64)[:, :2]
            except RuntimeError:
                lonlat = np.full(xy.shape, np.nan)
        lonlat = lonlat.reshape(-1, 4, 2)
        bad = ~np.isfinite(lonlat).all(axis=(1, 2))
        if bad.any():
            window = windows[int(np.flatnonzero(bad)[0])]
            raise EngineError(f"Cannot place window {window.as_tuple()} of {Path(self.info.path).name} in "
                              "latitude/longitude; check the raster's coordinate reference system.")
        return np.concatenate([lonlat.min(axis=1), lonlat.max(axis=1)], axis=1)

    def _corners(self, window: TileWindow) -> list[tuple[float, float]]:
        """The window's four corners in the raster CRS, clockwise from top-left, via the full affine."""
        gt = self.info.transform
        c0, c1 = window.col_off, window.col_off + window.width
        r0, r1 = window.row_off, window.row_off + window.height
        return [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5])
                for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]

    def bounds(self, window: TileWindow) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of a window in the raster CRS."""
        xs, ys = zip(*self._corners(window))
        return (min(xs), min(ys), max(xs), max(ys))

    def footprint(self, window: TileWindow) -> tuple[str, str]:
        """The window's polygon as WKT in the raster CRS and in WGS84 (lon, lat order)."""
        corners = self._corners(window)
        with _quiet_gdal():
            try:
                lonlat = [tuple(p[:2]) for p in self._to_wgs84.TransformPoints(corners)]
            except RuntimeError:
                lonlat = []
        if len(lonlat) != 4 or not all(math.isfinite(v) for p in lonlat for v in p):
            raise EngineError(f"Cannot place window {window.as_tuple()} of {Path(self.info.path).name} in "
                              "latitude/longitude; check the raster's coordinate reference system.")
        return _polygon_wkt(corners), _polygon_wkt(lonlat)

    def tile_at(self, window: TileWindow) -> Tile:
        """The tile of a window: its place, without its pixels (engine/distributed.py reads those elsewhere)."""
        native, wgs84 = self.footprint(window)
        return Tile(self.info.path, window, native, wgs84, self.bounds(window))

    def iter_tiles(self, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                   skip: Collection[tuple[int, int, int, int]] = frozenset()) -> Iterator[tuple[Tile, np.ndarray]]:
        """Yield (tile, pixels) for every window, in order, except those in ``skip`` or mostly nodata.

        ``skip`` holds ``(col_off, row_off, width, height)`` tuples (windows already indexed).
        """
        for window in self._windows_to_read(progress, cancel, skip):
            try:
                pixels = self.read(window)
            except TileUnavailable as exc:
                self.unavailable += 1
                self.unavailable_reason = str(exc)
                continue
            if pixels is None:
                continue
            yield self.tile_at(window), pixels
        if progress is not None:
            progress(1.0, f"{len(self.windows)} tiles read")
