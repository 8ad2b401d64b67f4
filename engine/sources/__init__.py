"""Imagery that is not a local file: web map layers (XYZ, WMS), cloud-optimised GeoTIFFs by URL, STAC.

The index keys rasters by a path string. A remote source keeps that contract with a canonical
string of its own, never resolved as a local file:

* a COG by URL: GDAL's ``/vsicurl/https://…`` form (``https://…`` and ``s3://…`` are rewritten to it),
  read window by window with HTTP range requests;
* a web map: ``webmap:{…JSON…}/label`` — the URL template or service, the pixel grid (zoom or
  ground resolution) and the window of it to index; the label after the last ``/`` is what
  ``Path(path).name`` shows wherever a raster is named.

``tiling`` asks this package to open such a source (``open_remote``) and to fingerprint it; the
objects returned carry a GDAL dataset plus the I/O rules of the source (HTTP options in GDAL's
thread-local configuration, or downloading the web map tiles a window needs first).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Protocol

from ..errors import EngineError
from .options import RemoteOptions, current, using

__all__ = ["RemoteOptions", "RemoteRaster", "SourceUnavailable", "TileUnavailable", "canonical_path",
           "check_request_cap", "current", "display_name", "is_remote", "open_remote", "remote_fingerprint", "using"]

WEBMAP_PREFIX = "webmap:"
#: GDAL's network file systems: paths under them are never local files.
NETWORK_VSI = ("/vsicurl/", "/vsicurl?", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/",
               "/vsiwebhdfs/", "/vsihdfs/", "/vsis3_streaming/", "/vsicurl_streaming/")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
#: URL schemes given by users → GDAL's file system for them.
_SCHEME_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


class TileUnavailable(EngineError):
    """One tile could not be read (its web map tiles failed after retries); the others go on."""


class SourceUnavailable(EngineError):
    """The server keeps failing: stop this source, keep what was indexed, resume on the next run."""


class RemoteRaster(Protocol):
    """What ``tiling`` needs from an opened remote source."""

    dataset: Any

    def io(self, window: Any = None) -> Any:
        """Context manager around every read (of ``window`` when given) of ``dataset``."""

    def expect(self, windows: Iterable[Any], cancel: Any = None) -> None:
        """The windows about to be read, in order (a web map downloads ahead of them)."""

    def close(self) -> None:
        ...


def is_remote(path: str | Path) -> bool:
    """True for web map sources, URLs and GDAL network paths (never resolved as local files)."""
    text = str(path)
    return text.startswith(WEBMAP_PREFIX) or bool(_SCHEME.match(text)) or any(v in text for v in NETWORK_VSI)


def canonical_path(path: str | Path) -> str:
    """The string an index keys a raster by: an absolute local path, or a remote source's canonical form."""
    text = str(path).strip() if isinstance(path, str) else str(path)
    if text.startswith(WEBMAP_PREFIX):
        from .webmap import WebMapSource

        return WebMapSource.from_path(text).to_path()
    match = _SCHEME.match(text)
    if match:
        vsi = _SCHEME_VSI.get(match.group(1).lower())
        if vsi is None:
            raise EngineError(f"{text} uses the {match.group(1)}:// scheme, which GDAL cannot read; give an "
                              "http(s):// URL, an s3:// or gs:// path, or a /vsi…/ GDAL path.")
        return vsi + (text if vsi == "/vsicurl/" else text[match.end():])
    if is_remote(text):
        return text
    return str(Path(text).expanduser().resolve())


def display_name(path: str | Path) -> str:
    """A short name for messages: a file's name, a URL's last part, a web map's label."""
    return Path(str(path)).name or str(path)


def open_remote(path: str, options: RemoteOptions | None = None) -> RemoteRaster:
    """Open a remote source with the current options (see ``options.using``); raises ``EngineError``."""
    options = options or current()
    if path.startswith(WEBMAP_PREFIX):
        from .webmap import WebMapReader, WebMapSource

        return WebMapReader(WebMapSource.from_path(path), options)
    from .cog import CogReader

    return CogReader(path, options)


def remote_fingerprint(path: str, options: RemoteOptions | None = None) -> str:
    """Identity of a remote source's content: the description for web maps, HTTP validators for files."""
    options = options or current()
    if path.startswith(WEBMAP_PREFIX):
        from .webmap import WebMapSource

        return WebMapSource.from_path(path).fingerprint()
    from .cog import cog_fingerprint

    return cog_fingerprint(path, options)


def check_request_cap(path: str, tiling: Any, options: RemoteOptions | None = None) -> None:
    """Refuse, before any request, a web map source needing more requests than the cap allows (or credentials)."""
    if not path.startswith(WEBMAP_PREFIX):
        return
    from .webmap import WebMapSource, estimate, request_headers

    options = options or current()
    request_headers(WebMapSource.from_path(path), options)  # credentials it names must be at hand
    guess = estimate(path, tiling, options)
    if guess.requests > options.max_requests:
        raise EngineError(f"Indexing {display_name(path)} needs {guess.requests} web map requests "
                          f"({guess.text()}), more than the cap of {options.max_requests}; raise the cap "
                          "(--max-requests, or the cap in the dialog), or choose a smaller extent or a coarser "
                          "resolution. Nothing was requested.")
