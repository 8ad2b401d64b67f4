"""Small synthetic GeoTIFFs written by the tests (seeded), for cases the shared data lacks."""
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

GDAL_TYPES = {"uint8": gdal.GDT_Byte, "uint16": gdal.GDT_UInt16, "int16": gdal.GDT_Int16,
              "float32": gdal.GDT_Float32, "float64": gdal.GDT_Float64}


def write_raster(path: Path, data: np.ndarray, epsg: int | None = 32633, transform=(500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0),
                 nodata: float | None = None, colors: list[int] | None = None) -> Path:
    """Write (bands, rows, cols) ``data`` as a GeoTIFF; ``epsg=None`` leaves it without CRS."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    bands, rows, cols = data.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, GDAL_TYPES[str(data.dtype)])
    ds.SetGeoTransform(transform)
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
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
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return rng.normal(100, 30, (bands, rows, cols)).astype(dtype)
    top = 255 if dtype == "uint8" else 4000
    return rng.integers(1, top, (bands, rows, cols)).astype(dtype)
