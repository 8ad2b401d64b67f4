"""First use of an uncached registry model in the dock: a download task with a cancellable dialog.

A local HTTP server stands in for the model hub; the tiny test model is registered as a
registry model whose weights live only on that server.
"""
import hashlib
import http.server
import socket
import threading
import time

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QPushButton

TIMEOUT = 180_000
NAME = "tiny-test-registry"


class Hub(http.server.ThreadingHTTPServer):
    def __init__(self, data: bytes, pause: float = 0.0, padding: int = 0):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.data, self.pause, self.padding = data, pause, padding

    def handle_error(self, request, client_address):
        """A cancelled download hangs up mid-body; that is expected."""


class HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("X-Linked-Etag", f'"{hashlib.sha256(self.server.data).hexdigest()}"')
        self.send_header("Content-Length", str(len(self.server.data) + self.server.padding))
        self.end_headers()

    def do_GET(self):
        body = self.server.data + b"\0" * self.server.padding
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for start in range(0, len(body), 1 << 20):
            self.wfile.write(body[start:start + (1 << 20)])
            time.sleep(self.server.pause)


@pytest.fixture
def registry_model(plugin_package, tiny_model, monkeypatch, tmp_path):
    """The tiny model as a registry entry with an empty weights cache; yields a hub factory."""
    from rsclip_search.engine.models import ModelSpec, registry

    spec = ModelSpec(NAME, str(tiny_model.config), "test/tiny", "tiny.pt", None, None, "MIT", "-", "tiny test model")
    monkeypatch.setitem(registry.REGISTRY, NAME, spec)
    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path / "cache"))
    servers = []

    def start(**kwargs) -> str:
        hub = Hub(tiny_model.checkpoint.read_bytes(), **kwargs)
        threading.Thread(target=hub.serve_forever, daemon=True).start()
        servers.append(hub)
        monkeypatch.setenv("RSCLIP_HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
        return spec

    yield start
    for hub in servers:
        hub.shutdown()
        hub.server_close()


@pytest.fixture
def plugin(qgis_iface, plugin_package, qgis_new_project, naip_raster, registry_model):
    from qgis.core import QgsSettings

    QgsSettings().remove("rsclip_search")
    qgis_iface.messageBar().clear_messages()
    QgsProject.instance().addMapLayer(QgsRasterLayer(str(naip_raster), "NAIP 2016"))
    instance = plugin_package.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


def start_indexing(plugin, folder):
    dock = plugin.show_dock()
    dock.set_index_dir(str(folder))
    dock.model_combo.setCurrentText(NAME)
    dock.tile_size_spin.setValue(224)
    dock.index_button.click()
    return dock


def messages(iface, level):
    return iface.messageBar().get_messages(level)


def test_uncached_model_is_downloaded_with_a_dialog_then_used(plugin, registry_model, tmp_path, qtbot, qgis_iface):
    from rsclip_search.engine.models import is_cached

    spec = registry_model()
    assert not is_cached(spec)
    dock = start_indexing(plugin, tmp_path / "idx")
    dialog = plugin.controller.download_dialog
    assert dialog is not None and dialog.isVisible() and NAME in dialog.labelText()
    qtbot.waitUntil(lambda: not plugin.controller.tasks, timeout=TIMEOUT)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    assert is_cached(spec) and plugin.controller.download_dialog is None
    assert f"Model {NAME}" in dock.status_label.text() and "20 tiles" in dock.status_label.text()


def test_offline_download_names_where_to_put_the_file(plugin, registry_model, tmp_path, qtbot, qgis_iface,
                                                      monkeypatch):
    registry_model()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RSCLIP_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start_indexing(plugin, tmp_path / "idx")
    qtbot.waitUntil(lambda: not plugin.controller.tasks, timeout=TIMEOUT)
    errors = messages(qgis_iface, Qgis.Critical)
    assert len(errors) == 1 and "Cannot download" in errors[0] and str(tmp_path / "cache") in errors[0]
    assert not (tmp_path / "idx").exists(), "no index is started without weights"


def test_cancel_in_the_dialog_stops_the_download(plugin, registry_model, tmp_path, qtbot, qgis_iface):
    from rsclip_search.engine.models import cached_weights_path, is_cached

    spec = registry_model(pause=0.2, padding=40 << 20)
    start_indexing(plugin, tmp_path / "idx")
    dialog = plugin.controller.download_dialog
    qtbot.waitUntil(lambda: dialog.value() > 0, timeout=TIMEOUT)
    dialog.findChild(QPushButton).click()  # the dialog's Cancel button, as a user would
    qtbot.waitUntil(lambda: not plugin.controller.tasks, timeout=TIMEOUT)
    assert not messages(qgis_iface, Qgis.Critical), messages(qgis_iface, Qgis.Critical)
    assert any("cancelled" in m for m in messages(qgis_iface, Qgis.Info))
    part = cached_weights_path(spec).with_name(cached_weights_path(spec).name + ".part")
    assert not is_cached(spec) and part.is_file(), "the partial download is kept for resuming"
    assert not (tmp_path / "idx").exists()
