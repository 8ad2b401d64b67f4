"""Cloud-optimised GeoTIFFs (and any raster) by URL, read by GDAL's /vsicurl/ with range requests.

GDAL reads only the byte ranges of the blocks (or overview blocks) a window needs, so indexing
a COG downloads each needed block once and a thumbnail a few kilobytes. The job's HTTP options
(user agent, retries and their delay, timeout, extra headers) go into GDAL's *thread-local*
configuration around each open and read, never the process-wide one that QGIS and other
plugins share; GDAL 3.6 applies its own retries to /vsicurl/ (429, 5xx), but not Retry-After.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from ..errors import EngineError
from ..gdalutil import thread_config
from . import display_name
from .options import RemoteOptions

#: Bytes at the start of a remote file hashed into its fingerprint (already read when GDAL opens it).
HEAD_BYTES = 16384


def gdal_http_config(options: RemoteOptions) -> dict[str, str]:
    """GDAL configuration options that carry ``options`` to /vsicurl/ and friends."""
    headers = {k: v for k, v in options.headers_for("").items() if k.lower() != "user-agent"}
    config = {
        "GDAL_HTTP_USERAGENT": options.user_agent,
        "GDAL_HTTP_MAX_RETRY": str(options.retries),
        "GDAL_HTTP_RETRY_DELAY": f"{max(options.backoff_s, 0.01):g}",
        "GDAL_HTTP_TIMEOUT": str(max(1, round(options.timeout_s))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(min(options.timeout_s, 30)))),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }
    if headers:
        config["GDAL_HTTP_HEADERS"] = "\r\n".join(f"{k}: {v}" for k, v in headers.items())
    return config


class CogReader:
    """A raster opened by URL, whose every read runs under the job's HTTP options."""

    def __init__(self, path: str, options: RemoteOptions) -> None:
        from osgeo import gdal

        self.path = path
        self.config = gdal_http_config(options)
        with thread_config(self.config):
            if hasattr(gdal, "VSICurlPartialClearCache") and "/vsicurl" in path:
                gdal.VSICurlPartialClearCache(path)  # see a file replaced on the server since the last read
            gdal.PushErrorHandler("CPLQuietErrorHandler")
            try:
                gdal.ErrorReset()
                try:
                    ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
                    reason = gdal.GetLastErrorMsg().strip()
                except RuntimeError as exc:
                    ds, reason = None, str(exc).strip()
            finally:
                gdal.PopErrorHandler()
        if ds is None:
            if not reason or "not recognized as a supported" in reason or "does not exist" in reason:
                reason = "it does not exist there, the server refused it, or it is not a raster GDAL reads"
            raise EngineError(f"{display_name(path)} cannot be read over the network ({reason}; {_url(path)}).")
        if ds.RasterCount == 0:
            raise EngineError(f"{display_name(path)} has no raster bands ({_url(path)}).")
        self.dataset = ds

    @contextmanager
    def io(self, window: Any = None) -> Iterator[None]:
        with thread_config(self.config):
            yield

    def expect(self, windows: Iterable[Any], cancel: Any = None) -> None:
        """GDAL fetches the byte ranges a read needs itself; nothing to plan ahead."""

    def close(self) -> None:
        self.dataset = None


def cog_fingerprint(path: str, options: RemoteOptions) -> str:
    """sha256 of the file's size, Last-Modified, ETag and first 16 KiB, as the server reports them now."""
    from osgeo import gdal

    with thread_config(gdal_http_config(options)):
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            stat = gdal.VSIStatL(path, gdal.VSI_STAT_EXISTS_FLAG | gdal.VSI_STAT_SIZE_FLAG)
            headers = gdal.GetFileMetadata(path, "HEADERS") or {}
            head = b""
            handle = gdal.VSIFOpenL(path, "rb")
            if handle is not None:
                try:
                    head = gdal.VSIFReadL(1, HEAD_BYTES, handle) or b""
                finally:
                    gdal.VSIFCloseL(handle)
        finally:
            gdal.PopErrorHandler()
    if stat is None:
        raise EngineError(f"{display_name(path)} cannot be found over the network ({_url(path)}).")
    etag = next((v for k, v in headers.items() if k.lower() == "etag"), "")
    digest = hashlib.sha256(f"remote:{stat.size}:{stat.mtime}:{etag}".encode())
    digest.update(bytes(head))
    return digest.hexdigest()


def _url(path: str) -> str:
    return path[len("/vsicurl/"):] if path.startswith("/vsicurl/") else path
