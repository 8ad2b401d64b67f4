"""Where in a tile the query matches: a heat map of the vision transformer's patch tokens, georeferenced.

A ViT cuts the tile into a grid of patches (7 × 7 for ViT-B-32 at 224 px) and keeps one token per patch
beside the class token. Projected into the joint space like the class token (the model's final
LayerNorm, then its projection), a patch token can be compared with the query's text embedding. Raw
patch-to-text similarities of CLIP are known to be noisy and to favour the background: much of every
token is a component shared across the image and across prompts (Li et al., "CLIP Surgery for Better
Explainability with Enhancement in Open-Vocabulary Tasks", arXiv:2304.05653, 2023, whose "feature
surgery" removes such redundant features before the similarity is summed). Here the shared component is
taken to be the class token's direction (the tile's own embedding, what search ranks by): each
unit patch token ``p`` loses its share along the unit class embedding ``c`` before meeting the unit
text embedding ``t``:

    heat = (p − (p·c) c) · t  =  p·t − (p·c)(c·t)

so a patch scores high where it matches the query in a way the tile as a whole does not, and the
whole-tile match (``c·t``, the search score) is not counted again in every cell. Values are cosine
units (about −1 to 1); only their order within one map means much.

The patch tokens are read with a forward hook on the vision transformer's blocks (the model itself is
not changed): the hook keeps the blocks' output for the calling thread, the class embedding is what
``encode_image`` returns, exactly as indexing embeds the tile. Models without patch tokens (the
ResNets, e.g. RN50) get a sentence saying heat maps are not available for them.

Georeferencing: cell (row, col) of a ``rows × cols`` map covers the window's pixels
``col_off + col·width/cols …`` and ``row_off + row·height/rows …``, so the GeoTIFF's geotransform is
the raster's own affine moved to the window's corner and scaled by the cell size: the map lies exactly
over the tile's footprint, in the raster's CRS.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EngineError
from .index import TileRecord
from .progress import CancelFn, ProgressFn, check_cancel, no_progress

METHOD = "patch·text minus the class token's share (p·t − (p·c)(c·t))"
_BATCH = 16


@dataclass(frozen=True)
class HeatMap:
    """A tile's heat map: ``values[row, col]`` (row 0 at the tile's top), placed by ``geotransform`` in ``crs_wkt``."""

    tile: TileRecord
    query: str
    values: np.ndarray = field(repr=False)
    geotransform: tuple[float, float, float, float, float, float]
    crs_wkt: str = field(repr=False)
    score: float
    path: str | None = None

    @property
    def hottest(self) -> tuple[int, int]:
        """(row, col) of the hottest cell."""
        row, col = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        return int(row), int(col)


def check_supported(encoder, label: str = "this model") -> None:
    """Refuse, in one sentence, a model without patch tokens."""
    visual = encoder.model.visual
    if getattr(visual, "transformer", None) is None or getattr(visual, "conv1", None) is None:
        kind = ("it is a ResNet and has no patch tokens" if hasattr(visual, "layer1")
                else "its image tower gives no patch tokens this plugin can read")
        raise EngineError(f"Heat maps are not available for {label}: {kind}; they need an open_clip ViT model "
                          "(e.g. remoteclip-vit-b-32).")
    if getattr(visual, "attn_pool", None) is not None:
        raise EngineError(f"Heat maps are not available for {label}: its attention pooling mixes the patch tokens "
                          "before the projection.")


def patch_embeddings(encoder, pixels) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Unit patch tokens (N, rows·cols, D), unit class embeddings (N, D) and the grid (rows, cols) of a
    preprocessed batch (N, 3, S, S), in the joint space."""
    import torch

    visual = encoder.model.visual
    check_supported(encoder)
    store = _HOOK_OUTPUTS.setdefault(threading.get_ident(), {})
    handle = visual.transformer.register_forward_hook(_keep_output)
    try:
        with torch.inference_mode():
            pooled = encoder.model.encode_image(pixels.to(encoder.device, dtype=encoder.dtype))
            x = store.pop("x")
            if x.shape[0] != pixels.shape[0]:  # transformers that run sequence-first (L, N, D)
                x = x.permute(1, 0, 2)
            tokens = visual.ln_post(x[:, 1:])
            if visual.proj is not None:
                tokens = tokens @ visual.proj
    finally:
        handle.remove()
        _HOOK_OUTPUTS.pop(threading.get_ident(), None)
    grid = tuple(int(g) for g in getattr(visual, "grid_size", (0, 0)))
    if grid[0] * grid[1] != tokens.shape[1]:
        side = int(round(tokens.shape[1] ** 0.5))
        grid = (side, tokens.shape[1] // max(side, 1))
    return _unit(tokens.float().cpu().numpy()), _unit(pooled.float().cpu().numpy()), (grid[0], grid[1])


_HOOK_OUTPUTS: dict[int, dict] = {}


def _keep_output(_module, _inputs, output) -> None:
    """Forward hook: keep the blocks' output for the thread that asked (another thread's forward is ignored)."""
    store = _HOOK_OUTPUTS.get(threading.get_ident())
    if store is not None:
        store["x"] = output[0] if isinstance(output, tuple) else output


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def heat_values(tokens: np.ndarray, pooled: np.ndarray, text: np.ndarray) -> np.ndarray:
    """heat = p·t − (p·c)(c·t) per patch (see the module docstring): (N, G) from unit (N, G, D), (N, D), (D,)."""
    t = _unit(np.asarray(text, dtype=np.float32).reshape(-1))
    pt = tokens @ t
    pc = np.einsum("ngd,nd->ng", tokens, pooled)
    ct = pooled @ t
    return (pt - pc * ct[:, None]).astype(np.float32)


def tile_geotransform(tile: TileRecord, rows: int, cols: int) -> tuple[float, float, float, float, float, float]:
    """The geotransform of a ``rows × cols`` grid over the tile's window (see the module docstring)."""
    from .scoring import affine_from_footprint

    a, b, c, d, e, f = affine_from_footprint(tile.footprint_wkt, tile.window)
    col, row, w, h = tile.window
    sx, sy = w / cols, h / rows
    return (a + col * b + row * c, b * sx, c * sy, d + col * e + row * f, e * sx, f * sy)


def compute_heatmaps(idx, encoder, tiles: Sequence[TileRecord], text: np.ndarray, query: str,
                     out_dir: str | Path | None = None, names: Sequence[str] | None = None,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list[HeatMap]:
    """Heat maps of ``tiles`` for the text embedding ``text``; written as GeoTIFFs to ``out_dir`` when given.

    The tiles' pixels are read again from their rasters, as the index read them (same bands, stretch,
    read size), and embedded by the index's model.
    """
    from .tiling import RasterTiler, TilingSpec, TileWindow

    progress = progress or no_progress
    check_supported(encoder)
    folder = None
    if out_dir is not None:
        folder = Path(out_dir).expanduser().resolve()
        if folder.exists() and not folder.is_dir():
            raise EngineError(f"{folder} is a file; heat maps are written into a folder.")
        folder.mkdir(parents=True, exist_ok=True)
    spec = TilingSpec.from_dict(idx.tiling)
    by_raster: dict[str, list[int]] = {}
    for n, tile in enumerate(tiles):
        by_raster.setdefault(tile.raster, []).append(n)
    read: dict[int, np.ndarray] = {}
    for raster, positions in by_raster.items():
        with RasterTiler(raster, spec) as tiler:
            for n in positions:
                check_cancel(cancel)
                image = tiler.read(TileWindow(*tiles[n].window))
                if image is None:
                    raise EngineError(f"Tile {tiles[n].id} of {Path(raster).name} is now mostly nodata; the raster "
                                      "changed since it was indexed, index it again.")
                read[n] = image
    pixels = [read[n] for n in range(len(tiles))]
    out: list[HeatMap] = []
    for start in range(0, len(tiles), _BATCH):
        check_cancel(cancel)
        progress(start / max(len(tiles), 1), f"Heat map {start + 1} of {len(tiles)}")
        batch = encoder.preprocess(np.stack(pixels[start:start + _BATCH]))
        tokens, pooled, (rows, cols) = patch_embeddings(encoder, batch)
        heat = heat_values(tokens, pooled, text)
        scores = pooled @ _unit(np.asarray(text, dtype=np.float32).reshape(-1))
        for k in range(len(heat)):
            tile = tiles[start + k]
            hm = HeatMap(tile, query, heat[k].reshape(rows, cols), tile_geotransform(tile, rows, cols), tile.crs_wkt,
                         float(scores[k]))
            if folder is not None:
                name = names[start + k] if names else f"heatmap_tile{tile.id}_{_slug(query)}.tif"
                hm = HeatMap(hm.tile, hm.query, hm.values, hm.geotransform, hm.crs_wkt, hm.score,
                             str(write_heatmap(folder / name, hm)))
            out.append(hm)
    progress(1.0, f"{len(out)} heat map(s)")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "query"


def write_heatmap(path: str | Path, heat: HeatMap) -> Path:
    """One float32 band over the tile's footprint (atomic write); metadata says what it shows."""
    from osgeo import gdal

    from .atomic import atomic_write
    from .gdalutil import gdal_errors

    path = Path(path)
    rows, cols = heat.values.shape

    def write(tmp: str) -> None:
        with gdal_errors() as errors:
            ds = errors.check(gdal.GetDriverByName("GTiff").Create(tmp, cols, rows, 1, gdal.GDT_Float32))
            errors.check(ds.SetGeoTransform(heat.geotransform))
            errors.check(ds.SetProjection(heat.crs_wkt))
            band = ds.GetRasterBand(1)
            errors.check(band.WriteArray(heat.values.astype(np.float32)))
            band.SetDescription(f"heat: {heat.query}")
            errors.check(ds.SetMetadata({"RSCLIP_QUERY": heat.query, "RSCLIP_TILE_ID": str(heat.tile.id),
                                         "RSCLIP_RASTER": heat.tile.raster,
                                         "RSCLIP_WINDOW": ",".join(map(str, heat.tile.window)),
                                         "RSCLIP_TILE_SCORE": f"{heat.score:.6f}", "RSCLIP_METHOD": METHOD}))
            band.ComputeStatistics(False)
            ds.FlushCache()
            errors.check()
            ds = None

    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as exc:
        raise EngineError(f"Cannot write the heat map {path}: {exc}.") from None
    return path
