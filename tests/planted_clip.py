"""A planted open_clip ViT whose answers are known: each patch token is its patch's colour, the text is blue.

Weights are set by hand and saved as a plain state_dict, so the model loads through the real
checkpoint path (custom architecture JSON + checkpoint) like any user's model:

* vision: the patch convolution takes each 8×8 patch's mean normalised red, green and blue into
  channels ±r, ±g, ±b, and the patches' positional embedding adds ±``GREY`` in two more channels (zero
  mean over channels, so LayerNorm only rescales them); the class embedding is zero; every block's
  attention and MLP output projections are zero, so the blocks pass tokens through unchanged; the
  projection maps the channels back to (r, g, b, GREY) in the first four dimensions of the joint space.
  A patch token is thus the unit direction of (its mean colour in the model's normalised RGB, GREY):
  ordinary colours, near the normalisation's mean, point nearly along the constant GREY axis and
  differ little, saturated ones (pure blue) point far from it. The image embedding (``pool_type:
  avg``) is the normalised mean of its patches' directions.
* text: every token embeds to the same vector and nothing mixes tokens, so every text embeds to one
  fixed direction: that of pure blue (0, 0, 255) pixels (``text_rgb``). Any query "is" blue.

So painting pixels pure blue plants a match: a painted tile scores near 1 against any query, a painted
patch is the hottest cell of its tile, and painting one date of two plants a change.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

EMBED_DIM = 16
WIDTH = 32
CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": WIDTH, "head_width": 16, "patch_size": 8,
                   "pool_type": "avg"},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": WIDTH, "heads": 2, "layers": 1},
}
#: open_clip's defaults (OpenAI's), used when a config names no mean/std.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
BLUE = (0, 0, 255)
#: The constant fourth component of every patch: how far ordinary colours are from each other.
GREY = 5.0


class PlantedModel(NamedTuple):
    config: Path
    checkpoint: Path


def colour_direction(rgb) -> np.ndarray:
    """The unit joint-space direction of pixels of colour ``rgb`` (0–255) under the planted model."""
    v = np.zeros(EMBED_DIM, np.float64)
    v[:3] = [(c / 255.0 - m) / s for c, m, s in zip(rgb, MEAN, STD)]
    v[3] = GREY
    return (v / np.linalg.norm(v)).astype(np.float32)


def _zero_blocks(transformer) -> None:
    for block in transformer.resblocks:
        block.attn.out_proj.weight.zero_()
        block.attn.out_proj.bias.zero_()
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()


def make_planted_clip(folder: Path, text_rgb=BLUE, image_size: int = 32) -> PlantedModel:
    """The planted model; ``text_rgb`` is the colour every text means, ``image_size`` (a multiple of 8) sets the
    patch grid (32: 4 × 4)."""
    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "planted-clip.json"
    cfg = json.loads(json.dumps(CONFIG))
    cfg["vision_cfg"]["image_size"] = image_size
    config.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    with torch.no_grad():
        v = model.visual
        v.conv1.weight.zero_()
        patch = v.conv1.weight.shape[-1]
        for c in range(3):
            v.conv1.weight[2 * c, c] = 1.0 / patch ** 2
            v.conv1.weight[2 * c + 1, c] = -1.0 / patch ** 2
        v.class_embedding.zero_()
        v.positional_embedding.zero_()
        v.positional_embedding[1:, 6] = GREY
        v.positional_embedding[1:, 7] = -GREY
        _zero_blocks(v.transformer)
        for ln in (v.ln_pre, v.ln_post):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        v.proj.zero_()
        for c in range(4):
            v.proj[2 * c, c] = 0.5
            v.proj[2 * c + 1, c] = -0.5
        blue = colour_direction(text_rgb)
        token = torch.zeros(WIDTH)
        for c in range(4):
            token[2 * c], token[2 * c + 1] = float(blue[c]), -float(blue[c])
        model.token_embedding.weight.copy_(token.expand_as(model.token_embedding.weight))
        model.positional_embedding.zero_()
        _zero_blocks(model.transformer)
        model.ln_final.weight.fill_(1.0)
        model.ln_final.bias.zero_()
        model.text_projection.zero_()
        for c in range(4):
            model.text_projection[2 * c, c] = 0.5
            model.text_projection[2 * c + 1, c] = -0.5
    checkpoint = folder / "planted-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return PlantedModel(config, checkpoint)


def paint(path: Path, window: tuple[int, int, int, int], rgb=BLUE) -> None:
    """Paint a pixel window (col, row, width, height) of a raster's first three bands in place."""
    from osgeo import gdal

    ds = gdal.Open(str(path), gdal.GA_Update)
    col, row, w, h = window
    for b, value in zip((1, 2, 3), rgb):
        ds.GetRasterBand(b).WriteArray(np.full((h, w), value, dtype=np.uint8), col, row)
    ds.FlushCache()
    ds = None
