"""The toolbox with imagery not on disk: COG URLs in Build semantic index, STAC and web map algorithms."""
import pytest
from osgeo import gdal
from qgis.core import QgsDataSourceUri, QgsProcessingException, QgsProject, QgsRasterLayer

from test_processing import RecordingFeedback, custom_model, provider, run  # noqa: F401 (fixtures)
from test_remote import imagery, write_catalogue  # noqa: F401 (imagery is a fixture)
from webserve import ImageryServer, TileMaker

from plugin_fixtures import NAIP

pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {NAIP}")


@pytest.fixture
def served(imagery):
    _, reference, files = imagery
    with ImageryServer(files=files, tiles=TileMaker(reference)) as server:
        yield server, files, reference


def test_build_index_reads_cog_urls(provider, custom_model, served, tmp_path):
    server, files, _ = served
    url = server.url + "/files/naip_2016.tif"
    out = run("build_index", {"URLS": f"{url}\n", "INDEX": str(tmp_path / "idx"), **custom_model,
                              "TILE_SIZE": 224})
    local = run("build_index", {"INPUT": [str(files / "naip_2016.tif")], "INDEX": str(tmp_path / "local"),
                                **custom_model, "TILE_SIZE": 224})
    assert out["OUTPUT"].featureCount() == local["OUTPUT"].featureCount() == 20
    assert {f["raster"] for f in out["OUTPUT"].getFeatures()} == {"/vsicurl/" + url}
    with pytest.raises(QgsProcessingException, match="at least one raster"):
        run("build_index", {"INDEX": str(tmp_path / "none"), **custom_model})


def test_build_index_from_stac(provider, custom_model, served, tmp_path):
    server, files, _ = served
    catalogue = write_catalogue(files, server.url)
    feedback = RecordingFeedback()
    out = run("build_index_stac", {"STAC_URL": catalogue, "COLLECTIONS": "naip", "DATETIME": "2009",
                                   "INDEX": str(tmp_path / "idx"), **custom_model, "TILE_SIZE": 224}, feedback)
    from rsclip_search.engine.sources.stac import raster_dates

    dates = raster_dates(tmp_path / "idx")
    assert [d["datetime"] for d in dates.values()] == ["2009-08-18T00:00:00Z"]
    assert any("1 item(s) matched" in text for text in feedback.infos)
    assert out["INDEX"] == str(tmp_path / "idx")


def test_build_index_from_a_web_map_layer(provider, custom_model, served, tmp_path, qgis_new_project):
    server, _, reference = served
    uri = QgsDataSourceUri()
    uri.setParam("type", "xyz")
    uri.setParam("url", server.url + "/xyz/{z}/{x}/{y}.png")
    layer = QgsRasterLayer(bytes(uri.encodedUri()).decode(), "Tiles", "wms")
    QgsProject.instance().addMapLayer(layer)
    ds = gdal.Open(str(reference))
    gt = ds.GetGeoTransform()
    extent = f"{gt[0]},{gt[0] + gt[1] * ds.RasterXSize},{gt[3] + gt[5] * ds.RasterYSize},{gt[3]} [EPSG:3857]"
    params = {"LAYER": layer.id(), "EXTENT": extent, "ZOOM": 14, "INDEX": str(tmp_path / "idx"), **custom_model,
              "TILE_SIZE": 224}
    with pytest.raises(QgsProcessingException, match=r"needs 12 web map requests.*cap of 3"):
        run("build_index_web_map", {**params, "MAX_REQUESTS": 3})
    from rsclip_search.engine.sources import RemoteOptions

    ours = [h for h in server.requests("/xyz/") if h.user_agent == RemoteOptions().user_agent]
    assert not ours, "refused before any request (QGIS itself may draw the layer)"
    feedback = RecordingFeedback()
    run("build_index_web_map", params, feedback)
    assert any("12 tiles to index from 12 web map tiles" in text for text in feedback.infos)
    from rsclip_search.engine import jobs

    info = jobs.info(str(tmp_path / "idx"))
    assert info.tile_count == 12 and info.rasters[0].path.endswith("/127.0.0.1 z14")
