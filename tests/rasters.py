"""Small synthetic GeoTIFFs written by the tests (seeded), for cases the shared data lacks."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from osgeo import gdal, gdal_array, osr

#: Default georeferencing: 10 m pixels, north-up, in UTM 33N.
UTM_TRANSFORM = (500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0)


def write_raster(path: Path, data: np.ndarray, epsg: int | None = 32633,
                 transform: Sequence[float] | None = UTM_TRANSFORM, nodata: float | None = None,
                 colors: Sequence[int] | None = None, crs_wkt: str | None = None,
                 color_table: dict[int, tuple[int, int, int]] | None = None) -> Path:
    """Write ``data`` ((bands, rows, cols) or (rows, cols), any numpy dtype GDAL has) as a GeoTIFF.

    ``epsg=None`` (and no ``crs_wkt``) leaves it without CRS; ``transform=None`` without a
    geotransform; ``colors`` sets each band's colour interpretation (``gdal.GCI_*``).
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    bands, rows, cols = data.shape
    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, gdal_type)
    if transform is not None:
        ds.SetGeoTransform(tuple(transform))
    if crs_wkt is None and epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        crs_wkt = srs.ExportToWkt()
    if crs_wkt:
        ds.SetProjection(crs_wkt)
    if color_table:  # before any pixels: GeoTIFF cannot change its photometric tag once writing started
        table = gdal.ColorTable()
        for index, rgb in color_table.items():
            table.SetColorEntry(index, (*rgb, 255))
        ds.GetRasterBand(1).SetRasterColorTable(table)
        ds.GetRasterBand(1).SetColorInterpretation(gdal.GCI_PaletteIndex)
    for i in range(bands):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(data[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if colors:
            band.SetColorInterpretation(colors[i])
    ds.FlushCache()
    ds = None
    return Path(path)


def noise(bands: int, rows: int, cols: int, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    """Seeded random pixels that avoid 0 (a common nodata value): uniform ints, normal floats."""
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return rng.normal(100, 30, (bands, rows, cols)).astype(dtype)
    top = 255 if dtype == "uint8" else 4000
    return rng.integers(1, top, (bands, rows, cols)).astype(dtype)


def write_vrt(path: Path, width: int, height: int, source: Path, crs_wkt: str,
              transform: Sequence[float], bands: int = 3, data_type: str = "Byte",
              nodata: float | None = None) -> Path:
    """A VRT of any size whose top-left corner shows ``source`` (the rest has no sources).

    Lets a test tile a raster of billions of pixels without storing them.
    """
    ds = gdal.Open(str(source))
    sw, sh = ds.RasterXSize, ds.RasterYSize
    ds = None
    srs = crs_wkt.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{srs}</SRS>',
             f"<GeoTransform>{', '.join(repr(float(v)) for v in transform)}</GeoTransform>"]
    nodata_xml = f"<NoDataValue>{nodata!r}</NoDataValue>" if nodata is not None else ""
    for b in range(1, bands + 1):
        parts.append(f'<VRTRasterBand dataType="{data_type}" band="{b}">{nodata_xml}<SimpleSource>'
                     f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
                     f'<SrcRect xOff="0" yOff="0" xSize="{sw}" ySize="{sh}"/>'
                     f'<DstRect xOff="0" yOff="0" xSize="{sw}" ySize="{sh}"/></SimpleSource></VRTRasterBand>')
    parts.append("</VRTDataset>")
    Path(path).write_text("".join(parts))
    return Path(path)
