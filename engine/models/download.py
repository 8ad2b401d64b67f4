"""Download model weights into a cache with resume, SHA-256 verification and an offline message.

The verified hash is kept beside the file (``<file>.sha256``), so a file is trusted only
after it was checked once; a hand-placed file is checked the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

from .. import __version__
from ..atomic import atomic_write_bytes
from ..errors import Cancelled, EngineError
from ..progress import CancelFn, ProgressFn, check_cancel, no_progress
from .registry import ModelSpec

CHUNK = 1 << 20
_USER_AGENT = f"rsclip-search/{__version__}"


def cache_dir() -> Path:
    """Where weights are kept: ``RSCLIP_CACHE_DIR`` or ``~/.cache/rsclip_search/models``."""
    env = os.environ.get("RSCLIP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rsclip_search" / "models"


def hf_endpoint() -> str:
    """The Hugging Face endpoint (``RSCLIP_HF_ENDPOINT`` overrides it, e.g. for a mirror)."""
    return os.environ.get("RSCLIP_HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def weights_url(spec: ModelSpec) -> str:
    if spec.url:
        return spec.url
    return f"{hf_endpoint()}/{spec.hf_repo}/resolve/main/{spec.hf_file}"


def cached_weights_path(spec: ModelSpec) -> Path:
    filename = Path(spec.hf_file or str(spec.url).rsplit("/", 1)[-1]).name
    return cache_dir() / spec.name / filename


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> str:
    """SHA-256 of a file read in chunks (weights and wheels run to gigabytes); honours cancel between chunks."""
    digest = hashlib.sha256()
    size = max(path.stat().st_size, 1)
    done = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            check_cancel(cancel)
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done / size, f"checking {path.name}")
    return digest.hexdigest()


def is_cached(spec: ModelSpec) -> bool:
    """True when the weights are in the cache and were verified."""
    path = cached_weights_path(spec)
    side = _sidecar(path)
    if not path.is_file() or not side.is_file():
        return False
    recorded = side.read_text().strip()
    return spec.sha256 is None or recorded == spec.sha256


def adopt_weights(spec: ModelSpec, source: Path, sha256: str, cache: Path | None = None) -> Path:
    """Put a weights file whose hash was already checked (e.g. from an offline bundle) into the cache."""
    if spec.sha256 and sha256.lower() != spec.sha256.lower():
        raise EngineError(f"The weights offered for {spec.name} have SHA-256 {sha256}, not the registry's "
                          f"{spec.sha256}; they were not installed.")
    path = cached_weights_path(spec)
    if cache is not None:
        path = Path(cache) / spec.name / path.name
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    shutil.copyfile(source, part)
    os.replace(part, path)
    atomic_write_bytes(_sidecar(path), (sha256.lower() + "\n").encode())
    return path


def _request(url: str, method: str = "GET", headers: dict | None = None):
    req = urllib.request.Request(url, method=method, headers={"User-Agent": _USER_AGENT, **(headers or {})})
    return req


def published_sha256(spec: ModelSpec, timeout: float = 30) -> str | None:
    """The SHA-256 the hub publishes for the file (LFS ETag, or the model API's blob list)."""
    if spec.sha256:
        return spec.sha256
    url = weights_url(spec)
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=timeout) as resp:
            for header in ("X-Linked-Etag", "ETag"):
                value = (resp.headers.get(header) or "").strip().strip('"').removeprefix("W/").strip('"')
                if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
                    return value.lower()
    except urllib.error.HTTPError:
        pass
    if spec.hf_repo:
        api = f"{hf_endpoint()}/api/models/{spec.hf_repo}?blobs=true"
        try:
            with urllib.request.urlopen(_request(api), timeout=timeout) as resp:
                info = json.loads(resp.read().decode("utf-8"))
            for sibling in info.get("siblings", []):
                if sibling.get("rfilename") == spec.hf_file and sibling.get("lfs", {}).get("sha256"):
                    return str(sibling["lfs"]["sha256"]).lower()
        except urllib.error.HTTPError:
            pass
        except ValueError:
            pass
    return None


def _offline_error(spec: ModelSpec, reason: object) -> EngineError:
    path = cached_weights_path(spec)
    return EngineError(f"Cannot download {spec.name} ({reason}). If this computer is offline, download "
                       f"{weights_url(spec)} on another one and put it at {path}; it will be checked and used.")


def _accept(spec: ModelSpec, path: Path, expected: str | None, progress: ProgressFn) -> Path:
    """Verify ``path`` against ``expected`` (if known) and record its hash beside it."""
    got = file_sha256(path, progress)
    if expected and got != expected:
        path.unlink()
        raise EngineError(f"The weights of {spec.name} failed the checksum (expected SHA-256 {expected}, got {got}); "
                          f"the file was deleted. Download it again.")
    atomic_write_bytes(_sidecar(path), (got + "\n").encode())
    return path


def ensure_weights(spec: ModelSpec, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                   timeout: float = 30, allow_unverified: bool = False) -> Path:
    """The verified weights file of a registry model, downloading it first if needed."""
    progress = progress or no_progress
    path = cached_weights_path(spec)
    if is_cached(spec):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            expected = published_sha256(spec, timeout)
        except (urllib.error.URLError, socket.timeout, OSError):
            expected = spec.sha256
        progress(0.0, f"checking the hand-placed file {path}"
                 + ("" if expected else " (no published hash reachable: its hash is recorded as found)"))
        return _accept(spec, path, expected, progress)
    url = weights_url(spec)
    try:
        expected = published_sha256(spec, timeout)
        if expected is None and not allow_unverified:
            raise EngineError(f"No SHA-256 is published for {url}, so {spec.name} cannot be verified; "
                              "refusing to install unverified weights.")
        _download(url, path.with_name(path.name + ".part"), spec, progress, cancel, timeout)
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise _offline_error(spec, getattr(exc, "reason", exc)) from None
    os.replace(path.with_name(path.name + ".part"), path)
    return _accept(spec, path, expected, progress)


def _download(url: str, part: Path, spec: ModelSpec, progress: ProgressFn, cancel: CancelFn | None,
              timeout: float) -> None:
    """Stream ``url`` into ``part``, resuming an existing partial file with an HTTP Range request."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    with urllib.request.urlopen(_request(url, headers=headers), timeout=timeout) as resp:
        if start and resp.status != 206:
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        done = start
        with open(part, "ab" if start else "wb") as fh:
            while True:
                if cancel is not None and cancel():
                    raise Cancelled(f"Download of {spec.name} cancelled; it will resume next time.")
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                done += len(chunk)
                frac = done / total if total else 0.0
                progress(frac, f"downloading {spec.name}: {done / 1e6:.1f} of "
                         f"{(total or 0) / 1e6:.1f} MB")
    if total is not None and done < total:
        raise EngineError(f"The download of {spec.name} stopped early ({done} of {total} bytes); "
                          "run again to resume.")
