"""The plugin indexes a web map layer of the project (XYZ from a 127.0.0.1 tile server) for the canvas
extent, showing the estimate first; COG URLs become layers; layer URIs are read as QGIS writes them."""
from types import SimpleNamespace

import pytest
from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsDataSourceUri, QgsProject, QgsRasterLayer, QgsRectangle)
from qgis.PyQt.QtCore import Qt

from plugin_fixtures import NAIP
from test_plugin import errors, plugin, use_tiny_model, wait_idle  # noqa: F401 (plugin is a fixture)
from webserve import MERCATOR_HALF, ImageryServer, TileMaker, mercator_raster

ZOOM = 14
pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {NAIP}")


@pytest.fixture(scope="module")
def mercator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    reference = mercator_raster(NAIP, folder / "naip_3857.tif", ZOOM)
    cog = folder / "naip_cog.tif"
    gdal.Translate(str(cog), str(NAIP), format="COG", creationOptions=["BLOCKSIZE=256"])
    return reference, folder


@pytest.fixture
def server(mercator):
    reference, folder = mercator
    with ImageryServer(files=folder, tiles=TileMaker(reference)) as srv:
        yield srv


def xyz_layer(url: str, name: str = "Test XYZ") -> QgsRasterLayer:
    uri = QgsDataSourceUri()
    uri.setParam("type", "xyz")
    uri.setParam("url", url)
    uri.setParam("zmin", "0")
    uri.setParam("zmax", "19")
    uri.setParam("http-header:referer", "https://my.example.test/")
    layer = QgsRasterLayer(bytes(uri.encodedUri()).decode(), name, "wms")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def ours(server):
    from rsclip_search.engine.sources import RemoteOptions

    return [h for h in server.requests("/xyz/") if h.user_agent == RemoteOptions().user_agent]


def test_xyz_layer_is_indexed_for_the_canvas_extent(plugin, mercator, server, tiny_model, tmp_path, qtbot,
                                                    qgis_iface):
    from rsclip_search.engine import jobs

    reference, _ = mercator
    layer = xyz_layer(server.url + "/xyz/{z}/{x}/{y}.png")
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 112)
    ds = gdal.Open(str(reference))
    gt = ds.GetGeoTransform()
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    centre_x, centre_y = gt[0] + gt[1] * ds.RasterXSize / 2, gt[3] + gt[5] * ds.RasterYSize / 2
    canvas.setExtent(QgsRectangle(centre_x - 1500, centre_y - 1000, centre_x + 1500, centre_y + 1000))
    view = canvas.extent()

    dock.web_button.click()
    dialog = plugin.controller.web_indexer.dialog
    assert dialog.isVisible() and dialog.current_layer_id() == layer.id()
    assert "terms of use" in dialog.terms_label.text()
    dialog.zoom_spin.setValue(ZOOM)
    dialog.cap_spin.setValue(2)
    assert "more than the cap of 2 requests" in dialog.estimate_label.text()
    assert not dialog.index_button.isEnabled()
    dialog.cap_spin.setValue(500)
    shown = dialog.estimate_label.text()
    assert "tiles to index from" in shown and "to download" in shown and "MB" in shown, shown
    assert dialog.index_button.isEnabled() and not ours(server), "the estimate requests nothing"

    dialog.index_button.click()
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    info = jobs.info(str(tmp_path / "idx"))
    assert len(info.rasters) == 1 and info.rasters[0].path.startswith("webmap:")
    assert info.rasters[0].status == "complete" and info.tile_count == info.rasters[0].planned > 0
    assert f"{info.tile_count} tiles" in dock.status_label.text()
    expected = int(shown.split(" tiles to index")[0])
    assert info.tile_count == expected, "the estimate named the tiles that were indexed"
    res = 2 * MERCATOR_HALF / (256 * 2 ** ZOOM)
    box = view.buffered(res)
    for tile in jobs.tiles(str(tmp_path / "idx")):
        assert box.contains(QgsRectangle(*tile.bounds)), "tiles lie in the canvas extent"
    requested = ours(server)
    assert requested and all(h.headers.get("Referer") == "https://my.example.test/" for h in requested)

    dock.top_k_spin.setValue(3)
    qtbot.keyClicks(dock.query_edit, "fields")
    qtbot.keyClick(dock.query_edit, Qt.Key.Key_Return)
    wait_idle(qtbot, plugin)
    assert not errors(qgis_iface), errors(qgis_iface)
    assert dock.results_list.count() == 3
    assert "127.0.0.1 z14" in dock.results_list.item(0).text()
    assert not dock.results_list.item(0).icon().isNull(), "thumbnails come from the tile cache"


def test_layer_action_on_a_web_layer_opens_its_dialog(plugin, server, qgis_iface):
    layer = xyz_layer(server.url + "/xyz/{z}/{x}/{y}.png", "Other XYZ")
    qgis_iface.setActiveLayer(layer)
    plugin.layer_actions.index_action.trigger()
    dialog = plugin.controller.web_indexer.dialog
    assert dialog.isVisible() and dialog.current_layer_id() == layer.id()


def test_cog_url_becomes_a_layer_listed_for_indexing(plugin, server, qgis_iface):
    dock = plugin.show_dock()
    dock.url_edit.setText(server.url + "/files/naip_cog.tif")
    dock.url_edit.returnPressed.emit()
    names = [dock.rasters_list.item(i).toolTip() for i in range(dock.rasters_list.count())]
    assert names == ["/vsicurl/" + server.url + "/files/naip_cog.tif"]
    dock.url_edit.setText(server.url + "/files/missing.tif")
    dock.url_edit.returnPressed.emit()
    assert any("could not be opened" in m for m in qgis_iface.messageBar().get_messages(1))


def test_layer_uris_are_read_as_qgis_writes_them(plugin_package):
    from rsclip_search.engine.errors import EngineError
    from rsclip_search.plugin.webmap import web_service

    def fake(source):
        return SimpleNamespace(source=lambda: source, name=lambda: "layer",
                               crs=lambda: QgsCoordinateReferenceSystem("EPSG:3857"))

    wms = web_service(fake("contextualWMSLegend=0&crs=EPSG:25832&dpiMode=7&format=image/jpeg&layers=ortho&"
                           "layers=roads&styles=&styles=&url=https://wms.example.test/service?map=x&authcfg=abc1234"))
    # every layer, in the order QGIS's WMS provider takes them (QgsDataSourceUri.params: last written first)
    assert (wms.kind, wms.layers, wms.crs, wms.fmt, wms.authcfg) == ("wms", "roads,ortho", "EPSG:25832", "image/jpeg",
                                                                     "abc1234")
    xyz = web_service(fake("type=xyz&url=https://t.example.test/%7Bz%7D/%7Bx%7D/%7By%7D.jpg&zmin=2&zmax=18&"
                           "tilePixelRatio=2&http-header:user-agent=MyAgent"))
    assert (xyz.url, xyz.zmin, xyz.zmax, xyz.tile) == ("https://t.example.test/{z}/{x}/{y}.jpg", 2, 18, 512)
    assert dict(xyz.headers) == {"User-Agent": "MyAgent"}
    with pytest.raises(EngineError, match="WMTS"):
        web_service(fake("crs=EPSG:3857&format=image/png&layers=a&styles=default&tileMatrixSet=GoogleMapsCompatible"
                         "&url=https://t.example.test/WMTSCapabilities.xml"))


def test_stac_button_opens_the_toolbox_dialog_filled_from_the_dock(plugin, qgis_processing, tmp_path,
                                                                  tiny_model, qgis_iface, monkeypatch):
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)  # the stub iface lacks one
    dock = plugin.show_dock()
    use_tiny_model(dock, tiny_model, tmp_path / "idx", 112)
    dock.stac_button.click()
    dialog = plugin.controller.stac_dialog
    assert dialog.isVisible() and dialog.algorithm().id() == "rsclip_search:build_index_stac"
    values = {name: wrapper.parameterValue() for name, wrapper in dialog.mainWidget().wrappers.items()}
    assert values["INDEX"] == str(tmp_path / "idx") and values["MODEL"] == "custom"
    assert values["CHECKPOINT"] == str(tiny_model.checkpoint) and values["TILE_SIZE"] == 112
    dialog.close()


def test_qgis_basic_authentication_becomes_request_headers(plugin_package, qgis_app):
    from qgis.core import QgsApplication, QgsAuthMethodConfig

    from rsclip_search.engine.errors import EngineError
    from rsclip_search.plugin.webmap import WebService, auth_headers, remote_options

    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("test-master-password", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("tiles")
    config.setConfig("username", "user")
    config.setConfig("password", "pw")
    ok, config = manager.storeAuthenticationConfig(config)
    assert ok
    headers = dict(auth_headers(config.id(), "https://t.example.test/{z}/{x}/{y}.png"))
    assert headers["Authorization"] == "Basic dXNlcjpwdw=="
    options = remote_options(WebService("xyz", "https://t.example.test/{z}/{x}/{y}.png", authcfg=config.id()), 10)
    assert options.headers_for(config.id())["Authorization"] == "Basic dXNlcjpwdw=="
    with pytest.raises(EngineError, match="is not in this QGIS"):
        auth_headers("nope123", "https://t.example.test/")
