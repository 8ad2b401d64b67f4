"""Choosing where and how the model runs: CUDA if present, else bf16 on CPUs that do it natively.

A bf16 copy of a ViT runs several times faster than fp32 on CPUs with AVX-512 BF16 or AMX,
but is slower than fp32 where bf16 is emulated; so it is used only when the CPU flags say
native, and only after a calibration batch shows the embeddings agree with fp32.

The calibration runs the model twice (fp32 and bf16) at every start; its verdict depends only
on the model's weights, the machine and torch, so it is cached per (model, CPU, flags, torch)
in the user's cache folder and reused while all of those are the same. A cached verdict is
checked (its key and checksum) before it is trusted; anything else means calibrating again.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
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
    key = calibration_key(loaded, device)
    worst = cached_calibration(key)
    note = ", cached"
    if worst is None:
        from .encoder import Encoder

        tiles = calibration_tiles()
        ref = Encoder(loaded, device, "fp32").encode_images(tiles)
        fast = Encoder(loaded, device, "bf16").encode_images(tiles)
        worst = embeddings_agree(ref, fast)[1]
        store_calibration(key, worst)
        note = ""
    if worst >= BF16_MIN_COSINE:
        return "bf16", f"native bf16, calibration cosine {worst:.5f}{note}"
    return "fp32", f"bf16 calibration cosine {worst:.5f} below {BF16_MIN_COSINE}{note}"


def precision_cache_dir() -> Path:
    """Where precision calibrations are cached: ``RSCLIP_PRECISION_CACHE_DIR`` or the user's cache folder."""
    env = os.environ.get("RSCLIP_PRECISION_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rsclip_search" / "precision"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def calibration_key(loaded, device: str) -> dict | None:
    """What a bf16 calibration depends on: the model's weights (by SHA-256), the CPU, its flags and torch.

    None when the weights' identity is not known (nothing is cached then).
    """
    import torch

    ref = loaded.ref
    if not getattr(ref, "checkpoint_sha256", None):
        return None
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()
    return {"format": 1, "kind": ref.kind, "name": ref.name, "arch": Path(str(ref.arch)).name,
            "weights_sha256": ref.checkpoint_sha256, "device": device, "machine": platform.machine(),
            "cpu": _cpu_name(), "cpu_flags_sha256": flags, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "tiles": "calibration_tiles(8, 64, 0)", "min_cosine": BF16_MIN_COSINE}


def _calibration_file(key: dict) -> Path:
    return precision_cache_dir() / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest() + ".json")


def _checksum(key: dict, worst: float) -> str:
    return hashlib.sha256(json.dumps([key, worst], sort_keys=True).encode()).hexdigest()


def cached_calibration(key: dict | None) -> float | None:
    """The worst bf16 cosine measured for this key before, or None (not cached, or the record does not check out)."""
    if key is None:
        return None
    try:
        path = _calibration_file(key)
        if path.stat().st_size > 4096:
            return None
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    worst = record.get("worst") if isinstance(record, dict) else None
    if not isinstance(worst, float) or not math.isfinite(worst) or not -1.0 <= worst <= 1.0 \
            or record.get("key") != key or record.get("checksum") != _checksum(key, worst):
        return None
    return worst


def store_calibration(key: dict | None, worst: float) -> None:
    """Remember a calibration (atomically); an unwritable cache folder only means calibrating next time."""
    if key is None:
        return
    from .atomic import atomic_write_bytes

    worst = float(worst)
    try:
        path = _calibration_file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"key": key, "worst": worst, "checksum": _checksum(key, worst)}).encode())
    except OSError:
        pass


def choose_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if cuda_available() else "cpu"
