"""Web map layers (XYZ tiles, WMS GetMap) as rasters the tiler can cut: a pixel grid, a window of it,
and the web map tiles behind it, downloaded politely into a cache and read through GDAL.

A source is a fixed pixel grid — an XYZ zoom level (Web Mercator, 256 px tiles), or a WMS
layer at a ground resolution on a grid anchored at the CRS origin in 512 px blocks — and the
window of that grid that covers the asked extent, snapped outward to whole pixels. Its web map
tiles ("blocks") are fetched by ``http.PoliteClient`` (GDAL 3.6's WMS driver neither retries
nor honours Retry-After), checked to decode, and written atomically to the tile cache; GDAL's
WMS driver (TMS mini-driver) then reads them from there through ``file://`` URLs, with no disk
cache of its own (no ``<Cache>`` element, so ``GDAL_DEFAULT_WMS_CACHE_PATH`` is never used),
and a VRT crops the block-aligned dataset to the window. A tile (index window) is read only
once all its blocks are on disk; a block that fails after its retries makes the tiles that
need it ``TileUnavailable`` — skipped and counted, never read half-empty.

The cache keeps tiles for thumbnails and resumed runs; delete it freely (see ``tile_cache``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import urllib.parse
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from xml.sax.saxutils import escape

from ..errors import Cancelled, EngineError
from . import SourceUnavailable, TileUnavailable, WEBMAP_PREFIX
from .http import BadContent, FetchError, PoliteClient
from .options import RemoteOptions

#: Half the width of the Web Mercator world (EPSG:3857), in metres.
MERCATOR_HALF = 20037508.342789244
#: Pixel side of a WMS block (one GetMap request).
WMS_BLOCK = 512
#: Deepest zoom level accepted for XYZ layers.
MAX_ZOOM = 24
#: Pixels read around a window by GDAL's resampling kernels; their blocks are fetched too.
READ_MARGIN = 2
#: Typical bytes of a 256 × 256 web map tile, for estimates before anything is cached.
TYPICAL_BYTES = {"png": 100_000, "jpeg": 25_000, "webp": 20_000}
KINDS = ("xyz", "wms")
#: Above this many web map tiles an estimate does not look in the cache (far beyond any sensible cap anyway).
MAX_CACHE_SCAN = 100_000
#: min x, min y, max x, max y.
Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class WebMapSource:
    """A web map layer, its pixel grid and the window to index: everything a re-run needs.

    ``window`` is (col, row, width, height) on the grid: XYZ pixels of ``zoom`` counted from the
    north-west corner of the Web Mercator world; WMS pixels of ``res`` CRS units counted east
    and south from the CRS origin. ``referer`` and ``authcfg`` (a QGIS authentication
    configuration id, never a secret) come from the QGIS layer when there is one.
    """

    kind: str
    url: str
    window: tuple[int, int, int, int]
    zoom: int | None = None
    tile: int = 256
    crs: str = "EPSG:3857"
    res: float | None = None
    layers: str = ""
    styles: str = ""
    format: str = "image/png"
    version: str = "1.3.0"
    referer: str = ""
    authcfg: str = ""

    # -- the canonical string ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = [int(v) for v in self.window]
        if self.kind == "xyz":
            for key in ("crs", "res", "layers", "styles", "format", "version"):
                data.pop(key)
        else:
            data.pop("zoom")
        return {k: v for k, v in data.items() if v not in ("", None)}

    def to_path(self) -> str:
        """``webmap:{JSON}/label``: what the index stores as this source's raster path."""
        return WEBMAP_PREFIX + json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")) + "/" + self.label()

    @classmethod
    def from_path(cls, path: str) -> "WebMapSource":
        text = str(path)
        if not text.startswith(WEBMAP_PREFIX):
            raise EngineError(f"{text[:80]} is not a web map source.")
        body = text[len(WEBMAP_PREFIX):]
        end = body.rfind("}")
        try:
            data = json.loads(body[:end + 1])
            window = tuple(int(v) for v in data.pop("window"))
            source = cls(window=window, **data)  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError) as exc:
            raise EngineError(f"The web map source {text[:120]}… is damaged ({exc}).") from None
        return source.validate()

    def validate(self) -> "WebMapSource":
        if self.kind not in KINDS:
            raise EngineError(f"Unknown web map kind {self.kind!r}; use one of {', '.join(KINDS)}.")
        scheme = urllib.parse.urlparse(self.url).scheme.lower()
        if scheme not in ("http", "https"):
            raise EngineError(f"The web map URL {self.url!r} must start with http:// or https://.")
        if len(self.window) != 4 or self.window[2] < 1 or self.window[3] < 1:
            raise EngineError(f"The web map window {self.window} is empty.")
        if self.kind == "xyz":
            has_xy = ("{x}" in self.url and ("{y}" in self.url or "{-y}" in self.url)) or "{q}" in self.url
            if not has_xy or ("{z}" not in self.url and "{q}" not in self.url):
                raise EngineError(f"The XYZ URL {self.url!r} needs {{x}}, {{y}} (or {{-y}}) and {{z}} "
                                  "(or {q} for quadkeys) where the tile numbers go.")
            if not isinstance(self.zoom, int) or not 0 <= self.zoom <= MAX_ZOOM:
                raise EngineError(f"The zoom level must be a whole number from 0 to {MAX_ZOOM}, not {self.zoom!r}.")
            if self.tile not in (256, 512):
                raise EngineError(f"XYZ tiles are 256 or 512 pixels wide, not {self.tile!r}.")
            world = self.tile * 2 ** self.zoom
            col, row, width, height = self.window
            if col < 0 or row < 0 or col + width > world or row + height > world:
                raise EngineError("The extent reaches beyond the Web Mercator world (latitudes beyond ±85.05°).")
        else:
            if not self.layers:
                raise EngineError("A WMS source needs the layer name(s) to request (LAYERS).")
            if not self.res or not math.isfinite(self.res) or self.res <= 0:
                raise EngineError(f"The WMS resolution must be a positive number, not {self.res!r}.")
            if self.version not in ("1.1.1", "1.3.0"):
                raise EngineError(f"WMS version {self.version!r} is not supported; use 1.1.1 or 1.3.0.")
        return self

    def label(self) -> str:
        host = urllib.parse.urlparse(self.url).hostname or "web map"
        if self.kind == "xyz":
            text = f"{host} z{self.zoom}"
        else:
            text = f"{host} {self.layers} {self.res:.6g}"
        return text.replace("/", "_").replace("\\", "_")

    def fingerprint(self) -> str:
        """Identity of the source: its description (web map content has no cheap validator to ask)."""
        return hashlib.sha256(("webmap:" + json.dumps(self.to_dict(), sort_keys=True)).encode()).hexdigest()

    # -- the pixel grid --------------------------------------------------------------------
    @property
    def block(self) -> int:
        return self.tile if self.kind == "xyz" else WMS_BLOCK

    def grid(self) -> tuple[float, float, float]:
        """(origin x, origin y, pixel size) of the grid, in CRS units."""
        if self.kind == "xyz":
            return -MERCATOR_HALF, MERCATOR_HALF, 2 * MERCATOR_HALF / (self.tile * 2 ** int(self.zoom or 0))
        return 0.0, 0.0, float(self.res or 0.0)

    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        ox, oy, res = self.grid()
        col, row = self.window[:2]
        return (ox + col * res, res, 0.0, oy - row * res, 0.0, -res)

    def block_range(self) -> tuple[int, int, int, int]:
        """First and last block column and row covering the window."""
        b = self.block
        col, row, width, height = self.window
        return col // b, row // b, (col + width - 1) // b, (row + height - 1) // b

    def blocks_for(self, col_off: int, row_off: int, width: int, height: int,
                   margin: int = READ_MARGIN) -> list[tuple[int, int]]:
        """Blocks under a window of the raster (offsets relative to the window), with a margin, clamped."""
        b = self.block
        c0, r0, c1, r1 = self.block_range()
        col, row = self.window[:2]
        x0, y0 = col + col_off - margin, row + row_off - margin
        x1, y1 = col + col_off + width - 1 + margin, row + row_off + height - 1 + margin
        return [(c, r) for r in range(max(r0, y0 // b), min(r1, y1 // b) + 1)
                for c in range(max(c0, x0 // b), min(c1, x1 // b) + 1)]

    def all_blocks(self) -> Iterator[tuple[int, int]]:
        c0, r0, c1, r1 = self.block_range()
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                yield c, r

    def block_url(self, col: int, row: int) -> str:
        if self.kind == "xyz":
            z = int(self.zoom or 0)
            quadkey = "".join(str(((col >> (i - 1)) & 1) | (((row >> (i - 1)) & 1) << 1)) for i in range(z, 0, -1))
            return (self.url.replace("{z}", str(z)).replace("{x}", str(col)).replace("{-y}", str(2 ** z - 1 - row))
                    .replace("{y}", str(row)).replace("{q}", quadkey))
        ox, oy, res = self.grid()
        size = self.block * res
        x0, y1 = ox + col * size, oy - row * size
        x1, y0 = x0 + size, y1 - size
        if self.version == "1.3.0" and _lat_first(self.crs):
            bbox = (y0, x0, y1, x1)
        else:
            bbox = (x0, y0, x1, y1)
        params = {"SERVICE": "WMS", "VERSION": self.version, "REQUEST": "GetMap", "LAYERS": self.layers,
                  "STYLES": self.styles, "FORMAT": self.format, "TRANSPARENT": "TRUE",
                  "WIDTH": str(self.block), "HEIGHT": str(self.block),
                  "CRS" if self.version == "1.3.0" else "SRS": self.crs,
                  "BBOX": ",".join(_num(v) for v in bbox)}
        parts = urllib.parse.urlsplit(self.url)
        kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                if k.upper() not in params and k.upper() not in ("CRS", "SRS")]
        query = urllib.parse.urlencode(kept + list(params.items()), safe=",:/")
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def image_format(self) -> str:
        """png, jpeg or webp: what the tiles probably are, for size estimates."""
        text = (self.format if self.kind == "wms" else urllib.parse.urlparse(self.url).path).lower()
        if "png" in text:
            return "png"
        if "webp" in text:
            return "webp"
        return "jpeg"

    def cache_folder(self, root: Path) -> Path:
        """Where this grid's blocks live: shared by every window of the same layer and grid."""
        if self.kind == "xyz":
            key = json.dumps([self.url, self.tile])
            return root / "xyz" / hashlib.sha256(key.encode()).hexdigest()[:24] / str(self.zoom)
        key = json.dumps([self.url, self.layers, self.styles, self.crs, self.format, self.version, self.res])
        return root / "wms" / hashlib.sha256(key.encode()).hexdigest()[:24]


def _num(value: float) -> str:
    return repr(round(float(value), 9))


def _lat_first(crs: str) -> bool:
    """WMS 1.3.0 writes BBOX in the CRS's own axis order: latitude first for EPSG:4326 and kin."""
    from osgeo import osr

    srs = osr.SpatialReference()
    if srs.SetFromUserInput(crs) != 0:
        return False
    return bool(srs.EPSGTreatsAsLatLong() or srs.EPSGTreatsAsNorthingEasting())


# -- building sources from an extent ---------------------------------------------------------
def _srs(crs: str):
    from osgeo import osr

    srs = osr.SpatialReference()
    if srs.SetFromUserInput(crs) != 0:
        raise EngineError(f"{crs!r} is not a coordinate reference system GDAL knows (e.g. EPSG:3857).")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def transform_bounds(bounds: Bounds, src: str, dst: str) -> Bounds:
    """An extent from one CRS to another, edges densified so curved edges stay inside."""
    from osgeo import osr

    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not (minx < maxx and miny < maxy):
        raise EngineError(f"The extent {bounds} is empty; give it as min x, min y, max x, max y.")
    if src == dst:
        return minx, miny, maxx, maxy
    src_srs, dst_srs = _srs(src), _srs(dst)
    if src_srs.IsGeographic():
        miny, maxy = max(miny, -85.05112878), min(maxy, 85.05112878)
    transform = osr.CoordinateTransformation(src_srs, dst_srs)
    try:
        out = transform.TransformBounds(minx, miny, maxx, maxy, 21)
    except RuntimeError as exc:
        raise EngineError(f"Cannot convert the extent {bounds} from {src} to {dst} ({exc}).") from None
    if not all(math.isfinite(v) for v in out):
        raise EngineError(f"The extent {bounds} cannot be expressed in {dst}.")
    return tuple(float(v) for v in out)  # type: ignore[return-value]


def _window(bounds: Bounds, ox: float, oy: float, res: float) -> tuple[int, int, int, int]:
    """The grid window covering ``bounds`` (snapped outward to whole pixels, within a micro-pixel)."""
    minx, miny, maxx, maxy = bounds
    eps = 1e-6
    c0 = math.floor((minx - ox) / res + eps)
    c1 = math.ceil((maxx - ox) / res - eps)
    r0 = math.floor((oy - maxy) / res + eps)
    r1 = math.ceil((oy - miny) / res - eps)
    return c0, r0, max(1, c1 - c0), max(1, r1 - r0)


def xyz_source(url: str, bounds: Bounds, bounds_crs: str = "EPSG:4326",
               zoom: int | None = None, resolution_m: float | None = None, tile: int = 256,
               referer: str = "", authcfg: str = "") -> WebMapSource:
    """An XYZ layer over an extent, at a zoom level or at the zoom nearest a ground resolution."""
    merc = transform_bounds(bounds, bounds_crs, "EPSG:3857")
    if zoom is None:
        if not resolution_m or resolution_m <= 0:
            raise EngineError("Give the zoom level or the ground resolution in metres per pixel.")
        zoom = zoom_for_resolution(resolution_m, _centre_latitude(merc), tile)
    ox, oy, res = -MERCATOR_HALF, MERCATOR_HALF, 2 * MERCATOR_HALF / (tile * 2 ** int(zoom))
    col, row, width, height = _window(merc, ox, oy, res)
    world = tile * 2 ** int(zoom)
    col, row = max(0, col), max(0, row)
    width, height = min(width, world - col), min(height, world - row)
    return WebMapSource("xyz", url, (col, row, width, height), zoom=int(zoom), tile=tile, referer=referer,
                        authcfg=authcfg).validate()


def wms_source(url: str, layers: str, bounds: Bounds, bounds_crs: str = "EPSG:4326",
               crs: str = "EPSG:3857", resolution_m: float | None = None, res: float | None = None,
               styles: str = "", fmt: str = "image/png", version: str = "1.3.0", referer: str = "",
               authcfg: str = "") -> WebMapSource:
    """A WMS layer over an extent at a ground resolution (metres) or a resolution in CRS units."""
    native = transform_bounds(bounds, bounds_crs, crs)
    if res is None:
        if not resolution_m or resolution_m <= 0:
            raise EngineError("Give the ground resolution in metres per pixel.")
        res = resolution_m * units_per_metre(crs, native)
    return WebMapSource("wms", url, _window(native, 0.0, 0.0, res), crs=crs, res=float(res), layers=layers,
                        styles=styles, format=fmt, version=version, referer=referer, authcfg=authcfg).validate()


def _centre_latitude(merc: Bounds) -> float:
    y = (merc[1] + merc[3]) / 2
    return math.degrees(math.atan(math.sinh(y / 6378137.0)))


def ground_resolution(zoom: int, latitude: float, tile: int = 256) -> float:
    """Metres on the ground per pixel of an XYZ zoom level at a latitude (spherical Web Mercator)."""
    return 2 * MERCATOR_HALF / (tile * 2 ** zoom) * math.cos(math.radians(latitude))


def zoom_for_resolution(metres: float, latitude: float, tile: int = 256) -> int:
    """The zoom level whose ground pixel is nearest ``metres`` (in log scale) at ``latitude``."""
    exact = math.log2(2 * MERCATOR_HALF * math.cos(math.radians(latitude)) / (tile * metres))
    return int(min(MAX_ZOOM, max(0, round(exact))))


def units_per_metre(crs: str, bounds: Bounds) -> float:
    """CRS units per ground metre along x at the centre of ``bounds`` (degrees, feet or map metres)."""
    from osgeo import osr

    srs = _srs(crs)
    cx, cy = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    step = (bounds[2] - bounds[0]) / 1000 or 1e-6
    geog = srs.CloneGeogCS()
    geog.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_geog = osr.CoordinateTransformation(srs, geog)
    (lon0, lat0, *_), (lon1, lat1, *_) = to_geog.TransformPoints([(cx - step / 2, cy), (cx + step / 2, cy)])
    radius = geog.GetSemiMajor() or 6378137.0
    phi = math.radians((lat0 + lat1) / 2)
    metres = radius * math.hypot(math.radians(lon1 - lon0) * math.cos(phi), math.radians(lat1 - lat0))
    if not metres > 0:
        raise EngineError(f"Cannot measure ground metres in {crs} at {cx:.6g}, {cy:.6g}.")
    return step / metres


# -- estimates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """What indexing a web map source will cost, known before the first request."""

    tiles: int
    blocks: int
    cached: int
    megabytes: float
    ground_m: float

    @property
    def requests(self) -> int:
        return self.blocks - self.cached

    def text(self) -> str:
        return (f"{self.tiles} tiles to index from {self.blocks} web map tiles, {self.requests} to download "
                f"({self.cached} already cached), about {self.megabytes:.1f} MB, {self.ground_m:.2g} m per pixel")


def estimate(path: str, tiling: Any, options: RemoteOptions) -> Estimate:
    """Tiles, requests and megabytes for a web map source (looks in the cache; requests nothing)."""
    from ..tiling import ground_pixel_size, open_raster, plan_windows

    source = WebMapSource.from_path(path)
    info = open_raster(path, tiling)
    tiles = len(plan_windows(info, tiling))
    folder = source.cache_folder(options.tile_cache())
    c0, r0, c1, r1 = source.block_range()
    blocks, cached = (c1 - c0 + 1) * (r1 - r0 + 1), 0
    sizes: list[int] = []
    if blocks <= MAX_CACHE_SCAN and folder.is_dir():
        for col, row in source.all_blocks():
            try:
                size = (folder / str(col) / str(row)).stat().st_size
            except OSError:
                continue
            cached += 1
            if len(sizes) < 200:
                sizes.append(size)
    per_block = (sum(sizes) / len(sizes) if len(sizes) >= 5 else
                 TYPICAL_BYTES[source.image_format()] * (source.block / 256) ** 2)
    return Estimate(tiles, blocks, cached, (blocks - cached) * per_block / 1e6, min(ground_pixel_size(info)))


# -- reading -----------------------------------------------------------------------------------
_TRANSPARENT: dict[int, bytes] = {}
_TRANSPARENT_LOCK = threading.Lock()


def transparent_png(size: int) -> bytes:
    """A fully transparent RGBA PNG: what a tile the server does not have (404) is stored as."""
    from osgeo import gdal

    with _TRANSPARENT_LOCK:
        if size not in _TRANSPARENT:
            mem = gdal.GetDriverByName("MEM").Create("", size, size, 4)
            name = f"/vsimem/rsclip-empty-{uuid.uuid4().hex}.png"
            gdal.GetDriverByName("PNG").CreateCopy(name, mem)
            _TRANSPARENT[size] = bytes(_read_vsimem(name))
            gdal.Unlink(name)
    return _TRANSPARENT[size]


def _read_vsimem(name: str) -> bytes:
    from osgeo import gdal

    handle = gdal.VSIFOpenL(name, "rb")
    try:
        gdal.VSIFSeekL(handle, 0, 2)
        size = gdal.VSIFTellL(handle)
        gdal.VSIFSeekL(handle, 0, 0)
        return gdal.VSIFReadL(1, size, handle)
    finally:
        gdal.VSIFCloseL(handle)


def check_image(data: bytes, content_type: str, size: int) -> None:
    """Raise ``BadContent`` unless ``data`` decodes fully as a ``size`` × ``size`` image."""
    from osgeo import gdal

    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith("text/") or kind.endswith("xml") or kind.endswith("json") or data[:5] in (b"<?xml", b"<Serv"):
        snippet = " ".join(data[:300].decode("utf-8", "replace").split())
        raise BadContent(f"the server sent {kind or 'text'} instead of an image: {snippet[:160]}", permanent=True)
    if not data:
        raise BadContent("empty image")
    name = f"/vsimem/rsclip-block-{uuid.uuid4().hex}"
    gdal.FileFromMemBuffer(name, data)
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        gdal.ErrorReset()
        try:
            ds = gdal.Open(name)
            if ds is None:
                raise BadContent(f"damaged image ({gdal.GetLastErrorMsg().strip() or 'not an image'})")
            if (ds.RasterXSize, ds.RasterYSize) != (size, size):
                raise BadContent(f"the tile is {ds.RasterXSize}×{ds.RasterYSize} px, not the expected {size}×{size}",
                                 permanent=True)
            if ds.ReadRaster() is None or gdal.GetLastErrorType() >= gdal.CE_Failure:
                raise BadContent(f"damaged image ({gdal.GetLastErrorMsg().strip() or 'cannot decode'})")
        except RuntimeError as exc:
            raise BadContent(f"damaged image ({exc})") from None
        finally:
            ds = None
    finally:
        gdal.PopErrorHandler()
        gdal.Unlink(name)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with open(part, "wb") as fh:
            fh.write(data)
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()


@dataclass
class _Progress:
    fetched: int = 0
    empty: int = 0
    failed: dict = field(default_factory=dict)
    in_a_row: int = 0
    fatal: str | None = None


def request_headers(source: WebMapSource, options: RemoteOptions) -> dict[str, str]:
    """User agent, job headers, the source's credentials and Referer; ``EngineError`` when credentials are missing."""
    headers = options.headers_for(source.authcfg)
    if source.referer:
        headers.setdefault("Referer", source.referer)
    return headers


class WebMapReader:
    """A web map source opened for reading: a GDAL dataset over the tile cache plus the downloads behind it.

    Downloads run in a small thread pool (``max_connections``) that works ahead of the reader
    along the windows announced by ``expect``; ``io(window)`` waits for the blocks that window
    needs. Use from one reading thread; ``close`` stops the downloads.
    """

    def __init__(self, source: WebMapSource, options: RemoteOptions) -> None:
        self.source = source
        self.options = options
        self.headers: dict[str, str] | None = None  # resolved at the first download: estimates need no credentials
        self.folder = source.cache_folder(options.tile_cache())
        self.dataset = self._open()
        self._stop = threading.Event()
        self._client: PoliteClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[tuple[int, int], Future] = {}
        self._state = _Progress()
        self._lock = threading.Lock()
        self._plan: Iterator[Any] | None = None
        self._cancel: Any = None

    # -- the GDAL side -------------------------------------------------------------------
    def _open(self) -> Any:
        from osgeo import gdal

        src = self.source
        ox, oy, res = src.grid()
        b = src.block
        c0, r0, c1, r1 = src.block_range()
        size = b * res
        template = self.folder.resolve().as_uri() + "/${x}/${y}"
        xml = (f"<GDAL_WMS><Service name=\"TMS\"><ServerUrl>{escape(template)}</ServerUrl></Service>"
               f"<DataWindow><UpperLeftX>{_num(ox + c0 * size)}</UpperLeftX><UpperLeftY>{_num(oy - r0 * size)}"
               f"</UpperLeftY><LowerRightX>{_num(ox + (c1 + 1) * size)}</LowerRightX><LowerRightY>"
               f"{_num(oy - (r1 + 1) * size)}</LowerRightY><SizeX>{(c1 - c0 + 1) * b}</SizeX>"
               f"<SizeY>{(r1 - r0 + 1) * b}</SizeY><TileLevel>0</TileLevel><TileCountX>{c1 - c0 + 1}</TileCountX>"
               f"<TileCountY>{r1 - r0 + 1}</TileCountY><TileX>{c0}</TileX><TileY>{r0}</TileY>"
               f"<YOrigin>top</YOrigin></DataWindow><Projection>{escape(src.crs)}</Projection>"
               f"<BlockSizeX>{b}</BlockSizeX><BlockSizeY>{b}</BlockSizeY><BandsCount>4</BandsCount>"
               f"<DataType>Byte</DataType><MaxConnections>1</MaxConnections></GDAL_WMS>")
        col, row, width, height = src.window
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            gdal.ErrorReset()
            try:
                blocks = gdal.OpenEx(xml, gdal.OF_RASTER | gdal.OF_READONLY)
                crop = None if blocks is None else gdal.Translate(
                    "", blocks, format="VRT", srcWin=[col - c0 * b, row - r0 * b, width, height])
                reason = gdal.GetLastErrorMsg().strip()
            except RuntimeError as exc:  # GDAL in exception mode (set by someone else in this process)
                blocks = crop = None
                reason = str(exc).strip()
        finally:
            gdal.PopErrorHandler()
        if crop is None:
            raise EngineError(f"Cannot set up the web map {src.label()} for reading ({reason or 'GDAL error'}).")
        self._blocks_ds = blocks
        return crop

    def block_path(self, col: int, row: int) -> Path:
        return self.folder / str(col) / str(row)

    # -- the download side ---------------------------------------------------------------
    def expect(self, windows: Iterable[Any], cancel: Any = None) -> None:
        self._plan = iter(windows)
        self._cancel = cancel

    @contextmanager
    def io(self, window: Any = None) -> Iterator[None]:
        if window is not None:
            self.ensure(window.col_off, window.row_off, window.width, window.height)
        yield

    def ensure(self, col_off: int, row_off: int, width: int, height: int) -> None:
        """Return once every block under the window is on disk; raise ``TileUnavailable`` if one failed."""
        needed = self.source.blocks_for(col_off, row_off, width, height)
        self._submit(needed)
        self._work_ahead()
        for block in needed:
            future = self._pending.get(block)
            while future is not None and not future.done():
                self._check_stop()
                try:
                    future.result(timeout=0.2)
                except Exception:  # noqa: BLE001 - a download's failure is recorded in its state
                    pass
            self._pending.pop(block, None)
        self._check_stop()
        failed = [(b, self._state.failed[b]) for b in needed if b in self._state.failed]
        if failed:
            (col, row), why = failed[0]
            raise TileUnavailable(f"web map tile {col},{row} of {self.source.label()} could not be downloaded ({why})")

    def _check_stop(self) -> None:
        if self._cancel is not None and self._cancel():
            raise Cancelled()
        if self._stop.is_set():
            raise EngineError(f"The web map reader of {self.source.label()} is closed.")
        state = self._state
        if state.fatal:
            raise SourceUnavailable(f"{self.source.label()}: {state.fatal}.")
        if state.in_a_row >= self.options.max_failures_in_a_row:
            raise SourceUnavailable(
                f"{self.source.label()}: {state.in_a_row} web map tiles in a row could not be downloaded "
                f"({self.stats_text()}); stopped. The tiles indexed so far are kept; run again later to resume.")

    def _submit(self, blocks: Iterable[tuple[int, int]]) -> int:
        submitted = 0
        for block in blocks:
            if block in self._pending or block in self._state.failed or self.block_path(*block).exists():
                continue
            if self._pool is None:
                self.headers = request_headers(self.source, self.options)
                self._client = PoliteClient(self.options, self._stop)
                self._pool = ThreadPoolExecutor(self.options.max_connections, thread_name_prefix="rsclip-webmap")
            self._pending[block] = self._pool.submit(self._fetch, block)
            submitted += 1
        return submitted

    def _work_ahead(self) -> None:
        """Queue the blocks of the next windows until a few requests per connection are waiting."""
        limit = 4 * self.options.max_connections
        for key in [k for k, f in self._pending.items() if f.done()]:
            del self._pending[key]
        while self._plan is not None and len(self._pending) < limit:
            window = next(self._plan, None)
            if window is None:
                self._plan = None
                break
            self._submit(self.source.blocks_for(window.col_off, window.row_off, window.width, window.height))

    def _fetch(self, block: tuple[int, int]) -> None:
        path = self.block_path(*block)
        if path.exists():
            return
        if self._state.fatal:
            with self._lock:
                self._state.failed[block] = "not asked: " + self._state.fatal
            return
        assert self._client is not None
        url = self.source.block_url(*block)
        size = self.source.block
        try:
            response = self._client.get(url, self.headers or {}, lambda data, kind: check_image(data, kind, size))
        except FetchError as exc:
            with self._lock:
                self._state.failed[block] = exc.reason
                self._state.in_a_row += 1
                if exc.permanent:  # refused access, a bad request, an error document: asking again cannot help
                    self._state.fatal = exc.reason
            return
        try:
            _write_atomic(path, transparent_png(size) if response.empty else response.data)
        except OSError as exc:
            with self._lock:
                self._state.failed[block] = f"cannot write the tile cache ({exc.strerror or exc})"
                self._state.fatal = f"cannot write the tile cache {self.folder} ({exc.strerror or exc})"
            return
        with self._lock:
            self._state.fetched += 1
            self._state.empty += response.empty
            self._state.in_a_row = 0

    def stats_text(self) -> str:
        stats = self._client.stats.text() if self._client else "0 requests"
        return stats + (f", {self._state.empty} empty" if self._state.empty else "")

    @property
    def requests(self) -> int:
        return self._client.stats.requests if self._client else 0

    def close(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.dataset = None
        self._blocks_ds = None

