"""Where in the tile: heat maps from planted patch embeddings, and GeoTIFFs exactly over the tiles.

The planted model (tests/planted_clip.py) makes each patch token the colour of its patch and any text
"blue", so painting one patch of a tile blue plants the answer: that cell must be the hottest. A tile of
64 px is read at 224 px and shown to the model at 32 px in 8 px patches: a 4 × 4 grid of 16 px cells.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from planted_clip import BLUE, make_planted_clip, paint
from plugin_fixtures import NAIP

ROOT = Path(__file__).resolve().parents[1]
TILE, CELL = 64, 16
WINDOW = (128, 192, TILE, TILE)
HOT = (1, 2)  # (row, col) of the planted cell in WINDOW

pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {NAIP}")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_clip(tmp_path_factory.mktemp("planted-model"))


def model_dict(planted) -> dict:
    from engine.models import resolve_model_ref

    return resolve_model_ref(arch=str(planted.config), checkpoint=str(planted.checkpoint)).to_dict()


@pytest.fixture(scope="module")
def naip_index(tmp_path_factory, planted):
    from osgeo import gdal

    from engine import jobs
    from engine.tiling import TilingSpec

    work = tmp_path_factory.mktemp("heat")
    raster = work / "naip_2016.tif"
    gdal.Translate(str(raster), str(NAIP))
    paint(raster, (WINDOW[0] + HOT[1] * CELL, WINDOW[1] + HOT[0] * CELL, CELL, CELL))
    jobs.index_rasters(work / "index", [raster], model=model_dict(planted), tiling=TilingSpec(size=TILE),
                       scales=[1, 2])
    return work / "index", str(raster)


def tile_at(index, window):
    from engine import jobs

    return next(t for t in jobs.tiles(index) if t.window == window)


def corners(gt, cols, rows):
    return [(gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5])
            for c, r in ((0, 0), (cols, 0), (cols, rows), (0, rows))]


def footprint_corners(tile):
    inner = tile.footprint_wkt[tile.footprint_wkt.index("((") + 2:tile.footprint_wkt.index(")")]
    return [tuple(float(v) for v in p.split()) for p in inner.split(",")][:4]


def test_the_hottest_cell_is_the_planted_patch_and_the_geotiff_lies_on_the_tile(naip_index, tmp_path):
    from osgeo import gdal, osr

    from engine import jobs

    index, raster = naip_index
    tile = tile_at(index, WINDOW)
    plain = tile_at(index, (512, 384, TILE, TILE))
    heats = jobs.heatmaps(index, "blue roofs", [tile.id, plain.id], tmp_path / "maps")
    heat = heats[0]
    assert heat.values.shape == (4, 4) and heat.hottest == HOT
    others = np.delete(heat.values.ravel(), HOT[0] * 4 + HOT[1])
    assert heat.values[HOT] > others.max() + 0.05
    assert heats[1].values.max() < heat.values[HOT] - 0.05, "no cell of an unpainted tile is as hot"
    hit = next(h for h in jobs.search(index, "blue roofs", top_k=200, scale=1) if h.tile.id == tile.id)
    assert heat.score == pytest.approx(hit.score, abs=2e-2), "the tile embeds as it was indexed"

    ds = gdal.Open(heat.path)
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (4, 4, 1)
    assert np.allclose(ds.ReadAsArray(), heat.values)
    assert osr.SpatialReference(wkt=ds.GetProjection()).IsSame(osr.SpatialReference(wkt=tile.crs_wkt))
    got = corners(ds.GetGeoTransform(), 4, 4)
    assert np.allclose(got, footprint_corners(tile), atol=1e-6), "exactly over the tile's footprint"
    src = gdal.Open(raster).GetGeoTransform()
    assert ds.GetGeoTransform()[1] == pytest.approx(src[1] * CELL)
    assert ds.GetMetadataItem("RSCLIP_QUERY") == "blue roofs"
    # the hottest cell's centre is the centre of the painted pixels, on the ground
    gt = ds.GetGeoTransform()
    x, y = gt[0] + (HOT[1] + 0.5) * gt[1], gt[3] + (HOT[0] + 0.5) * gt[5]
    col, row = WINDOW[0] + HOT[1] * CELL + CELL / 2, WINDOW[1] + HOT[0] * CELL + CELL / 2
    assert (x, y) == pytest.approx((src[0] + col * src[1], src[3] + row * src[5]))
    ds = None


def test_a_larger_tile_and_a_rotated_raster(naip_index, tmp_path, planted):
    """A ×2 tile's map has cells twice as large; on a rotated raster the map is rotated with it."""
    from osgeo import gdal

    from engine import jobs
    from engine.tiling import TilingSpec
    from rasters import noise, write_raster

    index, _ = naip_index
    big = tile_at(index, (128, 128, 2 * TILE, 2 * TILE))
    heat = jobs.heatmaps(index, "blue roofs", [big.id], tmp_path / "big")[0]
    assert heat.hottest == (2, 1), "pixels 160-176, 208-224: in the 32 px cell (row 2, col 1) of the 128 px tile"
    ds = gdal.Open(heat.path)
    assert np.allclose(corners(ds.GetGeoTransform(), 4, 4), footprint_corners(big), atol=1e-6)
    ds = None

    data = noise(3, 96, 96, seed=3)
    data[:, 16:24, 48:56] = np.array(BLUE, np.uint8)[:, None, None]  # tile (32, 0): its 8 px cell row 2, col 2
    rotated = write_raster(tmp_path / "rotated.tif", data, transform=(500000.0, 8.0, 3.0, 6000000.0, 3.0, -8.0))
    jobs.index_rasters(tmp_path / "rot-index", [rotated], model=model_dict(planted), tiling=TilingSpec(size=32))
    tile = tile_at(tmp_path / "rot-index", (32, 0, 32, 32))
    heat = jobs.heatmaps(tmp_path / "rot-index", "blue", [tile.id], tmp_path / "rot")[0]
    assert heat.hottest == (2, 2)
    ds = gdal.Open(heat.path)
    gt = ds.GetGeoTransform()
    assert gt[2] != 0 and gt[4] != 0
    assert np.allclose(corners(gt, 4, 4), footprint_corners(tile), atol=1e-6)
    ds = None


def test_search_heatmap_on_the_command_line(naip_index, tmp_path):
    from osgeo import gdal

    index, _ = naip_index
    out = tmp_path / "heat"
    run = subprocess.run([sys.executable, "-m", "engine", "search", "blue roofs", "--index", str(index), "--top-k",
                          "3", "--scale", "1", "--heatmap", str(out), "--json"], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [Path(r["heatmap"]).name for r in results] == [f"rank{r['rank']:03d}_tile{r['tile_id']}.tif"
                                                           for r in results]
    assert results[0]["window"] == list(WINDOW) and results[0]["hottest_cell"] == list(HOT)
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(r["heatmap"]).name for r in results)
    ds = gdal.Open(results[0]["heatmap"])
    assert ds.GetMetadataItem("RSCLIP_TILE_ID") == str(results[0]["tile_id"])
    ds = None


def test_models_without_patch_tokens_say_so(tmp_path):
    """A ResNet (RN50-like, tiny) has no patch tokens: heat maps are refused in one sentence, before any search."""
    import open_clip
    import torch

    from engine import jobs
    from engine.errors import EngineError
    from engine.models import resolve_model_ref
    from engine.tiling import TilingSpec

    config = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "tiny-rn.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**config).state_dict(), tmp_path / "tiny-rn.pt")
    model = resolve_model_ref(arch=str(tmp_path / "tiny-rn.json"), checkpoint=str(tmp_path / "tiny-rn.pt")).to_dict()
    jobs.index_rasters(tmp_path / "index", [NAIP], model=model, tiling=TilingSpec(size=224))
    tile = jobs.tiles(tmp_path / "index")[0]
    with pytest.raises(EngineError, match="Heat maps are not available for tiny-rn.json .*: it is a ResNet and has no "
                                          "patch tokens; they need an open_clip ViT model"):
        jobs.heatmaps(tmp_path / "index", "runway", [tile.id])
    run = subprocess.run([sys.executable, "-m", "engine", "search", "runway", "--index", str(tmp_path / "index"),
                          "--heatmap", str(tmp_path / "maps")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "Heat maps are not available" in run.stderr and not run.stdout
    assert not (tmp_path / "maps").exists()
