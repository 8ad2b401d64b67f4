"""The FAISS side of an index: inner-product search over unit-length tile embeddings.

The vectors themselves live in the index's SQLite database (the source of truth, written
in transactions); the FAISS file is a derived cache that is rebuilt whenever it is missing,
stale or does not match its recorded checksum, so it can never hold an index hostage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write


class VectorStore:
    """Exact inner-product search keyed by tile id."""

    def __init__(self, index, kind: str = "flat") -> None:
        self.index = index
        self.kind = kind

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray) -> "VectorStore":
        import faiss

        dim = vectors.shape[1]
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        return cls(index, "flat")

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; ids of -1 mark missing results."""
        k = max(0, min(int(k), self.ntotal))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def save(self, path: Path) -> None:
        import faiss

        atomic_write(path, lambda tmp: faiss.write_index(self.index, tmp))

    @classmethod
    def load(cls, path: Path, kind: str) -> "VectorStore":
        import faiss

        return cls(faiss.read_index(str(path)), kind)
