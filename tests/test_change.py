"""Change between dates on the real NAIP dates, with a planted change the planted model sees.

The 2009 and 2016 NAIP images are copied; blue paint is planted in known tiles of one date or the
other (``tests/planted_clip.py``: the planted model sees colours, and any text means "blue"). Both
dates are indexed through the real pipeline; the change search must rank exactly the planted tiles
first: with the text, the appeared ones (paint in 2016) or the disappeared ones (paint in 2009);
without text, all of them. Then the same with the 2016 image warped by GDAL into Web Mercator on a
grid offset from 2009's, and with the pairing checked directly on arrays.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from planted_clip import make_planted_clip, paint
from plugin_fixtures import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
NAIP_2009 = SHARED_DATA / "naip" / "naip_m_4709963_se_14_20090818.tif"
NAIP_2016 = SHARED_DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
TILE = 64
#: Tiles (pixel windows of both dates, which share a grid to within a pixel) painted blue in 2016 / 2009.
APPEARED = [(128, 192, TILE, TILE), (640, 448, TILE, TILE), (384, 576, TILE, TILE)]
DISAPPEARED = [(320, 64, TILE, TILE), (768, 320, TILE, TILE)]

pytestmark = pytest.mark.skipif(not NAIP_2016.exists() or not NAIP_2009.exists(),
                                reason=f"the NAIP dates of the shared test imagery are not at {SHARED_DATA / 'naip'}")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_clip(tmp_path_factory.mktemp("planted-model"))


def model_dict(planted) -> dict:
    from engine.models import resolve_model_ref

    return resolve_model_ref(arch=str(planted.config), checkpoint=str(planted.checkpoint)).to_dict()


def planted_dates(folder: Path) -> tuple[Path, Path]:
    """Copies of NAIP 2009 and 2016 with the change planted."""
    from osgeo import gdal

    folder.mkdir(parents=True, exist_ok=True)
    before, after = folder / "naip_20090818.tif", folder / "naip_20160816.tif"
    gdal.Translate(str(before), str(NAIP_2009))
    gdal.Translate(str(after), str(NAIP_2016))
    for window in APPEARED:
        paint(after, window)
    for window in DISAPPEARED:
        paint(before, window)
    return before, after


@pytest.fixture(scope="module")
def dates(tmp_path_factory, planted):
    """Both dates in one index, 64 px tiles."""
    from engine import jobs
    from engine.tiling import TilingSpec

    work = tmp_path_factory.mktemp("dates")
    before, after = planted_dates(work)
    index = work / "index"
    jobs.index_rasters(index, [before, after], model=model_dict(planted), tiling=TilingSpec(size=TILE))
    return index, str(before), str(after)


def windows(rows, which: str = "after") -> list[tuple]:
    return [tuple(getattr(r, which).window) for r in rows]


def test_without_text_the_planted_tiles_changed_most(dates):
    from engine import jobs

    index, before, after = dates
    result = jobs.change(index, [before], [after], top_k=len(APPEARED) + len(DISAPPEARED))
    assert result.direction == "changed" and result.pairs == 180 == result.before_tiles == result.after_tiles
    assert sorted(windows(result.rows)) == sorted(APPEARED + DISAPPEARED)
    assert windows(result.rows) == windows(result.rows, "before"), "same-grid dates pair tile to tile"
    assert all(r.iou > 0.99 for r in result.rows)
    assert all(r.score_before is None and r.difference is None for r in result.rows)
    changes = [r.change for r in result.rows]
    assert changes == sorted(changes, reverse=True) and all(r.change == r.distance for r in result.rows)
    rest = jobs.change(index, [before], [after], top_k=180)
    assert rest.rows[len(changes)].change < changes[-1], "nothing else changed as much"


def test_with_text_where_it_appeared_and_where_it_disappeared(dates):
    from engine import jobs

    index, before, after = dates
    appeared = jobs.change(index, [before], [after], "blue roofs", top_k=len(APPEARED))
    assert sorted(windows(appeared.rows)) == sorted(APPEARED)
    for r in appeared.rows:
        assert r.score_after == pytest.approx(1.0, abs=1e-2) and r.score_before < 0.95
        assert r.difference == pytest.approx(r.change) and r.change > 0
    gone = jobs.change(index, [before], [after], "blue roofs", direction="disappeared", top_k=len(DISAPPEARED))
    assert sorted(windows(gone.rows, "before")) == sorted(DISAPPEARED)
    assert all(r.score_before == pytest.approx(1.0, abs=1e-2) and r.difference < 0 for r in gone.rows)
    either = jobs.change(index, [before], [after], "blue roofs", direction="either", top_k=5)
    assert sorted(windows(either.rows)) == sorted(APPEARED + DISAPPEARED)
    swapped = jobs.change(index, [after], [before], "blue roofs", top_k=len(DISAPPEARED))
    assert sorted(windows(swapped.rows)) == sorted(DISAPPEARED), "the dates' order sets the direction"


def test_rasters_of_different_grids_and_crs(tmp_path, planted):
    """2016 warped into Web Mercator on a grid 20 m off 2009's; tiles in metres pair across the two CRSs."""
    from osgeo import gdal, osr

    from engine import jobs
    from engine.tiling import TilingSpec

    before, after_utm = planted_dates(tmp_path / "utm")
    src = gdal.Open(str(after_utm))
    gt = src.GetGeoTransform()
    utm = osr.SpatialReference(wkt=src.GetProjection())
    merc = osr.SpatialReference()
    merc.ImportFromEPSG(3857)
    for srs in (utm, merc):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_merc = osr.CoordinateTransformation(utm, merc)
    x0, y0, _ = to_merc.TransformPoint(gt[0] + 20.0, gt[3] - 20.0)
    centre_lat = osr.CoordinateTransformation(utm, osr.SpatialReference(wkt=utm.CloneGeogCS().ExportToWkt()))
    lat = centre_lat.TransformPoint(gt[0] + gt[1] * src.RasterXSize / 2, gt[3] + gt[5] * src.RasterYSize / 2)
    lat = lat[0] if abs(lat[0]) < 90 and abs(lat[1]) > 90 else lat[1]
    res = 5.0 / math.cos(math.radians(lat))  # 5 m on the ground in Web Mercator units
    after = tmp_path / "naip_2016_webmercator.tif"
    gdal.Warp(str(after), src, dstSRS="EPSG:3857", outputBounds=(x0, y0 - src.RasterYSize * res,
                                                                 x0 + src.RasterXSize * res, y0),
              xRes=res, yRes=res, resampleAlg="near")
    src = None
    assert "3857" in osr.SpatialReference(wkt=gdal.Open(str(after)).GetProjection()).GetAuthorityCode(None)
    index = tmp_path / "index"
    jobs.index_rasters(index, [before, after], model=model_dict(planted),
                       tiling=TilingSpec(size=TILE * 5.0, units="m"))
    result = jobs.change(index, [before], [after], top_k=len(APPEARED) + len(DISAPPEARED))
    assert sorted(windows(result.rows, "before")) == sorted(APPEARED + DISAPPEARED)
    assert all(0.7 < r.iou < 0.95 for r in result.rows), "a 20 m offset on 320 m tiles: IoU about 0.78"
    assert result.pairs > 0.8 * result.before_tiles
    utm_wkt = result.rows[0].before.crs_wkt
    assert result.crs_wkt == utm_wkt and result.rows[0].after.crs_wkt != utm_wkt
    appeared = jobs.change(index, [before], [after], "blue roofs", top_k=len(APPEARED))
    assert sorted(windows(appeared.rows, "before")) == sorted(APPEARED)


def test_pairing_on_arrays_keeps_one_partner_per_tile():
    """Overlapping 'after' tiles (half-tile overlap): each before tile takes its best partner, once."""
    from engine.change import pair_tiles
    from engine.scoring import IndexMatrix, RasterGeo

    wkt = 'LOCAL_CS["test",UNIT["metre",1]]'
    grid = [(c, r) for r in range(0, 400, 100) for c in range(0, 400, 100)]
    half = [(c, r) for r in range(0, 350, 50) for c in range(0, 350, 50)]
    windows = np.array([(c, r, 100, 100) for c, r in grid] + [(c + 10, r, 100, 100) for c, r in half], np.int64)
    raster_ids = np.array([1] * len(grid) + [2] * len(half), np.int64)
    affine = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    matrix = IndexMatrix(np.arange(len(windows)), np.eye(len(windows), 8, dtype=np.float32), raster_ids, windows,
                         {1: RasterGeo(1, "a", wkt, affine), 2: RasterGeo(2, "b", wkt, affine)})
    before, after = np.flatnonzero(raster_ids == 1), np.flatnonzero(raster_ids == 2)
    pairs = pair_tiles(matrix, before, after)
    assert len(pairs) == len(grid) and len(set(pairs.after.tolist())) == len(grid)
    for b, a, iou in zip(pairs.before, pairs.after, pairs.iou):
        assert tuple(windows[a][:2]) == (windows[b][0] + 10, windows[b][1]), "the partner shifted 10 m, not 60"
        assert iou == pytest.approx(90 / 110)
    assert len(pair_tiles(matrix, before, after, min_iou=0.9)) == 0


def test_refusals(dates, tmp_path):
    from engine import jobs
    from engine.errors import EngineError

    index, before, after = dates
    with pytest.raises(EngineError, match="in both the before and the after set"):
        jobs.change(index, [before], [before, after])
    with pytest.raises(EngineError, match="naip_m_4709963_se_14_20150926.tif is not in the index .* index it first"):
        jobs.change(index, [before], [str(SHARED_DATA / "naip" / "naip_m_4709963_se_14_20150926.tif")])
    with pytest.raises(EngineError, match="Choose the raster"):
        jobs.change(index, [], [after])
    with pytest.raises(EngineError, match="direction of change must be one of appeared, disappeared, either"):
        jobs.change(index, [before], [after], "blue", direction="grew")
    with pytest.raises(EngineError, match="top-k"):
        jobs.change(index, [before], [after], top_k=0)
    with pytest.raises(EngineError, match="must be a .gpkg file"):
        jobs.change(index, [before], [after], out=tmp_path / "x.shp")
    with pytest.raises(EngineError, match="overlaps a tile of .* by at least 99%"):
        from osgeo import gdal

        far = tmp_path / "far.tif"
        gdal.Translate(str(far), before, options="-a_ullr 400000 5100000 404670 5096380")
        jobs.index_rasters(index, [far])
        try:
            jobs.change(index, [before], [str(far)], min_iou=0.99)
        finally:
            jobs.remove_raster(index, far)


def test_cli_geopackage_and_json(dates, tmp_path):
    from osgeo import ogr

    index, before, after = dates
    out = tmp_path / "appeared.gpkg"
    cmd = [sys.executable, "-m", "engine", "change", "--index", str(index), "--before", before, "--after", after,
           "--query", "blue roofs", "--top-k", "3", "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "3 place(s) where 'blue roofs' appeared" in run.stdout
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    defn = layer.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    assert names == ["rank", "change", "score_before", "score_after", "difference", "distance", "iou", "before_raster",
                     "after_raster", "before_tile", "after_tile", "scale", "query", "direction", "model"]
    feats = list(layer)
    assert len(feats) == 3 and layer.GetSpatialRef().GetAuthorityCode(None) == "26914"
    for f in feats:
        assert f["difference"] == pytest.approx(f["score_after"] - f["score_before"], abs=1e-5)
        assert f["query"] == "blue roofs" and f["direction"] == "appeared" and f.IsFieldNull("scale")
        assert f["model"]  # the model that made the scores, as on every result row
        assert f.GetGeometryRef().GetArea() == pytest.approx((TILE * 5) ** 2, rel=0.01)
    ds = None
    run = subprocess.run([sys.executable, "-m", "engine", "change", "--index", str(index), "--before", before,
                          "--after", after, "--top-k", "5", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["direction"] == "changed" and len(data["results"]) == 5
    assert data["results"][0]["score_before"] is None and data["results"][0]["distance"] > 0
    bad = subprocess.run([sys.executable, "-m", "engine", "change", "--index", str(index), "--before", before,
                          "--after", before], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("rsclip: error: ") and "both" in bad.stderr
