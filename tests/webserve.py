"""Imagery servers on 127.0.0.1 for the remote-source tests: files with range requests, XYZ tiles,
WMS GetMap and a small STAC API, all made from real rasters by GDAL, with every request logged.

``faults`` lets a test make the server misbehave per request (HTTP errors, Retry-After, slow
answers, truncated or damaged images), the way real tile servers do on a bad day.
"""
from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
from osgeo import gdal

MERCATOR_HALF = 20037508.342789244


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int
    sent: int
    user_agent: str | None
    headers: dict = field(default_factory=dict)


def encode(rgba: np.ndarray, fmt: str) -> bytes:
    """(4, h, w) uint8 → PNG (with alpha) or JPEG (RGB) bytes."""
    bands = rgba if fmt == "png" else rgba[:3]
    mem = gdal.GetDriverByName("MEM").Create("", bands.shape[2], bands.shape[1], bands.shape[0])
    for i, plane in enumerate(bands):
        mem.GetRasterBand(i + 1).WriteArray(plane)
    name = f"/vsimem/webserve-{uuid.uuid4().hex}.{fmt}"
    gdal.GetDriverByName("PNG" if fmt == "png" else "JPEG").CreateCopy(name, mem)
    handle = gdal.VSIFOpenL(name, "rb")
    gdal.VSIFSeekL(handle, 0, 2)
    size = gdal.VSIFTellL(handle)
    gdal.VSIFSeekL(handle, 0, 0)
    data = bytes(gdal.VSIFReadL(1, size, handle))
    gdal.VSIFCloseL(handle)
    gdal.Unlink(name)
    return data


class TileMaker:
    """Cuts XYZ tiles and WMS images from an RGBA raster; exact windows where the grids agree."""

    def __init__(self, raster: Path) -> None:
        self.raster = str(raster)
        ds = gdal.Open(self.raster)
        self.gt = ds.GetGeoTransform()
        self.size = (ds.RasterXSize, ds.RasterYSize)
        self.wkt = ds.GetProjection()
        self.lock = threading.Lock()
        self.cache: dict = {}

    def xyz(self, z: int, x: int, y: int, tile: int = 256) -> np.ndarray | None:
        res = 2 * MERCATOR_HALF / (tile * 2 ** z)
        bounds = (-MERCATOR_HALF + x * tile * res, MERCATOR_HALF - (y + 1) * tile * res,
                  -MERCATOR_HALF + (x + 1) * tile * res, MERCATOR_HALF - y * tile * res)
        return self.render(bounds, tile, tile, "EPSG:3857")

    def render(self, bounds, width: int, height: int, crs: str) -> np.ndarray | None:
        """RGBA pixels of ``bounds`` in ``crs``; None when none of the raster is there."""
        key = (tuple(round(b, 6) for b in bounds), width, height, crs)
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        res = (bounds[2] - bounds[0]) / width
        col = (bounds[0] - self.gt[0]) / self.gt[1]
        row = (self.gt[3] - bounds[3]) / -self.gt[5]
        same_grid = (crs == "EPSG:3857" and abs(res - self.gt[1]) < 1e-9 * res
                     and abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6)
        if same_grid:
            data = self._window(int(round(col)), int(round(row)), width, height)
        else:
            warped = gdal.Warp("", self.raster, format="MEM", outputBounds=bounds, width=width, height=height,
                               dstSRS=crs, resampleAlg="bilinear")
            data = warped.ReadAsArray()
        result = None if not data[3].any() else data
        with self.lock:
            self.cache[key] = result
        return result

    def _window(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        out = np.zeros((4, height, width), dtype=np.uint8)
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + width, self.size[0]), min(row + height, self.size[1])
        if c1 > c0 and r1 > r0:
            ds = gdal.Open(self.raster)
            out[:, r0 - row:r1 - row, c0 - col:c1 - col] = ds.ReadAsArray(c0, r0, c1 - c0, r1 - r0)
        return out


class ImageryServer:
    """A threaded HTTP server on 127.0.0.1: ``/files/…``, ``/xyz/{z}/{x}/{y}.png|jpg``, ``/wms``, ``/api/…``.

    ``faults(hit_number, method, path)`` returns None (answer normally) or one of "500", "503",
    "403", "429:<seconds>", "timeout" (no answer), "slow" (a correct answer after ``slow_s``),
    "truncate" (a body cut short of its Content-Length), "garbage" (a damaged image announced as complete).
    """

    def __init__(self, files: Path | None = None, tiles: TileMaker | None = None) -> None:
        self.files = files
        self.tiles = tiles
        self.hits: list[Hit] = []
        self.faults: Callable[[int, str, str], str | None] | None = None
        self.stac_items: list[dict] = []
        self.slow_s = 3.0
        self._lock = threading.Lock()
        self._count = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                server.answer(self, body=False)

            def do_GET(self):
                server.answer(self, body=True)

            def do_POST(self):
                server.answer(self, body=True)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ImageryServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, prefix: str = "/") -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path.startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self.hits.clear()

    # -- answering -------------------------------------------------------------------------
    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        with self._lock:  # faults are decided one request at a time, so a test's bookkeeping needs no lock
            self._count += 1
            fault = self.faults(self._count, handler.command, handler.path) if self.faults else None
        path = urllib.parse.urlsplit(handler.path).path
        hit = Hit(handler.command, handler.path, handler.headers.get("Range"), 0, 0,
                  handler.headers.get("User-Agent"), dict(handler.headers.items()))
        with self._lock:
            self.hits.append(hit)  # logged before answering, so a client never sees data the log lacks
        if fault == "slow":  # a slow but correct answer
            time.sleep(self.slow_s)
            fault = None
        try:
            if fault:
                self._fault(handler, fault, hit, path)
            elif path.startswith("/files/"):
                self._file(handler, path[len("/files/"):], body, hit)
            elif path.startswith("/xyz/"):
                self._xyz(handler, path, hit)
            elif path == "/wms":
                self._wms(handler, hit)
            elif path.startswith("/api"):
                self._api(handler, path, hit)
            else:
                self._send(handler, 404, b"not here", "text/plain", hit)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, handler, status: int, data: bytes, kind: str, hit: Hit, headers: dict | None = None,
              body: bool = True, length: int | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data) if length is None else length))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        hit.status = status
        if body:
            hit.sent = len(data)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _fault(self, handler, fault: str, hit: Hit, path: str) -> None:
        if fault in ("500", "503", "403", "404"):
            self._send(handler, int(fault), b"", "text/plain", hit)
        elif fault.startswith("429"):
            self._send(handler, 429, b"", "text/plain", hit, {"Retry-After": fault.split(":")[1]})
        elif fault == "timeout":
            time.sleep(self.slow_s)
            hit.status = -1
            handler.close_connection = True
        elif fault in ("truncate", "garbage"):
            data = self._tile_bytes(path) or b""
            if fault == "truncate":
                self._send(handler, 200, data[: len(data) // 2], "image/png", hit, length=len(data))
                handler.close_connection = True
            else:
                self._send(handler, 200, data[: len(data) // 2], "image/png", hit)

    def _file(self, handler, name: str, body: bool, hit: Hit) -> None:
        path = (self.files / urllib.parse.unquote(name)) if self.files else None
        if path is None or not path.is_file():
            self._send(handler, 404, b"", "text/plain", hit, body=body)
            return
        data = path.read_bytes()
        stat = path.stat()
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"',
                   "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True)}
        kind = "application/json" if name.endswith(".json") else "image/tiff"
        match = re.match(r"bytes=(\d+)-(\d*)", hit.range or "")
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(handler, 206, data[start:end + 1], kind, hit, headers, body)
        else:
            self._send(handler, 200, data, kind, hit, headers, body)

    def _tile_bytes(self, path: str) -> bytes | None:
        match = re.match(r"/xyz(?:/(\d+))?/(\d+)/(\d+)/(\d+)\.(png|jpg)$", path)
        if not match or self.tiles is None:
            return None
        tile = int(match.group(1) or 256)
        z, x, y = (int(match.group(i)) for i in (2, 3, 4))
        pixels = self.tiles.xyz(z, x, y, tile)
        return None if pixels is None else encode(pixels, "png" if match.group(5) == "png" else "jpeg")

    def _xyz(self, handler, path: str, hit: Hit) -> None:
        data = self._tile_bytes(path)
        if data is None:
            self._send(handler, 404, b"", "text/plain", hit)
        else:
            self._send(handler, 200, data, "image/png" if path.endswith(".png") else "image/jpeg", hit)

    def _wms(self, handler, hit: Hit) -> None:
        query = {k.upper(): v for k, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query)}
        if query.get("REQUEST") != "GetMap" or query.get("LAYERS") != "naip":
            error = b'<?xml version="1.0"?><ServiceExceptionReport><ServiceException>LayerNotDefined' \
                    b'</ServiceException></ServiceExceptionReport>'
            self._send(handler, 200, error, "application/vnd.ogc.se_xml", hit)
            return
        crs = query.get("CRS") or query.get("SRS")
        bbox = [float(v) for v in query["BBOX"].split(",")]
        if query.get("VERSION") == "1.3.0" and crs == "EPSG:4326":
            bbox = [bbox[1], bbox[0], bbox[3], bbox[2]]
        width, height = int(query["WIDTH"]), int(query["HEIGHT"])
        pixels = self.tiles.render(tuple(bbox), width, height, crs) if self.tiles else None
        if pixels is None:
            pixels = np.zeros((4, height, width), dtype=np.uint8)
        fmt = "png" if "png" in query.get("FORMAT", "png") else "jpeg"
        self._send(handler, 200, encode(pixels, fmt), f"image/{fmt}", hit)

    # -- a small STAC API ------------------------------------------------------------------
    def _api(self, handler, path: str, hit: Hit) -> None:
        base = self.url + "/api"
        if path in ("/api", "/api/"):
            landing = {"type": "Catalog", "id": "test-api", "stac_version": "1.0.0", "description": "test",
                       "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                      "https://api.stacspec.org/v1.0.0/item-search",
                                      "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"],
                       "links": [{"rel": "self", "href": base}, {"rel": "root", "href": base},
                                 {"rel": "search", "href": base + "/search", "method": "GET",
                                  "type": "application/geo+json"},
                                 {"rel": "search", "href": base + "/search", "method": "POST",
                                  "type": "application/geo+json"}]}
            self._json(handler, landing, hit)
        elif path == "/api/search":
            if handler.command == "POST":
                length = int(handler.headers.get("Content-Length") or 0)
                params = json.loads(handler.rfile.read(length) or b"{}")
            else:
                raw = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query))
                params = {"collections": raw.get("collections", "").split(",") if raw.get("collections") else None,
                          "bbox": [float(v) for v in raw["bbox"].split(",")] if raw.get("bbox") else None,
                          "datetime": raw.get("datetime")}
            items = [i for i in self.stac_items if _matches(i, params)]
            self._json(handler, {"type": "FeatureCollection", "features": items,
                                 "links": [{"rel": "root", "href": base}]}, hit, "application/geo+json")
        else:
            self._send(handler, 404, b"", "text/plain", hit)

    def _json(self, handler, data: dict, hit: Hit, kind: str = "application/json") -> None:
        self._send(handler, 200, json.dumps(data).encode(), kind, hit)


def _matches(item: dict, params: dict) -> bool:
    collections = params.get("collections")
    if collections and item.get("collection") not in collections:
        return False
    bbox = params.get("bbox")
    if bbox:
        b = item["bbox"]
        if b[0] > bbox[2] or b[2] < bbox[0] or b[1] > bbox[3] or b[3] < bbox[1]:
            return False
    when = params.get("datetime")
    if when:
        start, _, end = when.partition("/")
        stamp = item["properties"]["datetime"]
        if start not in ("", "..") and stamp < start:
            return False
        if end not in ("", "..") and stamp > end:
            return False
    return True


def mercator_raster(source: Path, out: Path, zoom: int, tile: int = 256) -> Path:
    """``source`` RGB(A) warped to Web Mercator on the pixel grid of an XYZ zoom level, with alpha."""
    res = 2 * MERCATOR_HALF / (tile * 2 ** zoom)
    rgb = gdal.Translate("", str(source), format="VRT", bandList=[1, 2, 3])
    for i, colour in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)):
        rgb.GetRasterBand(i + 1).SetColorInterpretation(colour)
    gdal.Warp(str(out), rgb, dstSRS="EPSG:3857", xRes=res, yRes=res, targetAlignedPixels=True, dstAlpha=True,
              srcNodata=0, resampleAlg="bilinear", creationOptions=["TILED=YES"])
    ds = gdal.Open(str(out))
    gt = ds.GetGeoTransform()
    assert math.isclose((gt[0] + MERCATOR_HALF) / res, round((gt[0] + MERCATOR_HALF) / res), abs_tol=1e-6)
    return out
