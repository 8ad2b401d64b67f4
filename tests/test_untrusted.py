"""Index folders from elsewhere: nothing in them runs code, damage is reported, stored paths are never written."""
import pickle
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engine import jobs
from engine.errors import EngineError
from engine.index import FAISS_META, FAISS_NAME, TileIndex
from engine.tiling import TilingSpec
from rasters import noise, write_raster

ROOT = Path(__file__).resolve().parents[1]


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
    Marker.path = str(tmp_path / "pwned")
    payload = pickle.dumps(Marker())
    (index / "evil.pkl").write_bytes(payload)
    (index / FAISS_NAME).write_bytes(payload)
    (index / "vectors.npy").write_bytes(payload)
    assert len(jobs.search(index, "water", top_k=3)) == 3
    jobs.label(index, ["water", "forest"])
    jobs.info(index)
    assert not Path(Marker.path).exists()
    assert (index / FAISS_NAME).read_bytes() != payload, "the tampered FAISS cache was rebuilt from the database"


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
