"""Every kind of bad or odd raster an analyst may feed: indexed correctly, or refused by name."""
import math
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from shapely import wkt

from engine import jobs
from engine.errors import EngineError
from engine.tiling import TilingSpec
from rasters import noise, write_raster


@pytest.fixture(scope="module")
def model(tiny_model, tmp_path_factory):
    return jobs.resolve_model(tmp_path_factory.mktemp("m") / "nothing", arch=str(tiny_model.config),
                              checkpoint=str(tiny_model.checkpoint))


@pytest.fixture(params=["return codes", "exceptions"])
def gdal_mode(request):
    """GDAL's process-wide error mode: QGIS 3.40's Processing turns exceptions on when it loads; 3.22's does not."""
    was = gdal.GetUseExceptions()
    gdal.UseExceptions() if request.param == "exceptions" else gdal.DontUseExceptions()
    yield request.param
    gdal.UseExceptions() if was else gdal.DontUseExceptions()


def truncated(path):
    write_raster(path, noise(3, 256, 256))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def float_with_nan_inf(dtype):
    data = noise(3, 64, 64, dtype)
    data[0, :8] = np.nan
    data[1, 8:16] = np.inf
    data[2, 16:24] = -np.inf
    return data


def build_bad_rasters(folder):
    """name → (path, expected outcome): an int is the exact number of tiles, a str the refusal's words."""
    folder.mkdir()
    angle = math.radians(20)
    rotated_gt = (500000.0, 10 * math.cos(angle), -10 * math.sin(angle), 6000000.0,
                  -10 * math.sin(angle), -10 * math.cos(angle))
    odd = folder / "dir with spaces" / "naïve äöü 東京.tif"
    odd.parent.mkdir()
    (folder / "notes.tif").write_text("this is a text file, not an image")
    (folder / "empty.tif").write_bytes(b"")
    return {
        "truncated": (truncated(folder / "truncated.tif"), "truncated.tif"),
        "text": (folder / "notes.tif", "notes.tif is not a raster GDAL can read"),
        "empty": (folder / "empty.tif", "empty.tif is an empty file"),
        "only nodata": (write_raster(folder / "nodata.tif", np.zeros((3, 64, 64), np.uint8), nodata=0),
                        "nodata.tif has no tiles with data"),
        "one band": (write_raster(folder / "grey.tif", noise(1, 64, 64)), 4),
        "two bands": (write_raster(folder / "two.tif", noise(2, 64, 64)), 4),
        "uint16": (write_raster(folder / "u16.tif", noise(3, 64, 64, "uint16")), 4),
        "int16": (write_raster(folder / "i16.tif", noise(3, 64, 64, "int16")), 4),
        "float32 nan inf": (write_raster(folder / "f32.tif", float_with_nan_inf("float32")), 4),
        "float64 nan inf": (write_raster(folder / "f64.tif", float_with_nan_inf("float64")), 4),
        "1x1 px": (write_raster(folder / "one.tif", noise(3, 1, 1)), 1),
        "smaller than a tile": (write_raster(folder / "small.tif", noise(3, 20, 13)), 1),
        "no CRS": (write_raster(folder / "nocrs.tif", noise(3, 64, 64), epsg=None),
                   "nocrs.tif has no coordinate reference system"),
        "rotated": (write_raster(folder / "rotated.tif", noise(3, 64, 64), transform=rotated_gt), 4),
        "spaces and non-ASCII": (write_raster(odd, noise(3, 64, 64)), 4),
    }


def test_each_bad_raster_has_its_exact_outcome_and_the_run_goes_on(model, tmp_path, gdal_mode):
    cases = build_bad_rasters(tmp_path / "in")
    report = jobs.index_rasters(tmp_path / "idx", [str(p) for p, _ in cases.values()], model=model,
                                tiling=TilingSpec(size=32), batch_size=8)
    added = {p: n for p, n in report.added}
    skipped = {p: reason for p, reason in report.skipped}
    for name, (path, expected) in cases.items():
        key = str(path.resolve())
        if isinstance(expected, int):
            assert added.get(key) == expected, (name, skipped.get(key))
        else:
            assert key in skipped and expected in skipped[key], (name, skipped.get(key))
            assert "\n" not in skipped[key] and "Traceback" not in skipped[key]
    assert report.total_tiles == sum(e for _, e in cases.values() if isinstance(e, int))
    rotated = [t for t in jobs.tiles(tmp_path / "idx") if t.raster.endswith("rotated.tif")]
    assert all(wkt.loads(t.footprint_wkt).area == pytest.approx(320 * 320) for t in rotated)
    hits = jobs.search(tmp_path / "idx", "field", top_k=100)
    assert len(hits) == report.total_tiles


def test_a_run_with_only_bad_rasters_creates_nothing(model, tmp_path):
    cases = build_bad_rasters(tmp_path / "in")
    bad = [str(cases[n][0]) for n in ("text", "empty", "no CRS")]
    with pytest.raises(EngineError, match="None of the rasters can be indexed"):
        jobs.index_rasters(tmp_path / "idx", bad, model=model)
    assert not (tmp_path / "idx").exists()


def reset_peak_rss() -> None:
    """Start this process's peak resident memory afresh (Linux: clear_refs 5), so earlier tests do not count."""
    clear = Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak memory of this process ({exc}); Linux only")


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_a_200k_px_vrt_streams(model, tmp_path):
    src = write_raster(tmp_path / "src.tif", noise(3, 256, 256))
    size = 200_000
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">src.tif'
        f'</SourceFilename><SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="256" ySize="256"/>'
        f'<DstRect xOff="0" yOff="0" xSize="256" ySize="256"/></SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    srs = gdal.Open(str(src)).GetProjection().replace('"', "&quot;")
    vrt = tmp_path / "huge.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{srs}</SRS>'
                   f"<GeoTransform>500000, 0.5, 0, 6000000, 0, -0.5</GeoTransform>{bands}</VRTDataset>")
    jobs.index_rasters(tmp_path / "warm", [str(src)], model=model)  # the model and libraries load first
    reset_peak_rss()
    before = peak_rss_mb()
    report = jobs.index_rasters(tmp_path / "idx", [str(vrt)], model=model, tiling=TilingSpec(size=20_000),
                                batch_size=25)
    grown_mb = peak_rss_mb() - before
    assert report.added == [(str(vrt.resolve()), 100)]
    assert grown_mb < 400, f"peak memory grew by {grown_mb:.0f} MB for a 200,000 px raster"
