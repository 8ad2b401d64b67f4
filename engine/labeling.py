"""Zero-shot land-cover labelling of every tile, shaped like open_clip's zero-shot classifier."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import EngineError
from .index import TileIndex, TileRecord
from .prompts import REMOTE_SENSING_TEMPLATES


@dataclass(frozen=True)
class TileLabel:
    """The winning class of one tile, its softmax probability and its lead over the runner-up."""

    tile: TileRecord
    label: str
    probability: float
    margin: float


def build_zero_shot_classifier(encoder, classnames: Sequence[str],
                               templates: Sequence[str] = REMOTE_SENSING_TEMPLATES) -> np.ndarray:
    """(C, D) class embeddings: each class's templates embedded, averaged and normalised."""
    if len(classnames) < 2:
        raise EngineError("Zero-shot labelling needs at least two classes.")
    return encoder.encode_prompts(list(classnames), templates)


def classify(embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float = 100.0) -> np.ndarray:
    """(N, C) class probabilities: softmax over scaled cosine similarities."""
    logits = logit_scale * (embeddings @ classifier.T)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Winner index, its probability and its margin over the runner-up, per row."""
    order = np.argsort(-probs, axis=1, kind="stable")
    rows = np.arange(len(probs))
    first = probs[rows, order[:, 0]]
    second = probs[rows, order[:, 1]] if probs.shape[1] > 1 else np.zeros(len(probs))
    return order[:, 0], first, first - second


def label_tiles(index: TileIndex, encoder, classnames: Sequence[str],
                templates: Sequence[str] = REMOTE_SENSING_TEMPLATES, allowed: np.ndarray | None = None,
                chunk: int = 65536) -> list[TileLabel]:
    """Label every tile (or the ``allowed`` ones) with its most likely class."""
    classifier = build_zero_shot_classifier(encoder, classnames, templates)
    scale = float(getattr(encoder.loaded, "logit_scale", 100.0))
    ids, vecs = index.embeddings(None if allowed is None else allowed.tolist())
    out: list[TileLabel] = []
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        winners, probs, margins = top_two(classify(vecs[start:start + chunk], classifier, scale))
        records = index.tiles(part.tolist())
        out += [TileLabel(records[int(i)], classnames[w], float(p), float(m))
                for i, w, p, m in zip(part, winners, probs, margins)]
    return out
