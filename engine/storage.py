"""Where the engine writes: one readable sentence for a full disk, read-only media or an impossible folder.

Every write path (the index database, its lock, the vector cache, GeoPackages) turns the
operating system's and SQLite's failures into ``StorageError`` through these helpers, so the
command line prints one ``rsclip: error:`` line and the plugin one message, instead of a
traceback. ``StorageError`` is never a problem of one raster: a job stops at once and keeps
what it committed.
"""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from .errors import EngineError

#: errno values that mean "no room left" (ENOSPC) or "over quota" (EDQUOT).
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
#: errno values that mean "this place cannot be written".
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


class StorageError(EngineError):
    """The disk is full, read-only or otherwise refuses writes; committed work is kept."""


def megabytes(n: float) -> str:
    """A size for a sentence: '12 MB', '0.5 MB', '3.2 GB'."""
    mb = max(float(n), 0.0) / 1e6
    if mb >= 1000:
        return f"{mb / 1000:.1f} GB"
    return f"{mb:.0f} MB" if mb >= 10 else f"{max(mb, 0.1):.1f} MB"


def free_bytes(folder: Path | str) -> int | None:
    """Free bytes on the file system holding ``folder`` (or its nearest existing parent)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full_error(folder: Path | str, need_bytes: int | None = None) -> StorageError:
    free = free_bytes(folder)
    have = f" ({megabytes(free)} free)" if free is not None else ""
    need = f"; about {megabytes(need_bytes)} more is needed to finish" if need_bytes else ""
    return StorageError(f"The disk holding {folder} is full{have}{need}. Free some space and run the same "
                        "command again; the work committed so far was kept.")


def read_only_error(folder: Path | str, what: str = "the index") -> StorageError:
    return StorageError(f"Cannot write {what} at {folder}: the folder is read-only (read-only media, a "
                        "read-only mount or no permission); choose a folder you can write to.")


def os_storage_error(exc: OSError, folder: Path | str, need_bytes: int | None = None,
                     what: str = "the index") -> StorageError:
    """The sentence for an ``OSError`` raised while writing under ``folder``."""
    if exc.errno in _FULL:
        return disk_full_error(folder, need_bytes)
    if exc.errno in _READ_ONLY:
        return read_only_error(folder, what)
    reason = exc.strerror or str(exc)
    return StorageError(f"Cannot write {what} at {folder}: {reason[:1].lower() + reason[1:]}.")


def sqlite_storage_error(exc: sqlite3.Error, folder: Path | str, need_bytes: int | None = None) -> StorageError | None:
    """The sentence for a SQLite failure that is about storage, not damage; None when it is not."""
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if "disk is full" in text or code == 13:  # SQLITE_FULL
        return disk_full_error(folder, need_bytes)
    if "readonly" in text or "read-only" in text or code in (8, 1032, 264, 520, 776):  # SQLITE_READONLY*
        return read_only_error(folder)
    if "database is locked" in text or "database is busy" in text or code in (5, 6):
        return StorageError(f"The index at {folder} is busy: another program holds it; try again when it "
                            "has finished.")
    if "disk i/o error" in text or code == 10:
        free = free_bytes(folder)
        if free is not None and free < (need_bytes or 0) + (1 << 20):
            return disk_full_error(folder, need_bytes)
        return StorageError(f"The disk holding {folder} reported an input/output error while writing; check "
                            "the disk and run the same command again (committed work was kept).")
    return None


def check_writable_folder(folder: Path | str, what: str = "the index") -> None:
    """Refuse, with one sentence, a folder that cannot be created or written (``/proc/x``, read-only media).

    Folders created for the check are removed again, so a refused or failed run leaves nothing behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"{folder} is a file; {what} needs a folder.")
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe == probe.parent:
            break
        probe = probe.parent
    try:
        for path in reversed(missing):
            path.mkdir()
        fd, name = tempfile.mkstemp(prefix=".rsclip-write-check-", dir=str(folder))
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise os_storage_error(exc, folder, what=what) from None
    finally:
        for path in missing:
            try:
                path.rmdir()
            except OSError:
                pass


def folder_is_writable(folder: Path | str) -> bool:
    """Whether files can be created in an existing folder (read-only mounts and permissions honoured)."""
    return os.access(folder, os.W_OK | os.X_OK)


def user_cache_root() -> Path:
    """Where caches of indexes that cannot hold their own live: ``RSCLIP_INDEX_CACHE_DIR`` or the user's cache."""
    env = os.environ.get("RSCLIP_INDEX_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rsclip_search" / "indexes"
