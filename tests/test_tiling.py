"""Tiling on the real shared rasters and on seeded synthetic edge cases."""
import math
import os
import resource
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr
from shapely import wkt
from shapely.geometry import Polygon

from engine.errors import Cancelled, EngineError
from engine.tiling import (MIN_TILE_PX, RasterTiler, TilingSpec, TileWindow, compute_stretch, ground_pixel_size,
                           open_raster, plan_windows, raster_fingerprint)
from rasters import noise, write_raster, write_vrt

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
LANDSAT = DATA / "landsat" / "landsat_1985.tif"
DSM = DATA / "elevation" / "dsm.tif"


def shared(path: Path) -> Path:
    """The shared raster, or skip: the imagery lives outside the repository."""
    if not path.exists():
        pytest.skip(f"shared test imagery {path.name} not found under {DATA} (../shared/data is absent)")
    return path


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    r = 6371008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def to_utm(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lon/lat points in the UTM zone of the first one, to measure metres with osr."""
    lon, lat = points[0]
    wgs84, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    utm.ImportFromEPSG((32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1)
    for srs in (wgs84, utm):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(wgs84, utm)
    return [tuple(p[:2]) for p in ct.TransformPoints(points)]


def wgs84_extent(path: Path) -> Polygon:
    """The raster's outline in lon/lat, densified so it follows the projection's curves."""
    ds = gdal.Open(str(path))
    gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    src = osr.SpatialReference(wkt=ds.GetProjection())
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    steps = np.linspace(0, 1, 51)
    ring = ([(w * t, 0) for t in steps] + [(w, h * t) for t in steps] + [(w * (1 - t), h) for t in steps]
            + [(0, h * (1 - t)) for t in steps])
    pts = [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5]) for c, r in ring]
    return Polygon([p[:2] for p in osr.CoordinateTransformation(src, dst).TransformPoints(pts)])


# --- the real shared rasters ---------------------------------------------------------------------

def test_naip_pixel_tiles_are_exact_row_major_and_cover_the_raster():
    info = open_raster(shared(NAIP), TilingSpec())
    assert (info.width, info.height, info.band_count, info.dtype) == (934, 723, 4, "Byte")
    assert info.bands == (1, 2, 3), "RGBN without colour interpretation: the first three bands are R, G, B"
    assert info.nodata == (0.0, 0.0, 0.0)
    windows = plan_windows(info, TilingSpec(size=224))
    expected = [TileWindow(c, r, 224, 224) for r in (0, 224, 448, 499) for c in (0, 224, 448, 672, 710)]
    assert list(windows) == expected and windows == expected and len(windows) == 20
    assert windows[-1] == TileWindow(710, 499, 224, 224) and windows[5] == TileWindow(0, 224, 224, 224)
    covered = np.zeros((723, 934), dtype=bool)
    for w in windows:
        covered[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = True
    assert covered.all()


def test_overlap_sets_the_stride_and_keeps_the_edge_snap():
    info = open_raster(shared(NAIP), TilingSpec())
    half = plan_windows(info, TilingSpec(size=224, overlap=0.5))
    assert sorted({w.col_off for w in half}) == [0, 112, 224, 336, 448, 560, 672, 710]
    assert sorted({w.row_off for w in half}) == [0, 112, 224, 336, 448, 499]
    quarter = plan_windows(info, TilingSpec(size=224, overlap=0.25))
    assert sorted({w.col_off for w in quarter}) == [0, 168, 336, 504, 672, 710]
    assert sorted({w.row_off for w in quarter}) == [0, 168, 336, 499]
    assert len(half) == 8 * 6 and len(quarter) == 6 * 4


def test_metre_tiles_on_projected_naip_follow_its_pixel_size():
    path = shared(NAIP)
    px = gdal.Open(str(path)).GetGeoTransform()[1]
    assert px == pytest.approx(5.0)
    info = open_raster(path, TilingSpec())
    mx, my = ground_pixel_size(info)
    assert mx == pytest.approx(px, rel=1e-3) and my == pytest.approx(px, rel=1e-3), "UTM scale factor is ~0.9996"
    windows = plan_windows(info, TilingSpec(size=1120, units="m"))
    assert (windows[0].width, windows[0].height) == (round(1120 / px),) * 2 == (224, 224)
    assert len(windows) == 20
    assert plan_windows(info, TilingSpec(size=500, units="m"))[0].width == 100


def test_metre_tiles_on_landsat_in_degrees_are_right_on_the_ground():
    with RasterTiler(shared(LANDSAT), TilingSpec(size=3000, units="m")) as tiler:
        assert tiler.info.crs_wkt and osr.SpatialReference(wkt=tiler.info.crs_wkt).IsGeographic()
        w = tiler.windows[0]
        assert w.width != 3000 and w.width > 10, "a metre tile in degrees is converted, not taken as degrees"
        for window in (tiler.windows[0], tiler.windows[len(tiler.windows) // 2]):
            lonlat = list(wkt.loads(tiler.footprint(window)[1]).exterior.coords)[:4]
            (x0, y0), (x1, y1), (x2, y2), _ = to_utm(lonlat)
            assert math.hypot(x1 - x0, y1 - y0) == pytest.approx(3000, rel=0.02), "tile width on the ground"
            assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(3000, rel=0.02), "tile height on the ground"
            (lon0, lat0), (lon1, lat1), (lon2, lat2), _ = lonlat
            assert haversine_m(lon0, lat0, lon1, lat1) == pytest.approx(3000, rel=0.02)
            assert haversine_m(lon1, lat1, lon2, lat2) == pytest.approx(3000, rel=0.02)


def test_500_m_tiles_on_landsat_are_enlarged_to_32_px_square_on_the_ground():
    """Landsat pixels are ~89 m: 500 m is 5.6 px, a blur the model cannot read (7,371 such tiles per scene
    swamped every search); tiles given in metres are at least 32 px a side, square on the ground."""
    assert MIN_TILE_PX == 32
    with RasterTiler(shared(LANDSAT), TilingSpec(size=500, units="m")) as tiler:
        gt = tiler.info.transform
        lat = math.radians(gt[3] + gt[5] * tiler.info.height / 2)
        px_w, px_h = 111320 * math.cos(lat) * gt[1], 110574 * -gt[5]
        assert (round(500 / px_w), round(500 / px_h)) == (6, 6), "what 500 m would have been"
        w = tiler.windows[0]
        assert (w.width, w.height) == (32, 32)
        assert len(tiler.windows) == 22 * 12  # 697 x 377 px: 21 x 11 whole tiles plus an edge-snapped column, row
        (lon0, lat0), (lon1, lat1), (lon2, lat2), _ = list(wkt.loads(tiler.footprint(w)[1]).exterior.coords)[:4]
        width_m, height_m = haversine_m(lon0, lat0, lon1, lat1), haversine_m(lon1, lat1, lon2, lat2)
        assert width_m == pytest.approx(32 * px_w, rel=0.02) and height_m == pytest.approx(32 * px_h, rel=0.02)
        assert width_m == pytest.approx(height_m, rel=0.02), "square on the ground"
    # 3 km is 34 px: above the minimum, so exactly what was asked
    assert plan_windows(open_raster(shared(LANDSAT), TilingSpec()), TilingSpec(size=3000, units="m"))[0].width == 34
    # pixels are taken as given
    assert plan_windows(open_raster(shared(LANDSAT), TilingSpec()), TilingSpec(size=6))[0].width == 6


def test_an_index_made_before_the_minimum_keeps_cutting_as_it_did():
    """Its recorded tiling has no min_px: resumed and added rasters get the tiles it always made (no mixed sizes)."""
    recorded = TilingSpec.from_dict({"size": 500.0, "units": "m", "overlap": 0.0, "bands": None, "max_nodata": 0.5,
                                     "read_size": 224})
    assert recorded.min_px == 1 and TilingSpec().min_px == MIN_TILE_PX
    assert TilingSpec.from_dict(TilingSpec(size=500, units="m").to_dict()).min_px == MIN_TILE_PX, "recorded now"
    windows = plan_windows(open_raster(shared(LANDSAT), TilingSpec()), recorded)
    assert (windows[0].width, windows[0].height) == (6, 6) and len(windows) == 7371


def test_naip_tile_footprints_lie_inside_the_raster():
    path = shared(NAIP)
    extent = wgs84_extent(path).buffer(1e-6)  # ~10 cm, far below a 5 m pixel
    with RasterTiler(path, TilingSpec(size=224)) as tiler:
        gt = tiler.info.transform
        native_extent = (gt[0], gt[3] + 723 * gt[5], gt[0] + 934 * gt[1], gt[3])
        tiles = list(tiler.iter_tiles())
    assert len(tiles) == 20, "NAIP's nodata is only a thin edge: no tile is mostly nodata"
    for tile, pixels in tiles:
        assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
        assert tile.raster == str(path.resolve())
        minx, miny, maxx, maxy = tile.bounds
        assert native_extent[0] - 1e-6 <= minx < maxx <= native_extent[2] + 1e-6
        assert native_extent[1] - 1e-6 <= miny < maxy <= native_extent[3] + 1e-6
        assert wkt.loads(tile.footprint_wkt).area == pytest.approx((224 * 5.0) ** 2)
        poly = wkt.loads(tile.footprint_wgs84_wkt)
        assert poly.is_valid and extent.contains(poly)
        lon, lat = poly.centroid.coords[0]
        assert -99.2 < lon < -99.1 and 47.0 < lat < 47.1, "lon/lat order, not lat/lon"


def test_single_band_float_dsm_is_grey_and_stretched():
    with RasterTiler(shared(DSM), TilingSpec(size=128)) as tiler:
        assert tiler.info.bands == (1, 1, 1) and tiler.info.dtype == "Float32"
        lo, hi = tiler.stretch[0]
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
        assert tiler.stretch == [(lo, hi)] * 3
        _, pixels = next(tiler.iter_tiles())
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.max() > 0 and pixels.std() > 10, "stretched, not all zeros or constant"


# --- band choice -----------------------------------------------------------------------------

def test_bands_by_colour_interpretation_and_explicit(tmp_path):
    path = write_raster(tmp_path / "bgr.tif", noise(3, 32, 32),
                        colors=[gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand])
    assert open_raster(path, TilingSpec()).bands == (3, 2, 1)
    assert open_raster(path, TilingSpec(bands=(2,))).bands == (2, 2, 2)
    assert open_raster(path, TilingSpec(bands=(1, 1, 3))).bands == (1, 1, 3)
    with pytest.raises(EngineError, match="bgr.tif has 3 band\\(s\\); band 5 does not exist"):
        open_raster(path, TilingSpec(bands=(5, 1, 2)))


@pytest.mark.parametrize("count, colors, expected", [
    (4, None, (1, 2, 3)),  # RGBN: first three
    (4, [gdal.GCI_Undefined, gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand], (2, 3, 4)),
    (4, [gdal.GCI_AlphaBand, gdal.GCI_Undefined, gdal.GCI_Undefined, gdal.GCI_Undefined], (2, 3, 4)),
    (1, None, (1, 1, 1)),  # grey replicated
    (2, None, (1, 1, 1)),  # two bands: the first as grey
    (2, [gdal.GCI_AlphaBand, gdal.GCI_GrayIndex], (2, 2, 2)),  # ... unless it is alpha
    (2, [gdal.GCI_GrayIndex, gdal.GCI_AlphaBand], (1, 1, 1)),
])
def test_default_band_choice(tmp_path, count, colors, expected):
    path = write_raster(tmp_path / "b.tif", noise(count, 16, 16), colors=colors)
    assert open_raster(path, TilingSpec()).bands == expected


def test_palette_raster_shows_its_colours(tmp_path):
    data = np.zeros((16, 16), dtype=np.uint8)
    data[:, 8:] = 1
    path = write_raster(tmp_path / "pal.tif", data, color_table={0: (10, 20, 30), 1: (200, 100, 50)})
    with RasterTiler(path, TilingSpec(size=16, read_size=16)) as tiler:
        pixels = tiler.read(tiler.windows[0])
    assert tuple(pixels[0, 0]) == (10, 20, 30) and tuple(pixels[0, 15]) == (200, 100, 50)


# --- values: stretch, nodata, resampling ---------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint32", "float32", "float64"])
def test_non_8bit_data_with_nan_and_inf_becomes_finite_uint8(tmp_path, dtype):
    data = noise(3, 64, 64, dtype)
    if dtype.startswith("float"):
        data[0, :5] = np.nan
        data[1, 5:8] = np.inf
        data[2, 8:10] = -np.inf
        data[0, 20, :10] = 1e30  # outliers under 2 % do not move the stretch
    path = write_raster(tmp_path / f"{dtype}.tif", data)
    with RasterTiler(path, TilingSpec(size=64, read_size=64)) as tiler:
        pixels = tiler.read(tiler.windows[0])
        stretch = tiler.stretch
    for band, (lo, hi) in zip(data, stretch):
        finite = band[np.isfinite(band)].astype(np.float64)
        assert (lo, hi) == pytest.approx(tuple(np.percentile(finite, [2, 98])))
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
    if dtype.startswith("float"):
        assert (pixels[:5, :, 0] == 0).all() and (pixels[5:8, :, 1] == 0).all() and (pixels[8:10, :, 2] == 0).all()
        assert (pixels[20, :10, 0] == 255).all()
    assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3) and 100 < pixels.mean() < 155


def test_constant_and_empty_bands_do_not_divide_by_zero(tmp_path):
    data = np.full((3, 16, 16), 7.5, dtype=np.float32)
    data[1] = np.nan
    path = write_raster(tmp_path / "flat.tif", data)
    with RasterTiler(path, TilingSpec(size=16, read_size=16, max_nodata=1.0)) as tiler:
        assert all(hi > lo for lo, hi in tiler.stretch)
        with np.errstate(all="raise"):
            pixels = tiler.read(tiler.windows[0])
    assert pixels is not None and (pixels[..., 1] == 0).all()


def test_stretch_ignores_nodata_values(tmp_path):
    data = noise(1, 64, 64, "uint16")
    data[:, :32] = 65535
    path = write_raster(tmp_path / "nd.tif", data, nodata=65535)
    info = open_raster(path, TilingSpec())
    ds = gdal.Open(str(path))
    (lo, hi), = set(compute_stretch(ds, info))
    assert hi < 4000, "the nodata value must not drag the 98th percentile up"


def test_mostly_nodata_tiles_are_skipped_exactly(tmp_path):
    data = noise(3, 64, 128)
    data[:, :, :48] = 0  # tile column 0 is all nodata, column 32 exactly half
    data[0, :, 64:] = 0  # nodata in one band only is still data
    path = write_raster(tmp_path / "half.tif", data, nodata=0)
    with RasterTiler(path, TilingSpec(size=32, read_size=32)) as tiler:
        kept = [(t.window.col_off, t.window.row_off) for t, _ in tiler.iter_tiles()]
        assert kept == [(32, 0), (64, 0), (96, 0), (32, 32), (64, 32), (96, 32)], "50% is not more than 0.5"
        pixels = tiler.read(TileWindow(32, 0, 32, 32))
        assert (pixels[:, :16] == 0).all() and (pixels[:, 16:] > 0).all()
    with RasterTiler(path, TilingSpec(size=32, read_size=32, max_nodata=0.4)) as tiler:
        assert sorted({t.window.col_off for t, _ in tiler.iter_tiles()}) == [64, 96]


def test_downsampled_nodata_stays_out_of_the_average(tmp_path):
    data = noise(3, 64, 64)
    data[:, :, :32] = 0
    path = write_raster(tmp_path / "half.tif", data, nodata=0)
    with RasterTiler(path, TilingSpec(size=64, read_size=16)) as tiler:
        pixels = tiler.read(tiler.windows[0])
    assert pixels is not None, "exactly half nodata is kept (not more than max_nodata)"
    assert (pixels[:, :8] == 0).all() and (pixels[:, 8:] > 0).all()
    assert 100 < pixels[:, 8:].mean() < 155, "the valid half is not darkened by averaging in zeros"


def test_alpha_band_masks_pixels(tmp_path):
    data = noise(4, 32, 64)
    data[3] = 255
    data[3, :, :32] = 0
    path = write_raster(tmp_path / "rgba.tif", data, colors=[gdal.GCI_RedBand, gdal.GCI_GreenBand,
                                                             gdal.GCI_BlueBand, gdal.GCI_AlphaBand])
    with RasterTiler(path, TilingSpec(size=32, read_size=32)) as tiler:
        assert tiler.info.bands == (1, 2, 3)
        assert [t.window.col_off for t, _ in tiler.iter_tiles()] == [32]


def test_float_nodata_value_is_matched_in_float32(tmp_path):
    data = noise(1, 32, 32, "float32")
    data[:, :, :24] = np.float32(-9999.9)
    path = write_raster(tmp_path / "f32.tif", data, nodata=-9999.9)
    with RasterTiler(path, TilingSpec(size=32, read_size=32)) as tiler:
        assert tiler.read(tiler.windows[0]) is None
        assert tiler.stretch[0][0] > 0


def test_downsampling_averages_and_upsampling_fills(tmp_path):
    data = np.zeros((1, 64, 64), dtype=np.uint8)
    data[:, :, 0::2], data[:, :, 1::2] = 10, 30
    path = write_raster(tmp_path / "stripes.tif", data)
    with RasterTiler(path, TilingSpec(size=64, read_size=32)) as tiler:
        assert (tiler.read(tiler.windows[0]) == 20).all(), "average resampling, not nearest"
    small = write_raster(tmp_path / "small.tif", noise(3, 10, 7))
    with RasterTiler(small, TilingSpec(size=224)) as tiler:
        assert tiler.windows == [TileWindow(0, 0, 7, 10)]
        tiles = list(tiler.iter_tiles())
    assert len(tiles) == 1 and tiles[0][1].shape == (224, 224, 3)


# --- geometry ----------------------------------------------------------------------------------

def test_rotated_geotransform_footprint(tmp_path):
    angle = math.radians(30)
    gt = (500000.0, 10 * math.cos(angle), -10 * math.sin(angle), 6000000.0,
          -10 * math.sin(angle), -10 * math.cos(angle))
    path = write_raster(tmp_path / "rot.tif", noise(3, 20, 40), transform=gt)
    with RasterTiler(path, TilingSpec(size=20)) as tiler:
        assert len(tiler.windows) == 2
        native, lonlat = tiler.footprint(tiler.windows[1])
        bounds = tiler.bounds(tiler.windows[1])
    corners = list(wkt.loads(native).exterior.coords)[:4]
    expected = [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5]) for c, r in
                ((20, 0), (40, 0), (40, 20), (20, 20))]
    for got, want in zip(corners, expected):
        assert got == pytest.approx(want)
    assert wkt.loads(native).area == pytest.approx(200 * 200)
    xs, ys = zip(*expected)
    assert bounds == pytest.approx((min(xs), min(ys), max(xs), max(ys)))
    assert wkt.loads(lonlat).is_valid and wkt.loads(lonlat).area > 0


def test_metres_are_ground_metres_in_web_mercator(tmp_path):
    lat = 60.0
    y = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    path = write_raster(tmp_path / "merc.tif", noise(3, 40, 400), epsg=3857,
                        transform=(1000000.0, 10.0, 0.0, y + 200.0, 0.0, -10.0))
    info = open_raster(path, TilingSpec())
    mx, my = ground_pixel_size(info)
    assert mx == pytest.approx(5.0, rel=0.01) and my == pytest.approx(5.0, rel=0.01), "Mercator scale is 1/cos(60°)"
    assert plan_windows(info, TilingSpec(size=500, units="m"))[0].width == 100


def test_a_metre_tile_smaller_than_a_pixel_is_enlarged_or_refused_by_an_old_index(tmp_path):
    path = write_raster(tmp_path / "coarse.tif", noise(3, 8, 8))
    info = open_raster(path, TilingSpec())
    windows = plan_windows(info, TilingSpec(size=2, units="m"))
    assert (windows[0].width, windows[0].height) == (8, 8), "32 px, cut to this 8 px raster: one tile of it all"
    old = TilingSpec.from_dict({"size": 2, "units": "m"})  # an index made before the minimum
    with pytest.raises(EngineError, match="smaller than one pixel of coarse.tif"):
        plan_windows(info, old)


# --- errors, spec, fingerprint ---------------------------------------------------------------------

def test_unusable_inputs_raise_engine_error_naming_the_file(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("hello, not a raster")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    nocrs = write_raster(tmp_path / "nocrs.tif", noise(3, 8, 8), epsg=None)
    nogt = write_raster(tmp_path / "nogt.tif", noise(3, 8, 8), transform=None)
    (tmp_path / "folder.tif").mkdir()
    cases = [(text, "notes.tif is not a raster GDAL can read"), (empty, "empty.tif is an empty file"),
             (tmp_path / "missing.tif", "missing.tif does not exist"),
             (nocrs, "nocrs.tif has no coordinate reference system; assign one .*Set CRS"),
             (nogt, "nogt.tif has a coordinate reference system but no position on the map"),
             (tmp_path / "folder.tif", "folder.tif is a folder")]
    for path, message in cases:
        with pytest.raises(EngineError, match=message):
            open_raster(path, TilingSpec())
        with pytest.raises(EngineError, match=message):
            RasterTiler(path, TilingSpec())


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_truncated_raster_is_an_engine_error(tmp_path, dtype):
    path = write_raster(tmp_path / "cut.tif", noise(3, 256, 256, dtype))
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(EngineError, match="cut.tif.*truncated or damaged"):
        with RasterTiler(path, TilingSpec(size=64)) as tiler:
            list(tiler.iter_tiles())


@pytest.mark.parametrize("exceptions", [False, True])
def test_gdal_exception_mode_is_left_alone(tmp_path, exceptions):
    was = gdal.GetUseExceptions()
    (gdal.UseExceptions if exceptions else gdal.DontUseExceptions)()
    try:
        text = tmp_path / "junk.tif"
        text.write_text("junk")
        with pytest.raises(EngineError, match="junk.tif is not a raster"):
            open_raster(text, TilingSpec())
        path = write_raster(tmp_path / "ok.tif", noise(3, 32, 32))
        with RasterTiler(path, TilingSpec(size=32)) as tiler:
            assert len(list(tiler.iter_tiles())) == 1
            with pytest.raises(EngineError, match="ok.tif at window"):
                tiler.read(TileWindow(16, 16, 32, 32))
        assert bool(gdal.GetUseExceptions()) == exceptions
    finally:
        (gdal.UseExceptions if was else gdal.DontUseExceptions)()


def test_spec_validation_and_round_trip():
    spec = TilingSpec(size=500, units="m", overlap=0.25, bands=(4, 3, 2), max_nodata=0.3, read_size=256)
    assert TilingSpec.from_dict(spec.to_dict()) == spec
    assert TilingSpec.from_dict({}) == TilingSpec(min_px=1), "recorded before metre tiles had a minimum"
    assert TilingSpec.from_dict({"size": 64, "future_key": 1, "min_px": 32}) == TilingSpec(size=64.0)
    for bad in (TilingSpec(size=0), TilingSpec(size=-3), TilingSpec(size=float("nan")), TilingSpec(units="ft"),
                TilingSpec(overlap=0.95), TilingSpec(overlap=-0.1), TilingSpec(bands=(1, 2)), TilingSpec(bands=(0,)),
                TilingSpec(max_nodata=1.5), TilingSpec(read_size=4), TilingSpec(size=0.5)):
        with pytest.raises(EngineError):
            bad.validate()
    with pytest.raises(EngineError, match="tile settings"):
        TilingSpec.from_dict({"size": "big"})


def test_fingerprint_follows_content(tmp_path):
    path = write_raster(tmp_path / "a.tif", noise(3, 16, 16))
    first = raster_fingerprint(path)
    assert raster_fingerprint(path) == first == open_raster(path, TilingSpec()).fingerprint
    write_raster(path, noise(3, 16, 16, seed=1))
    assert raster_fingerprint(path) != first

    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 << 20))
    stamp = big.stat().st_mtime_ns
    before = raster_fingerprint(big)
    with open(big, "r+b") as fh:
        fh.seek(-10, os.SEEK_END)
        fh.write(b"x")
    os.utime(big, ns=(stamp, stamp))
    assert raster_fingerprint(big) != before, "an edit in the last MiB is seen even with size and mtime kept"


def test_iter_tiles_skips_reports_progress_and_cancels(tmp_path):
    path = write_raster(tmp_path / "grid.tif", noise(3, 64, 64))
    seen: list[float] = []
    with RasterTiler(path, TilingSpec(size=32)) as tiler:
        tiles = list(tiler.iter_tiles(progress=lambda f, m: seen.append(f), skip={(0, 0, 32, 32), (32, 32, 32, 32)}))
        assert [t.window.as_tuple() for t, _ in tiles] == [(32, 0, 32, 32), (0, 32, 32, 32)]
        assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
        many: list[float] = []
        fine = RasterTiler(path, TilingSpec(size=2, read_size=8))
        with fine:
            everything = {w.as_tuple() for w in fine.windows}
            assert list(fine.iter_tiles(progress=lambda f, m: many.append(f), skip=everything)) == []
        assert len(fine.windows) == 1024 and 50 <= len(many) <= 101 and many == sorted(many)
        with pytest.raises(Cancelled):
            next(tiler.iter_tiles(cancel=lambda: True))
    with pytest.raises(EngineError, match="closed"):
        tiler.read(TileWindow(0, 0, 32, 32))


@pytest.mark.parametrize("data_type", ["Byte", "UInt16"])
def test_huge_vrt_plans_and_reads_without_allocating(tmp_path, data_type):
    src = write_raster(tmp_path / "src.tif", noise(3, 256, 256, "uint8" if data_type == "Byte" else "uint16"))
    size = 200_000
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    vrt = write_vrt(tmp_path / "huge.vrt", size, size, src, srs.ExportToWkt(), (500000, 0.5, 0, 6000000, 0, -0.5),
                    data_type=data_type, nodata=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        with RasterTiler(vrt, TilingSpec(size=224, max_nodata=1.0)) as tiler:
            count = math.ceil(size / 224)
            assert len(tiler.windows) == count ** 2
            assert tiler.windows[-1] == TileWindow(size - 224, size - 224, 224, 224)
            assert TileWindow(224 * 5, 224 * 7, 224, 224) in tiler.windows
            assert tiler.windows[count + 1] == TileWindow(224, 224, 224, 224)
            assert tiler.windows[:2] == [TileWindow(0, 0, 224, 224), TileWindow(224, 0, 224, 224)]
            pixels = tiler.read(tiler.windows[0])
            tile, _ = next(tiler.iter_tiles())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert pixels.shape == (224, 224, 3) and pixels.std() > 10
    if data_type == "UInt16":
        assert all(0 < lo < hi for lo, hi in tiler.stretch), "stretch sampled from the data, not the empty rest"
    assert tile.window == TileWindow(0, 0, 224, 224)
    assert peak < 32 * 2**20, f"Python peak {peak / 2**20:.0f} MiB"
    assert rss_growth_mib < 200, f"process peak grew {rss_growth_mib:.0f} MiB"


def test_an_uncompressed_geotiff_is_read_past_gdals_block_cache_with_the_same_pixels(tmp_path, monkeypatch):
    """Every window is read once, so GDAL's block cache only cost a copy (and filled up with blocks of rasters
    not read again); the direct reads give the same pixels and leave no GDAL option set behind."""
    from engine import tiling

    raster = write_raster(tmp_path / "plain.tif", noise(3, 1024, 1024, seed=5))  # uncompressed, as written
    spec = TilingSpec(size=100, overlap=0.25)  # windows resampled to 224 px, overlapping
    got = {}
    cache_max = gdal.GetCacheMax()
    try:
        for name, options in (("direct", tiling.DIRECT_READS), ("cached", {})):
            monkeypatch.setattr(tiling, "DIRECT_READS", options)
            gdal.SetCacheMax(1 << 20)  # empties GDAL's block cache: what this reading leaves there is its own
            gdal.SetCacheMax(64 << 20)
            before = gdal.GetCacheUsed()
            with RasterTiler(raster, spec) as tiler:
                got[name] = np.concatenate([b.pixels for b in tiler.iter_batches(16)])
                got[name + " cache"] = gdal.GetCacheUsed() - before
            assert gdal.GetThreadLocalConfigOption("GTIFF_DIRECT_IO", None) is None
            assert gdal.GetConfigOption("GTIFF_DIRECT_IO") is None
    finally:
        gdal.SetCacheMax(cache_max)
    assert len(got["direct"]) == 14 * 14 and np.array_equal(got["direct"], got["cached"])
    assert got["cached cache"] >= 3 * 1024 * 1024 // 2, "the cached reads filled the block cache"
    assert got["direct cache"] < 256 * 1024, got["direct cache"]
