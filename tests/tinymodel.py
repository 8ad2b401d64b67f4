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


def training_checkpoint(model, name: str = "run", epoch: int = 20) -> dict:
    """What open_clip's training script saves under DDP: ``{epoch, name, state_dict, optimizer, scaler}``.

    The ``state_dict`` keys carry DDP's ``module.`` prefix; the optimizer is AdamW with the two
    parameter groups open_clip uses (no weight decay for gains and biases), after one step with
    zero gradients so every parameter has its ``step``/``exp_avg``/``exp_avg_sq`` state (the
    weights do not move: the gradients are zero and the learning rate tiny). Take the weights
    from the returned ``state_dict``.
    """
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gains = [p for n, p in named if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n]
    rest = [p for n, p in named if not any(p is g for g in gains)]
    optimizer = torch.optim.AdamW([{"params": gains, "weight_decay": 0.0}, {"params": rest, "weight_decay": 0.2}],
                                  lr=1e-12, betas=(0.9, 0.98), eps=1e-6)
    for _, p in named:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for _, p in named:
        p.grad = None
    return {"epoch": epoch, "name": name,
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scaler": torch.amp.GradScaler("cpu").state_dict()}
