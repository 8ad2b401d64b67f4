"""Killing `python -m engine index` at random moments never breaks the index; re-running resumes."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import jobs
from engine.index import TileIndex, is_index
from engine.tiling import RasterTiler, TilingSpec, TileWindow

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20090818.tif"
KILLS = 20


def wait_until_writing(proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Return once ``proc`` holds the index's writer lock (it opens index.lock only to write).

    Loading torch takes 3 s on a quiet machine and 20 s on a busy one; kill moments are drawn
    from here on, so they land while indexing runs whatever the load.
    """
    fds = Path(f"/proc/{proc.pid}/fd")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and fds.parent.exists():
        try:
            if any(os.readlink(fd).endswith("index.lock") for fd in fds.iterdir()):
                return
        except OSError:
            pass
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not NAIP.exists(), reason="shared test imagery not found")
def test_sigkill_at_random_points_then_resume(tiny_model, tmp_path):
    folder = tmp_path / "idx"
    cmd = [sys.executable, "-m", "engine", "index", str(NAIP), "--index", str(folder), "--arch",
           str(tiny_model.config), "--checkpoint", str(tiny_model.checkpoint), "--tile-size", "20", "--batch-size", "8"]
    rng = random.Random(1234)
    kills, attempts, seen_counts, cycles = 0, 0, [], []
    stretch = 1.0  # grows while kills land before any batch commits (a busy machine starts Python slowly)
    while kills < KILLS and attempts < 4 * KILLS:
        attempts += 1
        before = seen_counts[-1] if seen_counts else 0
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_writing(proc)
        time.sleep(rng.uniform(1.0, 6.0) * stretch)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if is_index(folder):
            with TileIndex.open(folder) as idx:  # loads after every kill
                n = idx.tile_count()
                if n:
                    ids, vecs = idx.embeddings()
                    assert len(ids) == n and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
                    assert idx.vector_store().ntotal == n
            seen_counts.append(n)
        progressed = bool(seen_counts) and seen_counts[-1] > before
        stretch = max(1.0, stretch / 1.5) if progressed else min(stretch * 1.5, 4.0)
        if proc.returncode == 0 and kills < KILLS:
            # Finished before enough kills landed (a fast machine): start the raster over and keep killing.
            cycles.append(seen_counts)
            seen_counts = []
            jobs.remove_raster(folder, NAIP)
    cycles.append(seen_counts)
    assert kills >= KILLS, f"only {kills} kills landed while indexing ran"
    for counts in cycles:
        assert counts == sorted(counts), "committed tiles never go away between kills"
    assert any(0 < c for counts in cycles for c in counts), "some kills landed after batches were committed"

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    info = jobs.info(folder)
    raster = info.rasters[0]
    assert raster.status == "complete"
    with sqlite3.connect(folder / "index.sqlite") as conn:
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT col_off || ',' || row_off || ',' || width || "
                                      "',' || height) FROM tiles").fetchone()
    assert rows == distinct == info.tile_count, "no duplicate tiles after resuming"

    spec = TilingSpec.from_dict(info.tiling)
    with RasterTiler(NAIP, spec) as tiler:
        expected = sum(1 for w in tiler.windows if tiler.read(w) is not None)
        assert info.tile_count == expected == raster.planned - (len(tiler.windows) - expected)
        encoder = jobs.get_encoder(info.model)
        records = jobs.tiles(folder)
        with TileIndex.open(folder) as idx:
            ids, stored = idx.embeddings([t.id for t in records])
        by_id = {t.id: t for t in records}
        pixels = np.stack([tiler.read(TileWindow(*by_id[i].window)) for i in ids])
    fresh = encoder.encode_images(pixels)
    cosine = np.sum(fresh * stored, axis=1)
    assert cosine.min() > 0.999, "every stored embedding belongs to its own raster window"
