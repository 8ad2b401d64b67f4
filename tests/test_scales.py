"""Several scales in one index: tile counts per scale, adding a scale embeds only its tiles, suppression.

NAIP 2016 is 934 × 723 px. Cut at 224 px (last row and column snapped to the edge): 5 × 4 = 20 tiles; at
448 px: 3 × 2 = 6; at 896 px: 2 windows of 896 × 723 (the raster is shorter than the tile). The planted
model (tests/planted_clip.py) makes pure blue pixels match any text, so a blue square planted in one
224 px tile is a small match inside larger tiles.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from planted_clip import make_planted_clip, paint
from plugin_fixtures import NAIP

ROOT = Path(__file__).resolve().parents[1]
PER_SCALE = {1: 20, 2: 6, 4: 2}
PLANTED = (448, 224, 224, 224)

pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {NAIP}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from engine.models import resolve_model_ref

    planted = make_planted_clip(tmp_path_factory.mktemp("planted-model"))
    return resolve_model_ref(arch=str(planted.config), checkpoint=str(planted.checkpoint)).to_dict()


@pytest.fixture(scope="module")
def planted_index(tmp_path_factory, model):
    """NAIP 2016 with a blue 224 px square, indexed at 224 px, scales 1, 2 and 4."""
    from osgeo import gdal

    from engine import jobs
    from engine.tiling import TilingSpec

    work = tmp_path_factory.mktemp("scales")
    raster = work / "naip_2016_blue.tif"
    gdal.Translate(str(raster), str(NAIP))
    paint(raster, PLANTED)
    jobs.index_rasters(work / "index", [raster], model=model, tiling=TilingSpec(size=224), scales=[1, 2, 4])
    return work / "index", str(raster)


def count_embedded(monkeypatch) -> list[int]:
    """Tiles passed through the model from now on (every index run embeds through Encoder.encode_pixels)."""
    from engine.encoder import Encoder

    seen: list[int] = []
    original = Encoder.encode_pixels

    def counting(self, pixels):
        seen.append(int(pixels.shape[0]))
        return original(self, pixels)

    monkeypatch.setattr(Encoder, "encode_pixels", counting)
    return seen


def snapshot(index) -> dict:
    from engine.index import TileIndex

    with TileIndex.open(index) as idx:
        ids, vecs = idx.embeddings()
        windows = {t.id: t.window for t in idx.iter_tiles()}
    return {int(i): (windows[int(i)], v.tobytes()) for i, v in zip(ids, vecs)}


def test_tile_counts_per_scale(planted_index):
    from engine import jobs
    from engine.index import TileIndex
    from engine.scales import ScaleMap

    index, raster = planted_index
    info = jobs.info(index)
    assert info.scales == PER_SCALE and info.tile_count == sum(PER_SCALE.values())
    assert info.tiling["scales"] == [1, 2, 4] and info.rasters[0].planned == 28 and info.rasters[0].status == "complete"
    with TileIndex.open(index) as idx:
        smap = ScaleMap.of(idx)
        sizes = {smap.scale_of(t.raster_id, *t.window[2:]): (t.window[2], t.window[3]) for t in idx.iter_tiles()}
    assert sizes == {1: (224, 224), 2: (448, 448), 4: (896, 723)}


def test_adding_scales_embeds_only_the_new_tiles(tmp_path, model, monkeypatch):
    from engine import jobs
    from engine.tiling import TilingSpec

    index = tmp_path / "index"
    jobs.index_rasters(index, [NAIP], model=model, tiling=TilingSpec(size=224))
    before = snapshot(index)
    assert len(before) == 20 and "scales" not in jobs.info(index).tiling and jobs.info(index).scales == {1: 20}
    embedded = count_embedded(monkeypatch)
    report = jobs.index_rasters(index, [NAIP], scales=[2, 4])
    assert sum(embedded) == 8 and report.added == [(str(NAIP), 8)]
    after = snapshot(index)
    assert {i: after[i] for i in before} == before, "the tiles already there keep their ids and embeddings"
    assert jobs.info(index).scales == PER_SCALE and jobs.info(index).tiling["scales"] == [1, 2, 4]

    embedded.clear()
    again = jobs.index_rasters(index, [NAIP], tiling=TilingSpec(size=224))
    assert sum(embedded) == 0 and again.unchanged == [str(NAIP)], "the recorded scales are kept, nothing new"
    with pytest.raises(Exception, match="other tile settings"):
        jobs.index_rasters(index, [NAIP], tiling=TilingSpec(size=112, scales=(1, 2)))

    # a raster added later is cut at every scale of the index
    embedded.clear()
    jobs.index_rasters(index, [NAIP.with_name("naip_m_4709963_se_14_20090818.tif")])
    assert sum(embedded) == 28

    # the command line adds a scale to every raster of the index when no raster is named
    run = subprocess.run([sys.executable, "-m", "engine", "index", "--index", str(index), "--scales", "8"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "2 new tiles from 2 raster(s)" in run.stdout
    final = snapshot(index)
    assert {i: final[i] for i in after} == after
    info = jobs.info(index)
    assert info.scales == {1: 40, 2: 12, 4: 4, 8: 2} and all(r.status == "complete" for r in info.rasters)
    run = subprocess.run([sys.executable, "-m", "engine", "info", "--index", str(index)], cwd=ROOT,
                         capture_output=True, text=True)
    assert "Scales:   ×1: 40 tiles, ×2: 12 tiles, ×4: 4 tiles, ×8: 2 tiles" in run.stdout


def test_a_small_match_inside_large_tiles_is_the_hit_kept(planted_index):
    from engine import jobs

    index, raster = planted_index
    every = jobs.search(index, "blue roofs", top_k=6, suppress=False)
    assert every[0].tile.window == PLANTED and every[0].scale == 1
    inside = [h for h in every[1:] if _covers(h.tile.window, PLANTED)]
    assert {h.scale for h in inside} >= {2, 4}, "unsuppressed, the larger tiles holding the square rank next"
    hits = jobs.search(index, "blue roofs", top_k=6)
    assert hits[0].tile.window == PLANTED and hits[0].scale == 1 and hits[0].rank == 1
    assert len(hits) == 6 and [h.rank for h in hits] == list(range(1, 7))
    for h in hits[1:]:
        assert _overlap(h.tile.window, PLANTED) < 0.5 * 224 * 224, f"{h.tile.window} covers the better hit"
    everything = jobs.search(index, "blue roofs", top_k=28)
    assert len(everything) < 28, "asked for every tile, the covered ones are still left out"
    for n, h in enumerate(everything):
        for better in everything[:n]:
            smaller = min(h.tile.window[2] * h.tile.window[3], better.tile.window[2] * better.tile.window[3])
            assert _overlap(h.tile.window, better.tile.window) < 0.5 * smaller


def _covers(big, small) -> bool:
    return big[0] <= small[0] and big[1] <= small[1] and big[0] + big[2] >= small[0] + small[2] \
        and big[1] + big[3] >= small[1] + small[3]


def _overlap(a, b) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def test_the_suppression_rule():
    """Best first; dropped when a better kept hit on the same raster covers half of the smaller of the two."""
    from engine.scales import suppress
    from engine.search import Hit

    def hit(score, window, raster=1):
        tile = SimpleNamespace(raster_id=raster, window=window)
        return Hit(0, score, tile)  # type: ignore[arg-type]

    hits = [hit(0.9, (0, 0, 100, 100)),            # a small tile, best
            hit(0.8, (0, 0, 400, 400)),            # a large tile merely containing it: dropped
            hit(0.7, (1000, 0, 400, 400)),         # a large tile elsewhere, best there: kept
            hit(0.6, (1100, 100, 100, 100)),       # a small tile inside that better large one: dropped
            hit(0.5, (50, 0, 100, 100)),           # same scale, overlapping the best by half: dropped
            hit(0.4, (75, 100, 100, 100)),         # touching it by a corner strip (25 %): kept
            hit(0.3, (0, 0, 100, 100), raster=2)]  # the same place on another date: kept
    kept = suppress(hits)
    assert [h.score for h in kept] == [0.9, 0.7, 0.4, 0.3] and [h.rank for h in kept] == [1, 2, 3, 4]


def test_one_scale_only(planted_index, tmp_path):
    from osgeo import ogr

    from engine import jobs
    from engine.errors import EngineError

    index, raster = planted_index
    twos = jobs.search(index, "blue roofs", top_k=10, scale=2)
    assert len(twos) == PER_SCALE[2] and {h.scale for h in twos} == {2}
    assert all(h.tile.window[2:] == (448, 448) for h in twos)
    with pytest.raises(EngineError, match=r"holds tiles at ×1, ×2, ×4 only, not at ×3"):
        jobs.search(index, "blue roofs", scale=3)
    out = tmp_path / "hits.gpkg"
    run = subprocess.run([sys.executable, "-m", "engine", "search", "blue roofs", "--index", str(index), "--scale",
                          "4", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("×4") == 2 and "×1" not in run.stdout
    ds = ogr.Open(str(out))
    assert [f["scale"] for f in ds.GetLayer(0)] == [4, 4]
    ds = None
    run = subprocess.run([sys.executable, "-m", "engine", "search", "blue roofs", "--index", str(index), "--top-k",
                          "3", "--json"], cwd=ROOT, capture_output=True, text=True)
    first = json.loads(run.stdout)["results"][0]
    assert first["scale"] == 1 and first["window"] == list(PLANTED)


def test_change_pairs_tiles_of_the_same_scale(tmp_path, model):
    from engine import jobs
    from engine.tiling import TilingSpec

    older = NAIP.with_name("naip_m_4709963_se_14_20090818.tif")
    jobs.index_rasters(tmp_path / "index", [older, NAIP], model=model, tiling=TilingSpec(size=224, scales=(1, 2)))
    every = jobs.change(tmp_path / "index", [older], [NAIP], top_k=40, suppress=False)
    assert every.pairs == 20 + 6 and len(every.rows) == 26 and {r.scale for r in every.rows} == {1, 2}
    assert all(r.before.window[2:] == r.after.window[2:] for r in every.rows)
    result = jobs.change(tmp_path / "index", [older], [NAIP], top_k=40)
    assert 0 < len(result.rows) < 26, "places a better place covers are left out"
    assert result.rows[0].before.id == every.rows[0].before.id
    only = jobs.change(tmp_path / "index", [older], [NAIP], top_k=40, scale=2)
    assert only.pairs == 6 and {r.scale for r in only.rows} == {2}


def test_scales_are_checked():
    from engine.errors import EngineError
    from engine.scales import parse_scales
    from engine.tiling import TilingSpec

    assert parse_scales("4, 1,2") == (1, 2, 4) and parse_scales("") is None
    for bad, why in (("1,x", "whole numbers"), ("0", "from 1 to 64"), ("1,1", "twice"), ("100", "from 1 to 64")):
        with pytest.raises(EngineError, match=why):
            parse_scales(bad)
    assert TilingSpec.from_dict(TilingSpec(scales=(1, 3)).to_dict()).scales == (1, 3)
    assert "scales" not in TilingSpec().to_dict(), "a one-scale index records its tiling as before"
    assert np.array_equal(np.array(TilingSpec(scales=(2, 4)).validate().scales), [2, 4])
