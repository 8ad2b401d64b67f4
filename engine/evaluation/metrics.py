"""Retrieval and classification metrics as plain numpy functions, in percent (0-100).

Ties are scored pessimistically: a relevant item tied with a non-relevant one counts as
ranked below it. Real embeddings almost never tie, but a collapsed model (every vector the
same) must score near zero, not 100.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def first_relevant_rank(sim: np.ndarray, gt: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """1-based rank of each query's best-scoring relevant item.

    ``sim`` (Q, N) scores, ``gt`` (Q, N) bool relevance. The rank is one plus the number of
    non-relevant items scoring at least as high as the best relevant item.
    """
    sim = np.asarray(sim, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    if sim.shape != gt.shape or sim.ndim != 2:
        raise ValueError(f"scores {sim.shape} and relevance {gt.shape} must be matching 2-D arrays")
    if not gt.any(axis=1).all():
        raise ValueError("every query needs at least one relevant item")
    ranks = np.empty(len(sim), dtype=np.int64)
    for start in range(0, len(sim), chunk):
        s, g = sim[start:start + chunk], gt[start:start + chunk]
        best = np.where(g, s, -np.inf).max(axis=1, keepdims=True)
        ranks[start:start + chunk] = 1 + ((s >= best) & ~g).sum(axis=1)
    return ranks


def recall_at_k(sim: np.ndarray, gt: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """Percent of queries with at least one relevant item in their top k, for each k."""
    ranks = first_relevant_rank(sim, gt)
    return {int(k): 100.0 * float(np.mean(ranks <= k)) for k in ks}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: Sequence[int] | np.ndarray,
                      ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Image→text and text→image R@k and their mean (mR), as in the RS retrieval papers.

    Embeddings are unit vectors, so their dot product is the cosine similarity. Image→text
    is a hit when any of the image's captions is in the top k; text→image when the
    caption's own image is.
    """
    owner = np.asarray(text_to_image, dtype=np.int64)
    if len(owner) != len(text_emb):
        raise ValueError("text_to_image needs one image index per text")
    sim = np.asarray(image_emb, dtype=np.float64) @ np.asarray(text_emb, dtype=np.float64).T
    gt = owner[None, :] == np.arange(len(image_emb))[:, None]
    i2t = recall_at_k(sim, gt, ks)
    t2i = recall_at_k(sim.T, gt.T, ks)
    out = {f"i2t_R@{k}": v for k, v in i2t.items()}
    out.update({f"t2i_R@{k}": v for k, v in t2i.items()})
    out["mR"] = float(np.mean(list(i2t.values()) + list(t2i.values())))
    return out


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Percent of predictions equal to the truth."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        raise ValueError("accuracy of no predictions")
    return 100.0 * float(np.mean(t == p))


def per_class_accuracy(cm: np.ndarray) -> list[float | None]:
    """Each class's recall in percent (diagonal over row sum); None for a class with no samples."""
    totals = cm.sum(axis=1)
    return [100.0 * float(cm[i, i]) / float(n) if n else None for i, n in enumerate(totals)]
