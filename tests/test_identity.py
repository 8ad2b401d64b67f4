"""A new raster's SHA-256 is computed while it is tiled, recorded only with a finished raster, and never left
running after a failed or cancelled run."""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from engine import jobs
from engine.errors import EngineError
from engine.identity import FullHashInBackground
from engine.index import DB_NAME
from engine.tiling import TilingSpec
from rasters import noise, write_raster


def recorded(index: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(index / DB_NAME) as conn:
        return {p: (s, h) for p, s, h in conn.execute("SELECT path, status, full_sha256 FROM rasters")}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rsclip-full-sha256"]


@pytest.fixture
def model(tiny_model, tmp_path):
    return jobs.resolve_model(tmp_path / "idx", arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))


def test_new_rasters_get_their_full_sha256_with_the_finished_raster(model, tmp_path):
    rasters = [write_raster(tmp_path / f"r{k}.tif", noise(3, 96, 96, seed=k)) for k in range(2)]
    report = jobs.index_rasters(tmp_path / "idx", [str(r) for r in rasters], model=model,
                                tiling=TilingSpec(size=16))
    assert report.total_tiles == 72
    rows = recorded(tmp_path / "idx")
    for raster in rasters:
        assert rows[str(raster.resolve())] == ("complete", sha256_of(raster))
    assert not hashing_threads()


def test_a_cancelled_run_records_no_hash_and_the_resume_records_the_right_one(model, tmp_path):
    raster = write_raster(tmp_path / "r.tif", noise(3, 256, 256))
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 20

    report = jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16),
                                batch_size=4, cancel=cancel)
    assert report.cancelled
    assert recorded(tmp_path / "idx")[str(raster.resolve())] == ("partial", None), \
        "a hash is recorded only with a finished raster"
    assert not hashing_threads(), "the cancelled run's hashing thread was stopped and joined"
    jobs.index_rasters(tmp_path / "idx", [str(raster)], model=model, tiling=TilingSpec(size=16))
    assert recorded(tmp_path / "idx")[str(raster.resolve())] == ("complete", sha256_of(raster))


def test_the_background_hash_gives_the_files_digest_or_one_sentence(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 20_000)
    assert FullHashInBackground(data).result() == sha256_of(data)
    missing = FullHashInBackground(tmp_path / "gone.tif")
    with pytest.raises(EngineError, match="Cannot read gone.tif"):
        missing.result()
    missing.stop()
    assert not hashing_threads()
