"""GDAL error handling that changes nothing for QGIS or for other threads.

GDAL's exception mode (``gdal.UseExceptions``) is one switch for the whole process: QGIS, other
plugins and QGIS 3.40's Processing (whose GDAL provider turns it on) depend on it, and the engine runs
in background tasks beside them. So the engine never flips it. ``gdal_errors()`` instead pushes an
error handler onto this thread's own handler stack (GDAL keeps one per thread; ``PushErrorHandler`` is
thread-local) that records failures, and ``GdalErrors.check`` tests each call: it failed when it
returned None or a non-zero error code (``OGRErr``, ``CPLErr``), or reported a failure. Where the
process has exceptions on, GDAL raises ``RuntimeError`` by itself; ``GdalError`` is a ``RuntimeError``
too, so callers catch one type in either mode.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping


class GdalError(RuntimeError):
    """A GDAL/OGR/OSR call failed (its message is GDAL's)."""


class GdalErrors:
    """The failures GDAL reported in this thread inside ``gdal_errors()``; also the handler that records them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, level: int, number: int, message: str) -> None:
        from osgeo import gdal

        if level >= gdal.CE_Failure:
            self.messages.append(str(message).strip())

    def check(self, result: Any = 0, what: str = "") -> Any:
        """``result``, or ``GdalError`` when the call returned None or an error code, or reported a failure.

        Only for calls that return an object or a status code (not a count).
        """
        failed = result is None or (type(result) is int and result != 0)
        if failed or self.messages:
            text = self.messages[-1] if self.messages else ""
            self.messages.clear()
            raise GdalError(text or what or "unknown GDAL error")
        return result


@contextmanager
def gdal_errors() -> Iterator[GdalErrors]:
    """Record this thread's GDAL failures (and keep them off stderr) inside the block; see the module docstring."""
    from osgeo import gdal

    errors = GdalErrors()
    gdal.PushErrorHandler(errors)
    gdal.ErrorReset()
    try:
        yield errors
    finally:
        gdal.PopErrorHandler()


@contextmanager
def thread_config(config: Mapping[str, str]) -> Iterator[None]:
    """Set GDAL configuration options for this thread only (never the process-wide ones QGIS and other plugins
    share), and restore what was there after."""
    from osgeo import gdal

    before = {key: gdal.GetThreadLocalConfigOption(key, None) for key in config}
    for key, value in config.items():
        gdal.SetThreadLocalConfigOption(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            gdal.SetThreadLocalConfigOption(key, value)
