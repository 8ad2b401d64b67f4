"""Index folders from elsewhere: nothing in them runs code, damage is reported, stored paths are never written."""
import contextlib
import hashlib
import json
import os
import pickle
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from engine import jobs
from engine.errors import EngineError
from engine.index import FAISS_META, FAISS_NAME
from engine.tiling import TilingSpec
from rasters import noise, write_raster

ROOT = Path(__file__).resolve().parents[1]
_OPENED: set | None = None


def _audit(event: str, args: tuple) -> None:
    """Python's audit events name every file opened from Python and every SQLite database connected to."""
    if _OPENED is None or event not in ("open", "sqlite3.connect") or not args:
        return
    if event == "open":
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing:
            return
    if isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.add(Path(os.fsdecode(args[0])).resolve())


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside files_read()


@contextlib.contextmanager
def files_read(folder: Path):
    """The names of the files in ``folder`` the engine opens for reading inside the ``with`` block."""
    global _OPENED
    names: set[str] = set()
    _OPENED = set()
    try:
        yield names
    finally:
        names.update(p.name for p in _OPENED if p.parent == folder.resolve())
        _OPENED = None


class Marker:
    """Unpickling this creates a file: proof that code from the index folder ran."""

    path = ""

    def __reduce__(self):
        return (open, (Marker.path, "w"))


@pytest.fixture
def index(tiny_model, tmp_path):
    raster = write_raster(tmp_path / "r.tif", noise(3, 96, 96))
    model = jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=32))
    return tmp_path / "idx"


def test_planted_pickles_are_never_executed(index, tmp_path):
    """A pickle in each file the engine reads from a folder (the FAISS cache with a matching hash, so it reaches
    FAISS's reader; then its JSON record): nothing runs, and the cache is rebuilt from the database."""
    Marker.path = str(tmp_path / "pwned")
    payload = pickle.dumps(Marker())
    meta = json.loads((index / FAISS_META).read_text())
    (index / FAISS_NAME).write_bytes(payload)
    (index / FAISS_META).write_text(json.dumps({**meta, "sha256": hashlib.sha256(payload).hexdigest()}))
    with files_read(index) as read:
        assert len(jobs.search(index, "water", top_k=3)) == 3
        jobs.label(index, ["water", "forest"])
        jobs.info(index)
    assert read == {"index.sqlite", FAISS_NAME, FAISS_META}, "a payload must sit in every file the engine reads"
    assert (index / FAISS_NAME).read_bytes() != payload, "the tampered FAISS cache was rebuilt from the database"

    (index / FAISS_META).write_bytes(payload)
    with files_read(index) as read:
        assert len(jobs.search(index, "water", top_k=3)) == 3
    assert FAISS_META in read and json.loads((index / FAISS_META).read_text())["count"] == meta["count"]
    assert not Path(Marker.path).exists()


def test_engine_source_never_loads_code_from_files():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        text = path.read_text()
        for pattern in (r"pickle\.loads?\(", r"allow_pickle\s*=\s*True", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(",
                        r"yaml\.load\("):
            if re.search(pattern, text):
                offenders.append(f"{path.name}: {pattern}")
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start():text.find("\n", match.start())]
            if "weights_only=True" not in call:
                offenders.append(f"{path.name}: {call}")
    assert not offenders, offenders


def test_damaged_index_files_give_clear_errors(index):
    with sqlite3.connect(index / "index.sqlite") as conn:
        conn.execute("UPDATE tiles SET embedding = x'00010203' WHERE id = 1")
    (index / FAISS_META).unlink()
    with pytest.raises(EngineError, match="damaged embedding"):
        jobs.search(index, "water", top_k=3)
    db = index / "index.sqlite"
    for extra in index.glob("index.sqlite-*"):
        extra.unlink()
    db.write_bytes(db.read_bytes()[:1000])
    with pytest.raises(EngineError, match="damaged or not an index"):
        jobs.info(index)


def test_stored_raster_paths_are_never_written(index, tmp_path):
    outside = tmp_path / "outside" / "victim.tif"
    with sqlite3.connect(index / "index.sqlite") as conn:
        conn.execute("UPDATE rasters SET path = ?", (str(outside),))
    hits = jobs.search(index, "road", top_k=2)
    jobs.similar(index, [hits[0].tile.id], top_k=2)
    jobs.label(index, ["road", "field"])
    from engine.export import write_hits_gpkg

    write_hits_gpkg(tmp_path / "out.gpkg", hits)
    other = write_raster(tmp_path / "other.tif", noise(3, 64, 64))
    jobs.index_rasters(index, [str(other)])
    assert jobs.remove_raster(index, str(outside)) > 0
    assert not outside.parent.exists()
    assert hits[0].tile.raster == str(outside)
