"""A tiny open_clip CLIP with seeded random weights: loads through the real checkpoint path.

Its embeddings mean nothing; it exists so tests exercise every code path offline and fast.
"""
import json
from pathlib import Path
from typing import NamedTuple

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class TinyModel(NamedTuple):
    config: Path
    checkpoint: Path


def make_tiny_model(folder: Path, seed: int = 0) -> TinyModel:
    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CONFIG))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CONFIG)
    checkpoint = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return TinyModel(config, checkpoint)
