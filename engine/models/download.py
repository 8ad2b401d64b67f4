"""Download model weights into a cache with resume, size and SHA-256 checks and an offline message.

The verified hash is kept beside the file (``<file>.sha256``), so a file is trusted only
after it was checked once; a hand-placed file is checked the same way. Where the publisher
serves a zip (SkyCLIP), the zip is downloaded and checked the same way, then only the named
member is extracted into the model's cache folder (nothing else from the archive is written)
and the zip is deleted; its hash stays recorded beside the extracted checkpoint.

How a file is verified depends on what its publisher gives (``ModelSpec.verification``):
``pinned`` (size and SHA-256 in the registry), ``hub`` (the SHA-256 Hugging Face publishes for
the file) or ``first-use`` (nothing published: the first download's hash is recorded and a
later download must match it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

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
    """The URL of the published artefact (a weights file, or the zip holding it)."""
    if spec.url:
        return spec.url
    return f"{hf_endpoint()}/{spec.hf_repo}/resolve/{spec.revision}/{spec.hf_file}"


def artefact_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    """Where the downloaded artefact goes (for a plain file, the weights file itself)."""
    filename = Path(spec.hf_file or str(spec.url).rsplit("/", 1)[-1]).name
    return (Path(cache) if cache is not None else cache_dir()) / spec.name / filename


def cached_weights_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    """The checkpoint that is loaded: the artefact, or the member extracted from a zip artefact."""
    if spec.member:
        return artefact_path(spec, cache).with_name(PurePosixPath(spec.member).name)
    return artefact_path(spec, cache)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded(path: Path) -> str | None:
    try:
        return _sidecar(path).read_text().strip().lower() or None
    except OSError:
        return None


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
    """True when the checkpoint is in the cache and was verified."""
    path = cached_weights_path(spec)
    if not path.is_file() or _recorded(path) is None:
        return False
    if spec.sha256 is None:
        return True
    if spec.member:
        # an extracted member: its archive's recorded hash must be the registry's (an adopted
        # member from an offline bundle has no archive record; the bundle's manifest vouched for it)
        archive = _recorded(artefact_path(spec))
        return archive is None or archive == spec.sha256.lower()
    return _recorded(path) == spec.sha256.lower()


def adopt_weights(spec: ModelSpec, source: Path, sha256: str, cache: Path | None = None) -> Path:
    """Put a checkpoint whose hash was already checked (e.g. from an offline bundle) into the cache."""
    if spec.sha256 and not spec.member and sha256.lower() != spec.sha256.lower():
        raise EngineError(f"The weights offered for {spec.name} have SHA-256 {sha256}, not the registry's "
                          f"{spec.sha256}; they were not installed.")
    path = cached_weights_path(spec, cache)
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
    """The SHA-256 the registry pins or the hub publishes for the file (LFS ETag, or the model API's blob list)."""
    if spec.sha256:
        return spec.sha256.lower()
    if spec.verification == "first-use":
        return None
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
    path = artefact_path(spec)
    return EngineError(f"Cannot download {spec.name} ({reason}). If this computer is offline, download "
                       f"{weights_url(spec)} on another one and put it at {path}; it will be checked and used.")


def _discard(path: Path, why: str) -> EngineError:
    """Delete a bad artefact and say why, in one sentence that ends with what to do."""
    path.unlink(missing_ok=True)
    return EngineError(f"{why}; the file was deleted. Download it again.")


def _verify(spec: ModelSpec, path: Path, expected: str | None, progress: ProgressFn,
            cancel: CancelFn | None) -> str:
    """Check the artefact's size and hash; returns its SHA-256 (the artefact is deleted if it fails)."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise _discard(path, f"The download of {spec.name} has {size:,} bytes, but its publisher lists "
                             f"{spec.size:,}")
    got = file_sha256(path, progress, cancel)
    if spec.verification == "first-use" and expected is None:
        expected = _recorded(path)  # a hash recorded on first use binds later downloads
    if expected and got != expected:
        raise _discard(path, f"The weights of {spec.name} failed the checksum (expected SHA-256 {expected}, "
                             f"got {got})")
    return got


def _accept(spec: ModelSpec, path: Path, expected: str | None, progress: ProgressFn,
            cancel: CancelFn | None = None) -> Path:
    """Verify the artefact, extract the member of a zip, and record the hashes beside the files."""
    got = _verify(spec, path, expected, progress, cancel)
    if spec.member:
        target = cached_weights_path(spec)
        member_sha = extract_member(path, spec.member, target, spec.name, progress, cancel)
        atomic_write_bytes(_sidecar(target), (member_sha + "\n").encode())
        atomic_write_bytes(_sidecar(path), (got + "\n").encode())
        path.unlink()  # the checkpoint is out; the archive's hash stays recorded
        return target
    atomic_write_bytes(_sidecar(path), (got + "\n").encode())
    return path


def _unsafe_name(name: str) -> bool:
    """A zip entry name that would land outside the folder it is extracted into."""
    return (name.startswith(("/", "\\")) or "\\" in name or bool(re.match(r"^[A-Za-z]:", name))
            or ".." in PurePosixPath(name).parts)


def extract_member(archive: Path, member: str, target: Path, label: str, progress: ProgressFn | None = None,
                   cancel: CancelFn | None = None) -> str:
    """Copy one named regular-file member of a zip to ``target``; returns its SHA-256.

    Nothing else from the archive is written, and the output path never comes from the
    archive. A missing member, a member stored as a link or under a path that climbs out of
    its folder, and a damaged archive are refused (the archive is deleted).
    """
    progress = progress or no_progress
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            exact = [i for i in infos if i.filename == member]
            if not exact or exact[0].is_dir():
                escaping = [i.filename for i in infos if _unsafe_name(i.filename)
                            and PurePosixPath(i.filename.replace("\\", "/")).name == PurePosixPath(member).name]
                if escaping:
                    raise _discard(archive, f"The archive {archive.name} stores {PurePosixPath(member).name} as "
                                            f"{escaping[0]!r}, a path outside the cache folder, so nothing was "
                                            f"extracted")
                raise _discard(archive, f"The archive {archive.name} has no {member}, so it is not the {label} "
                                        f"checkpoint its publisher describes")
            info = exact[0]
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _discard(archive, f"The archive {archive.name} holds {member} as a symbolic link, which "
                                        f"could point outside the cache folder, so nothing was extracted")
            target.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(target.parent).free
            if info.file_size > free:
                raise EngineError(f"Extracting {member} needs {info.file_size / 1e9:.1f} GB but {target.parent} "
                                  f"has {free / 1e9:.1f} GB free; free some space and run again.")
            part = target.with_name(target.name + ".part")
            digest = hashlib.sha256()
            done = 0
            try:
                with zf.open(info) as src, open(part, "wb") as dst:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        check_cancel(cancel)
                        dst.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        progress(done / max(info.file_size, 1), f"extracting {PurePosixPath(member).name}")
                os.replace(part, target)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted member; BadZipFile: not a zip, truncated, or a CRC mismatch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _discard(archive, f"The archive {archive.name} is damaged ({first[:160]})") from None
    return digest.hexdigest()


def ensure_weights(spec: ModelSpec, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                   timeout: float = 30, allow_unverified: bool = False) -> Path:
    """The verified checkpoint of a registry model, downloading (and unpacking) it first if needed."""
    progress = progress or no_progress
    if is_cached(spec):
        return cached_weights_path(spec)
    path = artefact_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            expected = published_sha256(spec, timeout)
        except (urllib.error.URLError, socket.timeout, OSError):
            expected = spec.sha256
        progress(0.0, f"checking the hand-placed file {path}"
                 + ("" if expected else " (no published hash reachable: its hash is recorded as found)"))
        return _accept(spec, path, expected, progress, cancel)
    url = weights_url(spec)
    part = path.with_name(path.name + ".part")
    try:
        expected = published_sha256(spec, timeout)
        if expected is None and spec.verification != "first-use" and not allow_unverified:
            raise EngineError(f"No SHA-256 is published for {url}, so {spec.name} cannot be verified; "
                              "refusing to install unverified weights.")
        _download(url, part, spec, progress, cancel, timeout)
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        raise _offline_error(spec, getattr(exc, "reason", exc)) from None
    os.replace(part, path)
    return _accept(spec, path, expected, progress, cancel)


def _download(url: str, part: Path, spec: ModelSpec, progress: ProgressFn, cancel: CancelFn | None,
              timeout: float) -> None:
    """Stream ``url`` into ``part``, resuming an existing partial file with an HTTP Range request."""
    start = part.stat().st_size if part.exists() else 0
    if spec.size is not None and start >= spec.size:
        if start == spec.size:
            return  # complete already (a cancel or crash between the last byte and the rename)
        part.unlink()
        start = 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    with urllib.request.urlopen(_request(url, headers=headers), timeout=timeout) as resp:
        if start and resp.status != 206:
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if spec.size is not None and total is not None and total != spec.size:
            raise EngineError(f"The server offers {total:,} bytes for {spec.name}, but its publisher lists "
                              f"{spec.size:,}; nothing more was downloaded. Check {url} or the mirror you use.")
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
