"""Model download against a real HTTP server on 127.0.0.1: hash, resume, mismatch, offline."""
import hashlib
import http.server
import json
import socket
import threading
from dataclasses import replace

import pytest

from engine.errors import Cancelled, EngineError
from engine.models import ModelSpec, cached_weights_path, ensure_weights, is_cached, load_model, resolve_model_ref
from engine.models import registry


class Hub(http.server.ThreadingHTTPServer):
    """A stand-in for the Hugging Face hub: resolve URLs with LFS ETags and Range, plus the model API."""

    def __init__(self, files: dict, etag: bool = True, ranges: bool = True):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files, self.etag, self.ranges = files, etag, ranges
        self.requests: list[tuple[str, str, str | None]] = []
        self.sent = 0

    def handle_error(self, request, client_address):
        """A client that hangs up mid-body (the cancel test) is expected, not an error."""

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _lookup(self):
        hub = self.server
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path.startswith("/api/models/"):
            repo = self.path.split("/api/models/")[1].split("?")[0]
            siblings = [{"rfilename": name.split("/resolve/main/")[1],
                         "lfs": {"sha256": hashlib.sha256(data).hexdigest()}}
                        for name, data in hub.files.items() if name.startswith(f"/{repo}/")]
            return json.dumps({"siblings": siblings}).encode(), "api"
        return hub.files.get(self.path), "file"

    def do_HEAD(self):
        data, kind = self._lookup()
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.server.etag and kind == "file":
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_GET(self):
        data, kind = self._lookup()
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.server.ranges and kind == "file":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.sent += len(body)


@pytest.fixture
def hub_factory(monkeypatch, tmp_path):
    servers = []
    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path / "cache"))

    def make(files, **kw):
        hub = Hub(files, **kw)
        threading.Thread(target=hub.serve_forever, daemon=True).start()
        servers.append(hub)
        monkeypatch.setenv("RSCLIP_HF_ENDPOINT", hub.endpoint)
        return hub

    yield make
    for hub in servers:
        hub.shutdown()
        hub.server_close()


@pytest.fixture
def tiny_spec(tiny_model, monkeypatch):
    """A registry entry whose weights are the tiny model's checkpoint, served by the local hub."""
    spec = ModelSpec("tiny-test", str(tiny_model.config), "test/tiny", "tiny.pt", None, None, "test only",
                     "none", "random weights for tests")
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    return spec


def test_download_verifies_against_published_hash_and_loads(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub = hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    seen = []
    path = ensure_weights(tiny_spec, progress=lambda f, m: seen.append(f))
    assert path == cached_weights_path(tiny_spec) and path.read_bytes() == data
    assert (path.parent / "tiny.pt.sha256").read_text().strip() == hashlib.sha256(data).hexdigest()
    assert is_cached(tiny_spec) and seen and max(seen) == pytest.approx(1.0)
    loaded = load_model(resolve_model_ref(name="tiny-test"))
    assert loaded.embed_dim == 32 and loaded.image_size == 32
    before = len(hub.requests)
    ensure_weights(tiny_spec)
    assert len(hub.requests) == before, "a verified cached file is used without asking the hub"


def test_resume_sends_only_the_rest(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub = hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    part = cached_weights_path(tiny_spec).with_name("tiny.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    path = ensure_weights(tiny_spec)
    assert path.read_bytes() == data
    assert ("GET", "/test/tiny/resolve/main/tiny.pt", "bytes=1000-") in hub.requests
    assert hub.sent == len(data) - 1000


def test_server_without_range_support_restarts(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub_factory({"/test/tiny/resolve/main/tiny.pt": data}, ranges=False)
    part = cached_weights_path(tiny_spec).with_name("tiny.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 500)
    assert ensure_weights(tiny_spec).read_bytes() == data


def test_hash_from_model_api_when_no_etag(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes()
    hub = hub_factory({"/test/tiny/resolve/main/tiny.pt": data}, etag=False)
    ensure_weights(tiny_spec)
    assert any(path.startswith("/api/models/test/tiny") for _, path, _ in hub.requests)


def test_mismatch_deletes_the_file(hub_factory, tiny_spec, tiny_model, monkeypatch):
    data = tiny_model.checkpoint.read_bytes()
    hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    wrong = replace(tiny_spec, sha256="0" * 64)
    monkeypatch.setitem(registry.REGISTRY, wrong.name, wrong)
    with pytest.raises(EngineError, match="failed the checksum.*deleted"):
        ensure_weights(wrong)
    assert not cached_weights_path(wrong).exists() and not is_cached(wrong)


def test_offline_says_where_to_put_the_file_and_accepts_it(tiny_spec, tiny_model, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RSCLIP_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path / "cache"))
    target = cached_weights_path(tiny_spec)
    with pytest.raises(EngineError, match="offline") as err:
        ensure_weights(tiny_spec, timeout=5)
    assert str(target) in str(err.value) and "tiny.pt" in str(err.value)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(tiny_model.checkpoint.read_bytes())
    assert ensure_weights(tiny_spec, timeout=5) == target and is_cached(tiny_spec)


def test_cancel_keeps_the_partial_file_for_resume(hub_factory, tiny_spec, tiny_model):
    data = tiny_model.checkpoint.read_bytes() * 3
    hub_factory({"/test/tiny/resolve/main/tiny.pt": data})
    with pytest.raises(Cancelled):
        ensure_weights(tiny_spec, cancel=lambda: True)
    assert cached_weights_path(tiny_spec).with_name("tiny.pt.part").exists()
    assert not cached_weights_path(tiny_spec).exists()


def test_unverifiable_weights_are_refused(hub_factory, tiny_spec, tiny_model):
    hub_factory({"/other/resolve/main/x": b""}, etag=False)
    with pytest.raises(EngineError, match="cannot be verified|Cannot download"):
        ensure_weights(tiny_spec)
