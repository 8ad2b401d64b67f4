"""Batched image and text encoding into L2-normalised float32 embeddings.

Tiles arrive as uint8 HWC arrays from the tiler; resizing and normalising happen in torch
on the whole batch (no per-tile PIL), so the model, not preprocessing, sets the pace.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .errors import EngineError
from .prompts import REMOTE_SENSING_TEMPLATES

#: Prompts embedded per text-tower call (bounds memory for big template ensembles).
TEXT_CHUNK = 256


class Encoder:
    """Embeds tiles and text with one loaded model on one device and precision."""

    def __init__(self, loaded, device: str = "cpu", precision: str = "fp32", text_cache_size: int = 256) -> None:
        import torch

        if precision not in ("fp32", "bf16"):
            raise EngineError(f"Unknown precision {precision!r}; use fp32 or bf16.")
        self.loaded = loaded
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = loaded.model
        if precision != "fp32":
            import copy

            model = copy.deepcopy(model)
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.image_size = int(loaded.image_size)
        self._mean = torch.tensor(loaded.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(loaded.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._text_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._text_lock = threading.Lock()  # one encoder serves every thread (dock tasks, Processing)
        self.reason = "chosen by the caller"

    @property
    def dim(self) -> int:
        return int(self.loaded.embed_dim)

    def preprocess(self, tiles: np.ndarray):
        """uint8 (N, H, W, 3) → normalised float tensor (N, 3, S, S) at the model's input size."""
        import torch

        return self._to_input(torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2))

    def stage(self, tiles_chw: np.ndarray):
        """uint8 (N, 3, H, W) tiles → a uint8 tensor ready for ``encode_pixels`` (pinned for a GPU).

        The reading thread does only this; scaling, resizing and normalising happen in
        ``encode_pixels`` on the model's device, where a GPU does them in microseconds instead of
        the reading CPU spending more time on them than on reading.
        """
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(tiles_chw))
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def encode_pixels(self, pixels) -> np.ndarray:
        """Embed a batch tensor (N, 3, S, S): preprocessed floats, or uint8 from ``stage`` (preprocessed here)."""
        import torch

        with torch.inference_mode():
            if pixels.dtype == torch.uint8:
                pixels = self._to_input(pixels.to(self.device, non_blocking=True))
            feats = self.model.encode_image(pixels.to(self.device, dtype=self.dtype))
        return _normalise(feats.float().cpu().numpy())

    def _to_input(self, batch):
        """uint8 (N, 3, H, W) on the device → the model's normalised input, as ``preprocess`` computes it."""
        import torch.nn.functional as F

        batch = batch.float().div_(255.0)
        if batch.shape[-2:] != (self.image_size, self.image_size):
            batch = F.interpolate(batch, size=(self.image_size, self.image_size), mode="bicubic",
                                  align_corners=False, antialias=True).clamp_(0.0, 1.0)
        return batch.sub_(self._mean.to(batch.device)).div_(self._std.to(batch.device))

    def encode_images(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) tiles → (N, D) unit-length float32 embeddings, in input order."""
        if len(tiles) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(self.preprocess(tiles))

    def is_truncated(self, text: str) -> bool:
        """Whether the tokenizer had to cut ``text`` to fit the model's context length."""
        tokens = self.loaded.tokenizer([text])[0]
        return bool(tokens[-1] != 0)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Each text → one unit-length embedding (no templates)."""
        import torch

        tokens = self.loaded.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            feats = self.model.encode_text(tokens)
        return _normalise(feats.float().cpu().numpy())

    def encode_prompts(self, phrases: Sequence[str], templates: Sequence[str] = REMOTE_SENSING_TEMPLATES) -> np.ndarray:
        """Each phrase → templates filled, embedded, averaged and re-normalised: (len(phrases), D).

        Recent phrases are cached, so re-running a search does not re-run the text tower. The encoder may
        be used by several threads at once: the cache is locked, the model runs unlocked (inference only).
        """
        templates = tuple(templates)
        out = np.zeros((len(phrases), self.dim), dtype=np.float32)
        missing = []
        with self._text_lock:
            for i, phrase in enumerate(phrases):
                hit = self._text_cache.get((phrase, templates))
                if hit is None:
                    missing.append(i)
                else:
                    self._text_cache.move_to_end((phrase, templates))
                    out[i] = hit
        if missing:
            filled = [t.format(phrases[i]) for i in missing for t in templates]
            # in chunks: an ensemble like GeoRSCLIP's 105 templates times a class list is thousands of prompts
            chunks = [self.encode_texts(filled[s:s + TEXT_CHUNK]) for s in range(0, len(filled), TEXT_CHUNK)]
            feats = np.concatenate(chunks).reshape(len(missing), len(templates), -1).mean(axis=1)
            feats = _normalise(feats)
            with self._text_lock:
                for row, i in zip(feats, missing):
                    out[i] = row
                    self._text_cache[(phrases[i], templates)] = row
                    if len(self._text_cache) > self._text_cache_size:
                        self._text_cache.popitem(last=False)
        return out


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
