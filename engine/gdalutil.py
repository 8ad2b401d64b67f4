"""GDAL error handling that does not change the process-wide setting for others (QGIS)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gdal_exceptions() -> Iterator[None]:
    """Make GDAL/OGR/OSR raise RuntimeError inside the block, then restore the previous mode."""
    from osgeo import gdal, ogr, osr

    modules = (gdal, ogr, osr)
    before = [m.GetUseExceptions() for m in modules]
    for m in modules:
        m.UseExceptions()
    try:
        yield
    finally:
        for m, was in reversed(list(zip(modules, before))):
            if not was:
                m.DontUseExceptions()
