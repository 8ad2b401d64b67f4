"""Planted embeddings for search tests and the bench: image-like vectors and text-like queries apart from them.

CLIP image embeddings share a large common direction and fall into clusters of similar looks; text
embeddings share another direction (the "modality gap") and a text query such as "farmland" matches
many looks at once. Here an image vector is ``common·image + cluster centre + noise``; a text query is
``common·text + the mean of ``mix`` cluster centres + noise``, so its best images are spread over
several clusters (and IVF lists) and score low (cosine ≈ 0.2–0.3), as real text queries do. Random-
weight models show none of this, so tests and the bench plant it.
"""
from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class ModalityWorld:
    def __init__(self, dim: int = 512, clusters: int = 2000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        basis = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
        self.image_dir, self.text_dir = basis[0], basis[1]
        centres = rng.standard_normal((clusters, dim))
        centres -= (centres @ basis.T) @ basis
        self.centres = unit(centres)

    def images(self, n: int, seed: int) -> np.ndarray:
        """``n`` unit image embeddings (cosine ≈ 0.4 between random pairs, ≈ 0.8 within a cluster)."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, 65536):
            m = min(65536, n - start)
            k = rng.integers(0, len(self.centres), m)
            x = self.image_dir + 0.9 * self.centres[k] + 0.8 * rng.standard_normal((m, self.dim)) / np.sqrt(self.dim)
            out[start:start + m] = unit(x)
        return out

    def texts(self, n: int, seed: int, mix: int = 8) -> np.ndarray:
        """``n`` unit text-like queries, each matching ``mix`` clusters at once, off the images' cone."""
        rng = np.random.default_rng(seed)
        k = rng.integers(0, len(self.centres), (n, mix))
        x = 1.2 * self.text_dir + 0.5 * unit(self.centres[k].sum(axis=1)) \
            + 0.5 * rng.standard_normal((n, self.dim)) / np.sqrt(self.dim)
        return unit(x)

    def image_queries(self, vectors: np.ndarray, n: int, seed: int, cosine: float = 0.5) -> np.ndarray:
        """Unit queries at ``cosine`` to random given vectors (like the mean of example tiles, not a copy)."""
        rng = np.random.default_rng(seed)
        base = vectors[rng.choice(len(vectors), size=n, replace=False)]
        noise = rng.standard_normal(base.shape).astype(np.float32)
        noise -= np.sum(noise * base, axis=1, keepdims=True) * base
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return unit(cosine * base + np.sqrt(1 - cosine ** 2) * noise)


def exact_top(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int = 10,
              chunk: int = 65536) -> np.ndarray:
    """The right answer, computed here and not by the engine: ids of the exact top-``k`` per query, best first
    (-1 where there are fewer), by brute-force inner products over every vector."""
    q = np.asarray(queries, dtype=np.float32).reshape(-1, vectors.shape[1])
    best_ids = np.full((len(q), k), -1, dtype=np.int64)
    best = np.full((len(q), k), -np.inf, dtype=np.float32)
    for start in range(0, len(ids), chunk):
        scores = q @ np.asarray(vectors[start:start + chunk], dtype=np.float32).T
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids[start:start + chunk], scores.shape)], axis=1)
        all_scores = np.concatenate([best, scores], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_ids, best = np.take_along_axis(all_ids, order, 1), np.take_along_axis(all_scores, order, 1)
    return best_ids


def recall(got: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(g[:k]) & set(t.tolist())) / k for g, t in zip(got, truth)]))
