"""Tiling on the real shared rasters and on synthetic edge cases."""
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from shapely import wkt

from engine.errors import EngineError
from engine.tiling import RasterTiler, TilingSpec, TileWindow, open_raster, plan_windows, raster_fingerprint
from rasters import noise, write_raster

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
LANDSAT = DATA / "landsat" / "landsat_1985.tif"
DSM = DATA / "elevation" / "dsm.tif"
needs_data = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {DATA}")


def haversine_m(lon1, lat1, lon2, lat2):
    r = 6371008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


@needs_data
def test_naip_pixel_grid_is_covered_with_edge_snapped_tiles():
    info = open_raster(NAIP, TilingSpec())
    assert (info.width, info.height, info.band_count) == (934, 723, 4)
    assert info.bands == (1, 2, 3), "RGBN: the first three bands are R, G, B"
    windows = plan_windows(info, TilingSpec(size=224))
    cols = sorted({w.col_off for w in windows})
    rows = sorted({w.row_off for w in windows})
    assert cols == [0, 224, 448, 672, 710] and rows == [0, 224, 448, 499]
    assert all((w.width, w.height) == (224, 224) for w in windows)
    overlapped = plan_windows(info, TilingSpec(size=224, overlap=0.5))
    assert sorted({w.col_off for w in overlapped})[:3] == [0, 112, 224]


@needs_data
def test_metre_tiles_on_projected_naip():
    info = open_raster(NAIP, TilingSpec())
    px = info.transform[1]
    windows = plan_windows(info, TilingSpec(size=1000, units="m"))
    assert windows[0].width == round(1000 / px)


@needs_data
def test_metre_tiles_on_landsat_in_degrees_are_right_on_the_ground():
    with RasterTiler(LANDSAT, TilingSpec(size=3000, units="m")) as tiler:
        tile, _ = next(tiler.iter_tiles())
        poly = wkt.loads(tile.footprint_wgs84_wkt)
        (x0, y0), (x1, _), (_, y2) = list(poly.exterior.coords)[:3]
        assert haversine_m(x0, y0, x1, y0) == pytest.approx(3000, rel=0.02)
        assert haversine_m(x0, y0, x0, y2) == pytest.approx(3000, rel=0.02)


@needs_data
def test_naip_footprints_lie_inside_the_raster():
    with RasterTiler(NAIP, TilingSpec(size=224)) as tiler:
        gt = tiler.info.transform
        extent = (gt[0], gt[3] + tiler.info.height * gt[5], gt[0] + tiler.info.width * gt[1], gt[3])
        tiles = list(tiler.iter_tiles())
        assert len(tiles) == 20
        for tile, pixels in tiles:
            assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
            minx, miny, maxx, maxy = tile.bounds
            assert extent[0] - 1e-6 <= minx < maxx <= extent[2] + 1e-6
            assert extent[1] - 1e-6 <= miny < maxy <= extent[3] + 1e-6
            lon, lat = wkt.loads(tile.footprint_wgs84_wkt).centroid.coords[0]
            assert -99.2 < lon < -99.1 and 47.0 < lat < 47.1


@needs_data
def test_single_band_float_dsm_is_grey_and_stretched():
    with RasterTiler(DSM, TilingSpec(size=128)) as tiler:
        assert tiler.info.bands == (1, 1, 1) and tiler.info.dtype == "Float32"
        _, pixels = next(tiler.iter_tiles())
        assert (pixels[..., 0] == pixels[..., 1]).all()
        assert pixels.std() > 10


def test_colour_interpretation_and_explicit_bands(tmp_path):
    path = write_raster(tmp_path / "bgr.tif", noise(3, 32, 32),
                        colors=[gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand])
    assert open_raster(path, TilingSpec()).bands == (3, 2, 1)
    assert open_raster(path, TilingSpec(bands=(2,))).bands == (2, 2, 2)
    with pytest.raises(EngineError, match="band 5 does not exist"):
        open_raster(path, TilingSpec(bands=(5, 1, 2)))


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64"])
def test_non_8bit_data_with_nan_and_inf_becomes_finite_uint8(tmp_path, dtype):
    data = noise(3, 64, 64, dtype)
    if dtype.startswith("float"):
        data[0, :5] = np.nan
        data[1, 5:8] = np.inf
        data[2, 8:10] = -np.inf
    path = write_raster(tmp_path / f"{dtype}.tif", data)
    with RasterTiler(path, TilingSpec(size=64, read_size=64)) as tiler:
        pixels = tiler.read(tiler.windows[0])
    assert pixels.dtype == np.uint8 and pixels.std() > 20
    assert 0 < tiler.stretch[0][0] < tiler.stretch[0][1]


def test_mostly_nodata_tiles_are_skipped_exactly(tmp_path):
    data = noise(3, 64, 128)
    data[:, :, :64] = 0
    path = write_raster(tmp_path / "half.tif", data, nodata=0)
    with RasterTiler(path, TilingSpec(size=32, read_size=32)) as tiler:
        kept = [t.window.col_off for t, _ in tiler.iter_tiles()]
    assert sorted(set(kept)) == [64, 96] and len(kept) == 4


def test_raster_smaller_than_a_tile_is_one_tile(tmp_path):
    path = write_raster(tmp_path / "small.tif", noise(3, 10, 7))
    with RasterTiler(path, TilingSpec(size=224)) as tiler:
        assert tiler.windows == [TileWindow(0, 0, 7, 10)]
        tiles = list(tiler.iter_tiles())
    assert len(tiles) == 1 and tiles[0][1].shape == (224, 224, 3)


def test_rotated_geotransform_footprint(tmp_path):
    angle = math.radians(30)
    gt = (500000.0, 10 * math.cos(angle), -10 * math.sin(angle), 6000000.0, -10 * math.sin(angle), -10 * math.cos(angle))
    path = write_raster(tmp_path / "rot.tif", noise(3, 20, 20), transform=gt)
    with RasterTiler(path, TilingSpec(size=20)) as tiler:
        native, _, _ = tiler.footprint(tiler.windows[0])
    corners = list(wkt.loads(native).exterior.coords)[:4]
    assert corners[0] == pytest.approx((500000.0, 6000000.0))
    assert corners[1] == pytest.approx((500000.0 + 200 * math.cos(angle), 6000000.0 - 200 * math.sin(angle)))
    assert wkt.loads(native).area == pytest.approx(200 * 200)


def test_unreadable_inputs_name_the_file(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    nocrs = write_raster(tmp_path / "nocrs.tif", noise(3, 8, 8), epsg=None)
    for path, message in [(text, "notes.tif is not a raster GDAL can read"), (empty, "empty.tif is an empty file"),
                          (tmp_path / "missing.tif", "missing.tif does not exist"),
                          (nocrs, "nocrs.tif has no coordinate reference system")]:
        with pytest.raises(EngineError, match=message):
            open_raster(path, TilingSpec())


def test_spec_validation_and_round_trip():
    spec = TilingSpec(size=500, units="m", overlap=0.25, bands=(4, 3, 2))
    assert TilingSpec.from_dict(spec.to_dict()) == spec
    for bad in (TilingSpec(size=0), TilingSpec(units="ft"), TilingSpec(overlap=0.95), TilingSpec(bands=(1, 2))):
        with pytest.raises(EngineError):
            bad.validate()


def test_fingerprint_follows_content(tmp_path):
    path = write_raster(tmp_path / "a.tif", noise(3, 16, 16))
    first = raster_fingerprint(path)
    assert raster_fingerprint(path) == first
    write_raster(path, noise(3, 16, 16, seed=1))
    assert raster_fingerprint(path) != first


def test_huge_vrt_streams_without_allocating(tmp_path):
    src = write_raster(tmp_path / "src.tif", noise(3, 256, 256))
    size = 200_000
    vrt = tmp_path / "huge.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">src.tif'
        f'</SourceFilename><SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="256" ySize="256"/>'
        f'<DstRect xOff="0" yOff="0" xSize="256" ySize="256"/></SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    srs = gdal.Open(str(src)).GetProjection().replace('"', "&quot;")
    vrt.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{srs}</SRS>'
                   f"<GeoTransform>500000, 0.5, 0, 6000000, 0, -0.5</GeoTransform>{bands}</VRTDataset>")
    tracemalloc.start()
    with RasterTiler(vrt, TilingSpec(size=224, max_nodata=1.0)) as tiler:
        assert len(tiler.windows) == math.ceil(size / 224) ** 2
        pixels = tiler.read(tiler.windows[0])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pixels.shape == (224, 224, 3)
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"
