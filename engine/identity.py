"""Which file is which: how the index recognises a raster that changed, moved or was copied.

Three identities are recorded per raster, each cheaper and weaker than the next:

* ``fingerprint`` (``tiling.raster_fingerprint``): size, modification time and the first and last
  MiB. It decides "changed since it was indexed?" on every run at almost no cost.
* ``content``: size plus ``CONTENT_SAMPLES`` evenly spaced 64 KiB samples (first and last included),
  without path or time. It recognises the same file at a new path (moved, renamed, copied) so the
  index relinks it instead of embedding it twice. It samples the file: two files of the same size
  that differ only between the samples look the same to it.
* ``full_sha256``: the SHA-256 of every byte, computed once when a raster is indexed. It settles
  what the samples cannot: ``--verify full`` compares it, and a file whose time changed but whose
  bytes did not (``touch``, a copy) is recognised as unchanged instead of being re-embedded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import EngineError
from .progress import CancelFn, ProgressFn

#: Evenly spaced samples of ``SAMPLE_BYTES`` read by ``content_fingerprint``.
CONTENT_SAMPLES = 16
SAMPLE_BYTES = 1 << 16


def content_fingerprint(path: str | Path) -> str:
    """Path- and time-independent identity of a file's bytes (sampled; see the module docstring)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        digest = hashlib.sha256(f"rsclip-content-v1:{size}".encode())
        with open(path, "rb") as fh:
            if size <= CONTENT_SAMPLES * SAMPLE_BYTES:
                digest.update(fh.read())
            else:
                step = (size - SAMPLE_BYTES) / (CONTENT_SAMPLES - 1)
                for i in range(CONTENT_SAMPLES):
                    fh.seek(int(i * step))
                    digest.update(fh.read(SAMPLE_BYTES))
    except OSError as exc:
        raise EngineError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    return digest.hexdigest()


def full_sha256(path: str | Path, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> str:
    """SHA-256 of every byte of a raster file (cancellable between chunks)."""
    from .models.download import file_sha256

    try:
        return file_sha256(Path(path), progress, cancel)
    except OSError as exc:
        raise EngineError(f"Cannot read {Path(path).name}: {exc.strerror or exc}.") from None


def file_size(path: str | Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return -1


def exists(path: str) -> bool:
    """Whether a stored raster path names an existing file (a hostile path is simply missing).

    A remote source (URL, web map) counts as present: whether a server answers is not known without
    asking it, and a failed read is reported where it happens.
    """
    from .sources import is_remote

    if is_remote(path):
        return True
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False
