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
import threading
from pathlib import Path

from .errors import Cancelled, EngineError
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


class FullHashInBackground:
    """``full_sha256`` of a raster computed in a thread while the raster is tiled.

    Hashing reads the whole file once more: done first, it cost an uncompressed raster about a third of its
    indexing time without a model. ``hashlib`` releases the GIL while it hashes, so on a second core it
    overlaps the tiling. ``result`` waits for it; ``stop`` abandons it (a failed or cancelled run).
    """

    def __init__(self, path: str | Path) -> None:
        self._stopped = threading.Event()
        self._digest: str | None = None
        self._error: EngineError | None = None
        self._thread = threading.Thread(target=self._run, args=(Path(path),), name="rsclip-full-sha256", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._digest = full_sha256(path, cancel=self._stopped.is_set)
        except EngineError as exc:  # a failed read or a stop: handed to result(), in the caller's thread
            self._error = exc

    def result(self, cancel: CancelFn | None = None) -> str:
        """The SHA-256 (waiting for it, cancellable); the EngineError of a failed read."""
        while self._thread.is_alive():
            self._thread.join(0.1)
            if cancel is not None and cancel():
                self.stop()
                raise Cancelled()
        if self._error is not None:
            raise self._error
        assert self._digest is not None, "the hashing thread failed (a bug: its traceback was printed)"
        return self._digest

    def stop(self) -> None:
        """Stop hashing and wait for the thread (it checks between 1 MiB chunks)."""
        self._stopped.set()
        self._thread.join()


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
