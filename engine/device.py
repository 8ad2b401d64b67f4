"""Choosing where and how the model runs: CUDA if present, else bf16 on CPUs that do it natively.

A bf16 copy of a ViT runs several times faster than fp32 on CPUs with AVX-512 BF16 or AMX,
but is slower than fp32 where bf16 is emulated; so it is used only when the CPU flags say
native, and only after a calibration batch shows the embeddings agree with fp32.
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

#: Minimum cosine similarity between bf16 and fp32 embeddings of the calibration tiles.
BF16_MIN_COSINE = 0.999
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """CPU feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return platform.machine().lower() in ("x86_64", "amd64") and any(f in flags for f in _NATIVE_BF16_FLAGS)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def calibration_tiles(n: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    """Deterministic smooth, image-like uint8 tiles (N, size, size, 3) for checking precision."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.float32)
    tiles = coarse.repeat(size // 8, axis=1).repeat(size // 8, axis=2)
    tiles += rng.normal(0, 12, size=tiles.shape)
    return np.clip(tiles, 0, 255).astype(np.uint8)


def embeddings_agree(a: np.ndarray, b: np.ndarray, min_cosine: float = BF16_MIN_COSINE) -> tuple[bool, float]:
    """Whether two sets of unit embeddings agree row by row; returns the worst cosine too."""
    worst = float(np.min(np.sum(a * b, axis=1))) if len(a) else 1.0
    return worst >= min_cosine, worst


def choose_precision(loaded, device: str, requested: str = "auto") -> tuple[str, str]:
    """(precision, reason) for a model on a device: 'fp32' or 'bf16'.

    ``auto`` picks bf16 on CPUs with native bf16 when a calibration batch stays within
    ``BF16_MIN_COSINE`` of fp32, and fp32 otherwise (including on CUDA, where fp32 is exact
    and fast enough; users may force bf16).
    """
    if requested in ("fp32", "bf16"):
        return requested, "chosen by the user"
    if device != "cpu":
        return "fp32", f"fp32 on {device}"
    if not cpu_has_native_bf16():
        return "fp32", "this CPU has no native bf16"
    from .encoder import Encoder

    tiles = calibration_tiles()
    ref = Encoder(loaded, device, "fp32").encode_images(tiles)
    fast = Encoder(loaded, device, "bf16").encode_images(tiles)
    ok, worst = embeddings_agree(ref, fast)
    if ok:
        return "bf16", f"native bf16, calibration cosine {worst:.5f}"
    return "fp32", f"bf16 calibration cosine {worst:.5f} below {BF16_MIN_COSINE}"


def choose_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if cuda_available() else "cpu"
