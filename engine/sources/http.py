"""A polite HTTP client for tile servers and catalogues: few connections, retries, Retry-After.

GDAL's WMS driver (3.6) neither retries a failed tile nor reads Retry-After (measured: one 429
or 500 fails the whole read), so web map tiles are fetched here and handed to GDAL from a
local cache. Every request carries a user agent; at most ``max_connections`` run at once; a
failed request (HTTP 408/425/429/5xx, a timeout, a dropped connection, a body shorter than
announced, or an image that does not decode) is retried after ``backoff_s`` doubled each time
with jitter, or after the server's Retry-After, during which no other request of this client
starts either. Requests, bytes, retries and failures are counted for the report.
"""
from __future__ import annotations

import email.utils
import http.client
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .options import RemoteOptions

#: Statuses worth asking again: the server is busy, rate-limiting or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Statuses that mean "nothing here" for a tile: an empty (transparent) tile, not a failure.
EMPTY_STATUSES = frozenset({204, 404, 410})


class FetchError(Exception):
    """A request that failed for good (after its retries, or at once when retrying cannot help)."""

    def __init__(self, reason: str, status: int | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.permanent = permanent


class BadContent(ValueError):
    """The server answered 200 but the body is not usable (damaged image, error page)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass
class Response:
    url: str
    status: int
    data: bytes
    content_type: str

    @property
    def empty(self) -> bool:
        return self.status in EMPTY_STATUSES


@dataclass
class FetchStats:
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    failed: int = 0
    problems: Counter = field(default_factory=Counter)

    def text(self) -> str:
        parts = [f"{self.requests} request(s)", f"{self.bytes / 1e6:.1f} MB"]
        if self.retries:
            parts.append(f"{self.retries} retried")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.problems:
            parts.append("problems: " + ", ".join(f"{why} ×{n}" for why, n in self.problems.most_common(4)))
        return ", ".join(parts)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class PoliteClient:
    """Thread-safe; share one per source so its limits hold across the threads that use it."""

    def __init__(self, options: RemoteOptions, stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        self.stats = FetchStats()
        self._slots = threading.BoundedSemaphore(options.max_connections)
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._paused_until = 0.0

    def get(self, url: str, headers: Mapping[str, str] | None = None,
            validate: Callable[[bytes, str], None] | None = None) -> Response:
        """GET ``url`` with retries; ``validate(data, content_type)`` raises ``BadContent`` for unusable bodies.

        Empty-tile statuses (204, 404, 410) return a ``Response`` with ``empty`` set. Raises
        ``FetchError`` when every attempt failed or the failure cannot be cured by asking again.
        """
        opts = self.options
        last = "no attempt"
        for attempt in range(opts.retries + 1):
            if attempt:
                with self._lock:
                    self.stats.retries += 1
            delay: float | None = None
            try:
                response = self._once(url, headers or {})
            except urllib.error.HTTPError as exc:
                status = exc.code
                last = f"HTTP {status}"
                if status in EMPTY_STATUSES:
                    return Response(url, status, b"", "")
                if status not in RETRY_STATUSES:
                    self._failed(last)
                    raise FetchError(_refusal(status, url), status, permanent=True) from None
                delay = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
                if delay is not None and delay > opts.max_retry_after_s:
                    self._failed(last)
                    raise FetchError(f"the server asks to wait {delay:.0f} s before asking again (Retry-After), "
                                     f"longer than {opts.max_retry_after_s:.0f} s", status) from None
                if delay is not None:
                    self._pause(delay)
            except (socket.timeout, TimeoutError):
                last = "timed out"
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = "incomplete body" if isinstance(exc, http.client.IncompleteRead) else f"connection: {reason}"
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    last = "timed out"
            else:
                if response.status in EMPTY_STATUSES:
                    return response
                if validate is None:
                    return response
                try:
                    validate(response.data, response.content_type)
                    return response
                except BadContent as exc:
                    last = str(exc)
                    if exc.permanent:
                        self._failed(last)
                        raise FetchError(last, response.status, permanent=True) from None
            with self._lock:
                self.stats.problems[_short(last)] += 1
            if attempt < opts.retries:
                wait = delay if delay is not None else min(opts.max_backoff_s, opts.backoff_s * 2 ** attempt)
                if delay is None:
                    wait *= random.uniform(0.75, 1.25)
                if self.stop.wait(wait):
                    raise FetchError("stopped")
        self._failed(None)
        raise FetchError(f"{last}, after {opts.retries} retries")

    def _once(self, url: str, headers: Mapping[str, str]) -> Response:
        """One request, holding a connection slot and keeping to the rate and any Retry-After pause."""
        with self._slots:
            self._wait_turn()
            if self.stop.is_set():
                raise FetchError("stopped")
            request = urllib.request.Request(url, headers={"User-Agent": self.options.user_agent, **dict(headers)})
            with self._lock:
                self.stats.requests += 1
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as answer:
                data = answer.read()
                status = answer.status
                content_type = answer.headers.get("Content-Type", "") or ""
            with self._lock:
                self.stats.bytes += len(data)
            return Response(url, status, data, content_type)

    def _wait_turn(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                start = max(self._next_start, self._paused_until)
                if start <= now:
                    rate = self.options.max_rate
                    self._next_start = now + (1.0 / rate if rate > 0 else 0.0)
                    return
            if self.stop.wait(min(start - now, 1.0)):
                return

    def _pause(self, seconds: float) -> None:
        """Retry-After holds back every request of this client, not only the one that was refused."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _failed(self, problem: str | None) -> None:
        with self._lock:
            self.stats.failed += 1
            if problem:
                self.stats.problems[_short(problem)] += 1


def _short(problem: str) -> str:
    """A problem's kind for counting: "HTTP 500", "timed out", "damaged image", "connection"…"""
    return problem.split(":", 1)[0].split(" (", 1)[0][:60]


def _refusal(status: int, url: str) -> str:
    host = urllib.parse.urlparse(url).netloc
    if status in (401, 403):
        return (f"{host} refused access (HTTP {status}); check the layer's authentication or API key, "
                "and that its terms allow this use")
    return f"{host} answered HTTP {status}"
