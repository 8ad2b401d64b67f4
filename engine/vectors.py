"""The FAISS side of an index: inner-product search over unit-length tile embeddings.

The vectors themselves live in the index's SQLite database (the source of truth, written
in transactions); the FAISS file is a derived cache that is rebuilt whenever it is missing,
stale or does not match its recorded checksum, so it can never hold an index hostage.

Small indexes are searched exactly. Past ``APPROX_THRESHOLD`` vectors an IVF index is
trained on the index's own vectors and its ``nprobe`` raised until recall@10 against exact
search reaches ``TARGET_RECALL`` on a sample of them (see ``make bench`` for the numbers).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write

#: Exact search below this many vectors (measured: ~10 ms p95 at 100k on 2 cores; see bench/).
APPROX_THRESHOLD = 100_000
TARGET_RECALL = 0.97
_CALIBRATION_QUERIES = 200


def perturbed_queries(vectors: np.ndarray, rng: np.random.Generator, n: int, cosine: float = 0.6) -> np.ndarray:
    """Unit queries at about ``cosine`` to random stored vectors.

    Real queries (text, or the mean of example tiles) are not copies of stored vectors; using
    the vectors themselves would calibrate on easy self-matches and overstate recall.
    """
    base = vectors[rng.choice(len(vectors), size=n, replace=False)]
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = cosine * base + np.sqrt(1 - cosine ** 2) * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


class VectorStore:
    """Inner-product search keyed by tile id; ``kind`` says how ("flat" or "ivf<nlist>,nprobe=<p>")."""

    def __init__(self, index, kind: str = "flat") -> None:
        self.index = index
        self.kind = kind
        self.recall: float | None = None

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, threshold: int = APPROX_THRESHOLD,
              seed: int = 0) -> "VectorStore":
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        dim = vectors.shape[1]
        if len(ids) < max(threshold, 1):
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            if len(ids):
                index.add_with_ids(vectors, ids)
            return cls(index, "flat")
        nlist = int(min(max(4 * np.sqrt(len(ids)), 64), 16384))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 64 * nlist), replace=False)]
        ivf.cp.seed = seed
        ivf.train(sample)
        ivf.add_with_ids(vectors, ids)
        store = cls(ivf, "")
        store.calibrate(ids, vectors, rng)
        return store

    def calibrate(self, ids: np.ndarray, vectors: np.ndarray, rng: np.random.Generator, k: int = 10) -> None:
        """Smallest nprobe (doubling) whose recall@k against exact search reaches TARGET_RECALL."""
        import faiss

        queries = perturbed_queries(vectors, rng, min(_CALIBRATION_QUERIES, len(vectors)))
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, truth_pos = exact.search(queries, k)
        truth = [set(ids[row].tolist()) for row in truth_pos]
        nprobe = 1
        while True:
            self.index.nprobe = nprobe
            _, got = self.index.search(queries, k)
            recall = float(np.mean([len(t & set(g.tolist())) / k for t, g in zip(truth, got)]))
            if recall >= TARGET_RECALL or nprobe >= self.index.nlist:
                break
            nprobe = min(nprobe * 2, self.index.nlist)
        self.recall = recall
        self.kind = f"ivf{self.index.nlist},nprobe={nprobe}"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; ids of -1 mark missing results."""
        k = max(0, min(int(k), self.ntotal))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: Path) -> None:
        import faiss

        atomic_write(path, lambda tmp: faiss.write_index(self.index, tmp))

    @classmethod
    def load(cls, path: Path, kind: str) -> "VectorStore":
        import faiss

        store = cls(faiss.read_index(str(path)), kind)
        if kind.startswith("ivf") and "nprobe=" in kind:
            faiss.extract_index_ivf(store.index).nprobe = int(kind.split("nprobe=")[1])
        return store
