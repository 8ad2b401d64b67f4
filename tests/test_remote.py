"""Imagery not on disk: XYZ and WMS web maps, COGs by URL and STAC, all served from 127.0.0.1.

Every server is made in the test from the shared NAIP image (see tests/webserve.py). Each remote
source is indexed next to the local file holding the same pixels, and the two indexes must
agree: same windows, footprints within 1e-6 m (1e-9° in WGS84), and — where the pixels arrive
losslessly (PNG tiles, GeoTIFF ranges) — the same embeddings.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import shapely.wkt
from osgeo import gdal

from engine import jobs
from engine.errors import EngineError
from engine.sources import RemoteOptions, canonical_path, display_name, is_remote, using
from engine.sources.http import PoliteClient, retry_after_seconds
from engine.sources.webmap import WebMapSource, estimate, wms_source, xyz_source
from engine.tiling import RasterTiler, TilingSpec
from plugin_fixtures import NAIP, SHARED_DATA
from webserve import ImageryServer, TileMaker, mercator_raster

ROOT = Path(__file__).resolve().parents[1]
NAIP_2009 = SHARED_DATA / "naip" / "naip_m_4709963_se_14_20090818.tif"
ZOOM = 14
#: Footprints of the same pixels from two sources agree to this (metres in EPSG:3857 / UTM; degrees × 1e-3).
TOLERANCE_M = 1e-6

pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {NAIP}")


@pytest.fixture(scope="module")
def imagery(tmp_path_factory):
    """The NAIP image in Web Mercator on the z14 grid (the "local file"), and COGs of two NAIP dates."""
    folder = tmp_path_factory.mktemp("imagery")
    files = folder / "files"
    files.mkdir()
    reference = mercator_raster(NAIP, folder / "naip_3857.tif", ZOOM)
    for source, name in ((NAIP, "naip_2016.tif"), (NAIP_2009, "naip_2009.tif")):
        gdal.Translate(str(files / name), str(source), format="COG",
                       creationOptions=["BLOCKSIZE=256", "COMPRESS=DEFLATE", "OVERVIEWS=AUTO"])
    return folder, reference, files


@pytest.fixture
def server(imagery):
    _, reference, files = imagery
    with ImageryServer(files=files, tiles=TileMaker(reference)) as srv:
        yield srv


def fast(tmp_path, **kw) -> RemoteOptions:
    """Options for tests: the tile cache in tmp, short delays."""
    base = dict(cache_dir=str(tmp_path / "tile-cache"), backoff_s=0.05, max_backoff_s=0.2, timeout_s=5.0)
    base.update(kw)
    return RemoteOptions(**base)


def model(tiny_model):
    return jobs.resolve_model(Path("/nonexistent-index"), arch=str(tiny_model.config),
                              checkpoint=str(tiny_model.checkpoint))


def raster_bounds(path: Path):
    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform()
    return gt[0], gt[3] + gt[5] * ds.RasterYSize, gt[0] + gt[1] * ds.RasterXSize, gt[3]


def tiles_by_window(folder):
    return {t.window: t for t in jobs.tiles(folder)}


def assert_same_tiles(remote_idx, local_idx, same_pixels=True):
    """Same windows, footprints within the tolerance and (for lossless sources) the same embeddings."""
    from engine.index import TileIndex

    remote, local = tiles_by_window(remote_idx), tiles_by_window(local_idx)
    assert remote and set(remote) == set(local)
    for window, tile in remote.items():
        other = local[window]
        assert max(abs(a - b) for a, b in zip(tile.bounds, other.bounds)) < TOLERANCE_M
        lon_lat = [v for xy in shapely.wkt.loads(tile.footprint_wgs84_wkt).exterior.coords for v in xy]
        lon_lat_local = [v for xy in shapely.wkt.loads(other.footprint_wgs84_wkt).exterior.coords for v in xy]
        assert max(abs(a - b) for a, b in zip(lon_lat, lon_lat_local)) < 1e-9
    if same_pixels:
        with TileIndex.open(remote_idx) as a, TileIndex.open(local_idx) as b:
            ids_a, vec_a = a.embeddings([remote[w].id for w in sorted(remote)])
            ids_b, vec_b = b.embeddings([local[w].id for w in sorted(local)])
            order_a = {i: v for i, v in zip(ids_a, vec_a)}
            order_b = {i: v for i, v in zip(ids_b, vec_b)}
            for w in sorted(remote):
                np.testing.assert_allclose(order_a[remote[w].id], order_b[local[w].id], atol=1e-5)


# -- source strings -----------------------------------------------------------------------------
def test_remote_paths_are_never_resolved_as_files():
    assert canonical_path("https://example.test/a/scene.tif") == "/vsicurl/https://example.test/a/scene.tif"
    assert canonical_path("/vsicurl/https://example.test/a/scene.tif") == "/vsicurl/https://example.test/a/scene.tif"
    assert canonical_path("s3://bucket/key/scene.tif") == "/vsis3/bucket/key/scene.tif"
    assert display_name("/vsicurl/https://example.test/a/scene.tif") == "scene.tif"
    assert is_remote("/vsicurl/http://x/y.tif") and not is_remote("/data/y.tif")
    with pytest.raises(EngineError, match="ftp://"):
        canonical_path("ftp://example.test/a.tif")
    source = xyz_source("https://tiles.example.test/{z}/{x}/{y}.png", (-99.2, 47.0, -99.1, 47.04), zoom=14)
    path = source.to_path()
    assert path.startswith("webmap:{") and Path(path).name == "tiles.example.test z14" == display_name(path)
    assert WebMapSource.from_path(path) == source and canonical_path(path) == path
    assert jobs._abs([path]) == [path]


def test_block_urls_follow_each_convention():
    xyz = WebMapSource("xyz", "https://t.test/{z}/{x}/{-y}/{q}.jpg", (0, 0, 10, 10), zoom=3)
    assert xyz.block_url(3, 5) == "https://t.test/3/3/2/213.jpg"  # TMS y = 2^3 - 1 - 5; quadkey of (3, 5)
    wms = WebMapSource("wms", "https://w.test/wms?map=/x.map&SERVICE=WMS", (0, 0, 512, 512), crs="EPSG:4326",
                       res=0.001, layers="ortho")
    url = wms.block_url(0, 0)
    assert "map=/x.map" in url and "CRS=EPSG:4326" in url and url.count("SERVICE=") == 1
    assert "BBOX=-0.512,0.0,0.0,0.512" in url, "WMS 1.3.0 with EPSG:4326 sends latitude first"
    old = WebMapSource("wms", "https://w.test/wms", (0, 0, 512, 512), crs="EPSG:4326", res=0.001, layers="o",
                       version="1.1.1")
    assert "SRS=EPSG:4326" in old.block_url(0, 0) and "BBOX=0.0,-0.512,0.512,0.0" in old.block_url(0, 0)
    with pytest.raises(EngineError, match=r"\{x\}"):
        xyz_source("https://t.test/tiles.png", (-99.2, 47.0, -99.1, 47.04), zoom=3)


def test_retry_after_reads_seconds_and_dates():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# -- XYZ ---------------------------------------------------------------------------------------
def test_xyz_layer_indexes_the_same_tiles_as_the_local_file_and_searches(imagery, server, tiny_model, tmp_path):
    _, reference, _ = imagery
    source = xyz_source(server.url + "/xyz/{z}/{x}/{y}.png", raster_bounds(reference), "EPSG:3857", zoom=ZOOM)
    path = source.to_path()
    tiling = TilingSpec(size=224)
    options = fast(tmp_path)
    guess = estimate(path, tiling, options)
    assert (guess.tiles, guess.blocks, guess.requests) == (12, 12, 12)
    assert not server.requests(), "estimating requests nothing"

    clip = model(tiny_model)
    with using(options):
        report = jobs.index_rasters(tmp_path / "web", [path], model=clip, tiling=tiling)
    local = jobs.index_rasters(tmp_path / "local", [reference], model=clip, tiling=tiling)
    assert report.added == [(path, local.added[0][1])] and not report.skipped and not report.unavailable
    assert_same_tiles(tmp_path / "web", tmp_path / "local")
    hits = server.requests("/xyz/")
    assert len(hits) == guess.requests and len({h.path for h in hits}) == len(hits), "each web map tile once"
    assert {h.user_agent for h in hits} == {options.user_agent}
    assert [r.status for r in jobs.info(tmp_path / "web").rasters] == ["complete"]

    found = jobs.search(tmp_path / "web", "farm fields", top_k=3)
    assert len(found) == 3 and {h.tile.raster for h in found} == {path}
    server.clear()
    with using(options):
        again = jobs.index_rasters(tmp_path / "web", [path])
    assert again.unchanged == [path] and not server.requests(), "an unchanged web map is not fetched again"
    assert not (Path.cwd() / "gdalwmscache").exists(), "GDAL's own WMS cache is never used"
    cached = list(Path(options.cache_dir).rglob("*"))
    assert not [p for p in cached if p.name.endswith(".part")]


def test_wms_layer_on_the_same_grid_matches_the_local_file(imagery, server, tiny_model, tmp_path):
    _, reference, _ = imagery
    ds = gdal.Open(str(reference))
    res = ds.GetGeoTransform()[1]
    source = wms_source(server.url + "/wms", "naip", raster_bounds(reference), "EPSG:3857", crs="EPSG:3857",
                        res=res)
    assert source.window[2:] == (ds.RasterXSize, ds.RasterYSize)
    clip = model(tiny_model)
    tiling = TilingSpec(size=224)
    with using(fast(tmp_path)):
        report = jobs.index_rasters(tmp_path / "web", [source.to_path()], model=clip, tiling=tiling)
    jobs.index_rasters(tmp_path / "local", [reference], model=clip, tiling=tiling)
    assert not report.skipped and not report.unavailable
    assert_same_tiles(tmp_path / "web", tmp_path / "local")
    getmaps = server.requests("/wms")
    assert getmaps and all("REQUEST=GetMap" in h.path and "WIDTH=512" in h.path for h in getmaps)

    wrong = wms_source(server.url + "/wms", "no-such-layer", raster_bounds(reference), "EPSG:3857", res=res)
    server.clear()
    with using(fast(tmp_path)):
        refused = jobs.index_rasters(tmp_path / "wrong", [wrong.to_path()], model=clip, tiling=tiling)
    assert [p for p, _ in refused.skipped] == [wrong.to_path()] and "LayerNotDefined" in refused.skipped[0][1]
    asked = [h.path for h in server.requests("/wms")]
    assert len(asked) == len(set(asked)) <= 4, "an error document is not asked for again"


def test_cap_refuses_an_extent_before_any_request(imagery, server, tiny_model, tmp_path):
    _, reference, _ = imagery
    path = xyz_source(server.url + "/xyz/{z}/{x}/{y}.png", raster_bounds(reference), "EPSG:3857",
                      zoom=ZOOM).to_path()
    with using(fast(tmp_path, max_requests=5)):
        with pytest.raises(EngineError) as caught:
            jobs.index_rasters(tmp_path / "idx", [path], model=model(tiny_model))
    text = str(caught.value)
    assert "needs 12 web map requests" in text and "cap of 5" in text and "MB" in text, text
    assert not server.requests() and not (tmp_path / "idx").exists()


def test_flaky_tile_server_is_retried_and_counts_what_it_could_not_get(imagery, server, tiny_model, tmp_path):
    """500s, timeouts, truncated and damaged images and a 429 are retried; a tile that never comes is
    skipped with a count, its index tiles are not written, and the next run fetches just that tile."""
    _, reference, _ = imagery
    source = xyz_source(server.url + "/xyz/{z}/{x}/{y}.png", raster_bounds(reference), "EPSG:3857", zoom=ZOOM)
    path = source.to_path()
    blocks = list(source.all_blocks())
    dead = blocks[5]
    dead_path = f"/xyz/{ZOOM}/{dead[0]}/{dead[1]}.png"
    troubles = ["500", "timeout", "truncate", "garbage", "429:1", "503"]
    first_seen: list[str] = []  # the first six web map tiles asked for each fail once, each its own way

    def faults(_n, _method, url):
        if url == dead_path:
            return "500"
        if url in first_seen:
            return None
        first_seen.append(url)
        return troubles[len(first_seen) - 1] if len(first_seen) <= len(troubles) else None

    server.faults = faults
    server.slow_s = 1.5
    options = fast(tmp_path, timeout_s=0.5, retries=3)
    clip = model(tiny_model)
    tiling = TilingSpec(size=224)
    with using(options):
        report = jobs.index_rasters(tmp_path / "web", [path], model=clip, tiling=tiling)
    needing_dead = [w for w in RasterTiler(str(reference), tiling).windows
                    if dead in source.blocks_for(w.col_off, w.row_off, w.width, w.height)]
    assert report.unavailable and report.unavailable[0][:2] == (path, len(needing_dead))
    assert "HTTP 500" in report.unavailable[0][2]
    assert "could not be downloaded" in report.summary()
    info = jobs.info(tmp_path / "web")
    assert info.rasters[0].status == "partial"
    written = {t.window for t in jobs.tiles(tmp_path / "web")}
    assert not written & {w.as_tuple() for w in needing_dead}, "no tile is written without all its pixels"
    dead_hits = [h for h in server.requests(dead_path)]
    assert len(dead_hits) == options.retries + 1, "the dead tile was tried, then retried `retries` times"
    assert len(first_seen) == len(source_blocks := list(source.all_blocks())) - 1 and len(source_blocks) > len(troubles)
    for trouble_path in first_seen[:len(troubles)]:
        assert len(server.requests(trouble_path)) == 2, f"{trouble_path} failed once and was retried once"
    for cached in Path(options.cache_dir).rglob("*"):
        if cached.is_file():
            assert gdal.Open(str(cached)).ReadRaster() is not None, f"{cached} is a damaged tile in the cache"

    server.faults = None
    server.clear()
    with using(options):
        healed = jobs.index_rasters(tmp_path / "web", [path])
    assert not healed.unavailable and healed.added == [(path, len(needing_dead))]
    assert [h.path for h in server.requests("/xyz/")] == [dead_path], "the resumed run fetched only what was missing"
    jobs.index_rasters(tmp_path / "local", [reference], model=clip, tiling=tiling)
    assert_same_tiles(tmp_path / "web", tmp_path / "local")


def test_a_server_that_keeps_failing_stops_the_source_not_the_job(imagery, server, tiny_model, tmp_path, capsys):
    _, reference, _ = imagery
    path = xyz_source(server.url + "/xyz/{z}/{x}/{y}.png", raster_bounds(reference), "EPSG:3857",
                      zoom=ZOOM).to_path()
    server.faults = lambda n, method, url: "503"
    with using(fast(tmp_path, retries=1, max_failures_in_a_row=3)):
        report = jobs.index_rasters(tmp_path / "web", [path, reference], model=model(tiny_model))
    assert [p for p, _ in report.skipped] == [path]
    assert "in a row could not be downloaded" in report.skipped[0][1] and "HTTP 503" in report.skipped[0][1]
    assert [p for p, _ in report.added] == [str(reference)]
    assert len(server.requests("/xyz/")) < 20, "stopped after a few failures instead of trying every tile"


def test_cancel_while_tiles_download_stops_promptly(imagery, server, tiny_model, tmp_path):
    _, reference, _ = imagery
    path = xyz_source(server.url + "/xyz/{z}/{x}/{y}.png", raster_bounds(reference), "EPSG:3857",
                      zoom=ZOOM).to_path()
    server.faults = lambda n, method, url: "slow"
    server.slow_s = 3.0
    clip = model(tiny_model)
    asked: list[float] = []

    def cancel() -> bool:  # the user presses Cancel half a second after the first tile was requested
        if not asked and server.requests("/xyz/"):
            asked.append(time.monotonic())
        return bool(asked) and time.monotonic() - asked[0] > 0.5

    with using(fast(tmp_path)):
        report = jobs.index_rasters(tmp_path / "idx", [path], model=clip, cancel=cancel)
    assert report.cancelled and time.monotonic() - asked[0] < 2.0, "cancel does not wait for slow downloads"
    assert jobs.info(tmp_path / "idx").rasters[0].status == "partial"


def test_credentials_named_by_a_source_are_needed_and_sent(imagery, server, tiny_model, tmp_path):
    _, reference, _ = imagery
    path = xyz_source(server.url + "/xyz/{z}/{x}/{y}.png", raster_bounds(reference), "EPSG:3857", zoom=ZOOM,
                      authcfg="abc1234", referer="https://me.example.test/").to_path()
    assert "abc1234" in path and "Basic" not in path, "the index names the configuration, never the secret"
    clip = model(tiny_model)
    with using(fast(tmp_path)):
        with pytest.raises(EngineError, match="authentication configuration 'abc1234'"):
            jobs.index_rasters(tmp_path / "idx", [path], model=clip)
    assert not server.requests()
    secret = (("abc1234", (("Authorization", "Basic dXNlcjpwdw=="),)),)
    with using(fast(tmp_path, auth=secret)):
        report = jobs.index_rasters(tmp_path / "idx", [path], model=clip)
    assert report.added and all(h.headers.get("Authorization") == "Basic dXNlcjpwdw==" and
                                h.headers.get("Referer") == "https://me.example.test/"
                                for h in server.requests("/xyz/"))
    from engine.index import TileIndex

    with TileIndex.open(tmp_path / "idx") as idx:
        dumped = "\n".join(idx.conn.iterdump())
    assert "dXNlcjpwdw==" not in dumped


def test_too_long_retry_after_and_refused_access_are_clear(imagery, server, tmp_path):
    client = PoliteClient(fast(tmp_path, max_retry_after_s=2))
    server.faults = lambda n, method, url: "429:3600"
    from engine.sources.http import FetchError

    with pytest.raises(FetchError, match="wait 3600 s"):
        client.get(server.url + "/xyz/1/0/0.png")
    server.faults = lambda n, method, url: "403"
    with pytest.raises(FetchError, match="refused access"):
        client.get(server.url + "/xyz/1/0/0.png")
    server.faults = None
    start = time.monotonic()
    calls = []
    server.faults = lambda n, method, url: "429:1" if not calls and not calls.append(n) else None
    assert client.get(server.url + "/xyz/1/0/0.png").status == 404
    assert time.monotonic() - start >= 1.0, "Retry-After: 1 was waited for"


# -- COG by URL -------------------------------------------------------------------------------
def test_cog_by_url_reads_only_the_windows_it_needs(imagery, server, tiny_model, tmp_path):
    _, _, files = imagery
    cog = files / "naip_2016.tif"
    size = cog.stat().st_size
    url = server.url + "/files/naip_2016.tif"
    tiling = TilingSpec(size=112, read_size=112)
    with using(fast(tmp_path)):
        with RasterTiler(url, tiling) as tiler:
            server.clear()
            window = tiler.windows[len(tiler.windows) // 2]
            assert tiler.read(window) is not None
    one_window = sum(h.sent for h in server.requests("/files/"))
    local = gdal.Open(str(cog))
    band = local.GetRasterBand(1)
    blocks = {(x // 256, y // 256) for x in (window.col_off, window.col_off + window.width - 1)
              for y in (window.row_off, window.row_off + window.height - 1)}
    needed = sum(int(band.GetMetadataItem(f"BLOCK_SIZE_{x}_{y}", "TIFF")) for x, y in blocks)
    # what the window's compressed blocks hold, plus at most GDAL's read-ahead of as much again
    assert needed <= one_window <= 2.5 * needed and one_window < 0.2 * size, (one_window, needed, size)
    assert all(h.range for h in server.requests("/files/") if h.method == "GET"), "range requests only"

    server.clear()
    clip = model(tiny_model)
    with using(fast(tmp_path)):
        report = jobs.index_rasters(tmp_path / "web", [url], model=clip, tiling=TilingSpec(size=112))
    jobs.index_rasters(tmp_path / "local", [cog], model=clip, tiling=TilingSpec(size=112))
    assert report.added[0][0] == "/vsicurl/" + url
    assert_same_tiles(tmp_path / "web", tmp_path / "local")
    served = sum(h.sent for h in server.requests("/files/"))
    assert served < 1.5 * size, f"indexing read {served} bytes of a {size}-byte file: each block about once"
    assert {h.user_agent for h in server.requests("/files/")} == {RemoteOptions().user_agent}
    assert gdal.GetConfigOption("GDAL_HTTP_USERAGENT") is None and \
        gdal.GetThreadLocalConfigOption("GDAL_HTTP_USERAGENT", None) is None, "GDAL's settings were restored"
    hits = jobs.search(tmp_path / "web", "a road", top_k=2)
    assert len(hits) == 2 and hits[0].tile.raster == "/vsicurl/" + url

    server.clear()
    with using(fast(tmp_path)):
        again = jobs.index_rasters(tmp_path / "web", [url])
    assert again.unchanged == ["/vsicurl/" + url]
    assert sum(h.sent for h in server.requests("/files/")) < 0.05 * size, "unchanged: only headers are read"


def test_missing_cog_is_reported_by_name(server, tiny_model, tmp_path):
    with pytest.raises(EngineError, match="gone.tif cannot be read over the network"):
        jobs.index_rasters(tmp_path / "idx", [server.url + "/files/gone.tif"], model=model(tiny_model))
    assert not (tmp_path / "idx").exists()


# -- STAC --------------------------------------------------------------------------------------
def stac_item(item_id: str, when: str, href: str, path: Path) -> dict:
    from osgeo import osr

    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform()
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    west, south, east, north = osr.CoordinateTransformation(srs, wgs).TransformBounds(
        gt[0], gt[3] + gt[5] * ds.RasterYSize, gt[0] + gt[1] * ds.RasterXSize, gt[3], 21)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    cog = "image/tiff; application=geotiff; profile=cloud-optimized"
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "naip",
            "bbox": [west, south, east, north], "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"datetime": when},
            "assets": {"thumbnail": {"href": href, "type": "image/png", "roles": ["thumbnail"]},
                       "nir": {"href": href, "type": cog, "roles": ["data"]},
                       "visual": {"href": href, "type": cog, "roles": ["visual"]}},
            "links": []}


def write_catalogue(files: Path, base: str) -> str:
    """catalog.json → naip/collection.json → two items whose visual assets are the COGs, relative hrefs."""
    stac = files / "stac"
    (stac / "naip").mkdir(parents=True, exist_ok=True)
    catalog = {"type": "Catalog", "id": "test", "stac_version": "1.0.0", "description": "test catalogue",
               "links": [{"rel": "root", "href": "./catalog.json"}, {"rel": "child", "href": "./naip/collection.json"}]}
    items = {"naip_2016": ("2016-08-16T00:00:00Z", "naip_2016.tif"), "naip_2009": ("2009-08-18T00:00:00Z",
                                                                                    "naip_2009.tif")}
    collection = {"type": "Collection", "id": "naip", "stac_version": "1.0.0", "description": "NAIP",
                  "license": "proprietary", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                       "temporal": {"interval": [[None, None]]}},
                  "links": [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}]
                  + [{"rel": "item", "href": f"./{i}.json"} for i in items]}
    for item_id, (when, name) in items.items():
        item = stac_item(item_id, when, f"../../{name}", files / name)
        item["links"] = [{"rel": "root", "href": "../catalog.json"}, {"rel": "collection", "href": "./collection.json"}]
        (stac / "naip" / f"{item_id}.json").write_text(json.dumps(item))
    (stac / "catalog.json").write_text(json.dumps(catalog))
    (stac / "naip" / "collection.json").write_text(json.dumps(collection))
    return f"{base}/files/stac/catalog.json"


def cli(capsys, *args):
    """``python -m engine …`` in this process (the subprocess form is covered by tests/test_cli.py)."""
    from engine.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_static_stac_catalogue_through_the_cli(imagery, server, tiny_model, tmp_path, capsys, monkeypatch):
    _, _, files = imagery
    catalogue = write_catalogue(files, server.url)
    folder = tmp_path / "idx"
    args = ["index", "--stac", catalogue, "--collection", "naip", "--bbox", "-99.2,47.0,-99.1,47.04",
            "--datetime", "2016-01-01/2016-12-31", "--index", folder, "--arch", tiny_model.config,
            "--checkpoint", tiny_model.checkpoint, "--tile-size", "112"]
    monkeypatch.setenv("RSCLIP_WEB_CACHE", str(tmp_path / "cache"))
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert "1 item(s) matched" in err
    cog_url = "/vsicurl/" + server.url + "/files/naip_2016.tif"
    assert [r.path for r in jobs.info(folder).rasters] == [cog_url]
    from engine.sources.stac import raster_dates

    assert raster_dates(folder) == {cog_url: {"datetime": "2016-08-16T00:00:00Z", "item": "naip_2016",
                                              "collection": "naip", "asset": "visual", "catalogue": catalogue}}
    clip = model(tiny_model)
    jobs.index_rasters(tmp_path / "local", [files / "naip_2016.tif"], model=clip, tiling=TilingSpec(size=112))
    assert_same_tiles(folder, tmp_path / "local")
    assert len(jobs.search(folder, "trees", top_k=4)) == 4

    code, _, err = cli(capsys, *args[:7], "--datetime", "2030", "--index", tmp_path / "none")
    assert code == 2 and "No STAC items matched" in err


def test_stac_api_search_picks_items_by_date_and_asset(imagery, server, tiny_model, tmp_path):
    from engine.sources.stac import index_stac, raster_dates

    _, _, files = imagery
    server.stac_items = [stac_item(name[:-4], when, f"{server.url}/files/{name}", files / name)
                         for name, when in (("naip_2016.tif", "2016-08-16T00:00:00Z"),
                                            ("naip_2009.tif", "2009-08-18T00:00:00Z"))]
    report, found = index_stac(tmp_path / "idx", server.url + "/api", ["naip"], "-99.2,47.0,-99.1,47.04",
                               "2009/2010", model=model(tiny_model), tiling=TilingSpec(size=224),
                               options=fast(tmp_path))
    assert found.api and [r.item for r in found.rasters] == ["naip_2009"] and found.rasters[0].asset == "visual"
    assert report.added and not report.skipped
    dates = raster_dates(tmp_path / "idx")
    assert [v["datetime"] for v in dates.values()] == ["2009-08-18T00:00:00Z"]
    searches = server.requests("/api/search")
    assert searches and all(h.user_agent == RemoteOptions().user_agent for h in searches)

    _, nir = index_stac(tmp_path / "nir", server.url + "/api", ["naip"], None, "2016", asset="nir",
                        model=model(tiny_model), tiling=TilingSpec(size=224), options=fast(tmp_path))
    assert [(r.item, r.asset) for r in nir.rasters] == [("naip_2016", "nir")]
    with pytest.raises(EngineError, match="no asset 'swir'"):
        index_stac(tmp_path / "swir", server.url + "/api", ["naip"], None, "2016", asset="swir",
                   model=model(tiny_model), options=fast(tmp_path))


# -- the command line ----------------------------------------------------------------------------
def test_cli_estimates_then_indexes_an_xyz_layer(imagery, server, tiny_model, tmp_path, capsys, monkeypatch):
    west, south, east, north = -99.18, 47.005, -99.15, 47.03
    monkeypatch.setenv("RSCLIP_WEB_CACHE", str(tmp_path / "cache"))
    base = ["index", "--xyz", server.url + "/xyz/{z}/{x}/{y}.png", "--zoom", "14", "--bbox",
            f"{west},{south},{east},{north}", "--index", tmp_path / "idx", "--arch", tiny_model.config,
            "--checkpoint", tiny_model.checkpoint, "--tile-size", "112"]
    code, _, err = cli(capsys, *base, "--max-requests", "2")
    assert code == 2 and "cap of 2" in err and "Nothing was requested" in err
    assert not server.requests()
    code, _, err = cli(capsys, *base, "--estimate")
    assert code == 0 and "127.0.0.1 z14:" in err and "to download" in err
    assert not server.requests() and not (tmp_path / "idx").exists()
    code, out, err = cli(capsys, *base)
    assert code == 0, err
    assert list((tmp_path / "cache").iterdir()), "the tiles went to RSCLIP_WEB_CACHE"
    code, out, _ = cli(capsys, "info", "--index", tmp_path / "idx")
    assert "127.0.0.1 z14" in out
    code, out, _ = cli(capsys, "search", "houses", "--index", tmp_path / "idx", "--top-k", "2")
    assert code == 0 and out.count("127.0.0.1 z14") == 2
    bounds = [t.bounds for t in jobs.tiles(tmp_path / "idx")]
    from engine.sources.webmap import transform_bounds

    asked = transform_bounds((west, south, east, north), "EPSG:4326", "EPSG:3857")
    res = 2 * 20037508.342789244 / (256 * 2 ** 14)
    assert min(b[0] for b in bounds) == pytest.approx(asked[0], abs=res) and \
        max(b[3] for b in bounds) == pytest.approx(asked[3], abs=res), "the tiles cover the asked extent"
    assert math.isclose(bounds[0][2] - bounds[0][0], 112 * res)
