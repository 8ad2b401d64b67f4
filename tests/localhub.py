"""A stand-in for the model hubs on 127.0.0.1: Hugging Face resolve URLs with LFS ETags and Range,
the model API's blob list, and plain URLs (like SkyCLIP's S3 zip).

Files are bytes or paths; paths are streamed from disk, so gigabyte checkpoints (ViT-H-14) are
served without holding them in memory.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

CHUNK = 1 << 20


def sha256_of(data: bytes | Path) -> str:
    if isinstance(data, (bytes, bytearray)):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open(data, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Hub(http.server.ThreadingHTTPServer):
    """``files`` maps URL paths to bytes or file paths; ``etag``: send the LFS ETag; ``ranges``: honour Range."""

    def __init__(self, files: dict, etag: bool = True, ranges: bool = True):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files, self.etag, self.ranges = files, etag, ranges
        self.requests: list[tuple[str, str, str | None]] = []
        self.sent = 0
        self._hashes: dict[str, str] = {}

    def handle_error(self, request, client_address):
        """A client that hangs up mid-body (the cancel test) is expected, not an error."""

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def sha256(self, name: str) -> str:
        if name not in self._hashes:
            self._hashes[name] = sha256_of(self.files[name])
        return self._hashes[name]


class HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _lookup(self):
        hub = self.server
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path.startswith("/api/models/"):
            repo = self.path.split("/api/models/")[1].split("?")[0]
            siblings = [{"rfilename": name.split("/resolve/main/")[1], "lfs": {"sha256": hub.sha256(name)}}
                        for name in hub.files if name.startswith(f"/{repo}/") and "/resolve/main/" in name]
            return json.dumps({"siblings": siblings}).encode(), "api"
        return hub.files.get(self.path), "file"

    @staticmethod
    def _size(data) -> int:
        return len(data) if isinstance(data, (bytes, bytearray)) else Path(data).stat().st_size

    def do_HEAD(self):
        data, kind = self._lookup()
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.server.etag and kind == "file":
            self.send_header("X-Linked-Etag", f'"{self.server.sha256(self.path)}"')
        self.send_header("Content-Length", str(self._size(data)))
        self.end_headers()

    def do_GET(self):
        data, kind = self._lookup()
        if data is None:
            self.send_error(404)
            return
        size = self._size(data)
        start = 0
        rng = self.headers.get("Range")
        if rng and self.server.ranges and kind == "file":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        if isinstance(data, (bytes, bytearray)):
            self.wfile.write(data[start:])
        else:
            with open(data, "rb") as fh:
                fh.seek(start)
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    self.wfile.write(chunk)
        self.server.sent += size - start


@pytest.fixture
def hub_factory(monkeypatch, tmp_path):
    """Start local hubs (``make(files, etag=..., ranges=...)``); the cache and the HF endpoint point at them."""
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
