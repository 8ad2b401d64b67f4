"""How remote imagery is fetched: politeness limits, identity, credentials and the tile cache.

Options are chosen per job by its caller (the CLI from flags, the plugin from its dialog and
QGIS's authentication database) and made current for that job's thread with ``using``; the
engine's file-oriented functions (``tiling.open_raster``, ``RasterTiler``) pick them up when
they open a remote source. A ``ContextVar`` rather than a module global keeps two jobs running
side by side in one process (QGIS tasks) from seeing each other's options.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping

from .. import __version__
from ..errors import EngineError

#: Sent with every request unless the caller (or the layer) gives another: says who is asking.
DEFAULT_USER_AGENT = f"rsclip-search/{__version__} (semantic search of imagery; QGIS plugin and python -m engine)"


@dataclass(frozen=True)
class RemoteOptions:
    """Limits and identity for one job's HTTP requests. None of it is stored in an index.

    ``max_requests`` caps the web map requests one source may need (checked before the first
    request); ``max_connections`` requests run at once; a failed request is retried
    ``retries`` times, waiting ``backoff_s`` doubled each time (or what the server's
    Retry-After asks, up to ``max_retry_after_s``); ``max_rate`` limits request starts per
    second (0: no limit). ``headers`` go with every request of the job (e.g. an API key);
    ``auth`` maps a QGIS authentication configuration id named by a source to the headers it
    resolves to (filled by the plugin; the engine cannot read QGIS's encrypted database).
    """

    user_agent: str = DEFAULT_USER_AGENT
    max_connections: int = 2
    max_requests: int = 2000
    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 300.0
    timeout_s: float = 30.0
    max_rate: float = 0.0
    max_failures_in_a_row: int = 25
    headers: tuple[tuple[str, str], ...] = ()
    auth: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    cache_dir: str | None = None

    def validate(self) -> "RemoteOptions":
        if not isinstance(self.max_connections, int) or not 1 <= self.max_connections <= 16:
            raise EngineError(f"The number of connections must be from 1 to 16, not {self.max_connections!r}.")
        if not isinstance(self.max_requests, int) or self.max_requests < 0:
            raise EngineError(f"The request cap must be a whole number of requests, not {self.max_requests!r}.")
        if not isinstance(self.retries, int) or not 0 <= self.retries <= 20:
            raise EngineError(f"Retries must be from 0 to 20, not {self.retries!r}.")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.max_rate < 0:
            raise EngineError("Timeouts must be positive and delays and rates not negative.")
        return self

    def with_headers(self, headers: Mapping[str, str]) -> "RemoteOptions":
        return replace(self, headers=tuple(self.headers) + tuple((str(k), str(v)) for k, v in headers.items()))

    def headers_for(self, authcfg: str = "") -> dict[str, str]:
        """Headers for a request of a source that names ``authcfg`` (may be empty)."""
        out = {"User-Agent": self.user_agent}
        out.update(dict(self.headers))
        if authcfg:
            resolved = dict(self.auth).get(authcfg)
            if resolved is None:
                raise EngineError(f"This source uses the QGIS authentication configuration '{authcfg}', which only "
                                  "QGIS can open; index it from QGIS, or give the credentials as a header "
                                  "(--header 'Authorization: …').")
            out.update(dict(resolved))
        return out

    def tile_cache(self) -> Path:
        """Folder of downloaded web map tiles: ``cache_dir``, ``RSCLIP_WEB_CACHE`` or the user's cache."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("RSCLIP_WEB_CACHE")
        if env:
            return Path(env).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
        return (Path(base) if base else Path.home() / ".cache") / "rsclip_search" / "web"


_CURRENT: ContextVar[RemoteOptions | None] = ContextVar("rsclip_remote_options", default=None)


@contextmanager
def using(options: RemoteOptions | None) -> Iterator[RemoteOptions]:
    """Make ``options`` (validated; None: the defaults) current in this thread for the block."""
    chosen = (options or RemoteOptions()).validate()
    token = _CURRENT.set(chosen)
    try:
        yield chosen
    finally:
        _CURRENT.reset(token)


def current() -> RemoteOptions:
    """The options made current by ``using``, else the defaults."""
    return _CURRENT.get() or RemoteOptions()
