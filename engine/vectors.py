"""The FAISS side of an index: inner-product search over unit-length tile embeddings.

The vectors themselves live in the index's SQLite database (the source of truth, written in
transactions); the FAISS file is a derived cache, rebuilt whenever it is missing, damaged or
not of this database's lineage, and updated in place (vectors added, removed by id) when the
database only grew or shrank since it was written.

Small indexes are searched exactly (a flat index). Past ``APPROX_THRESHOLD`` vectors an IVF
index of 4-bit product-quantised codes (IVF-PQ "fast scan": two dimensions per 4-bit code,
128 bytes for a 512-d vector, scanned with SIMD; 8-bit codes of four dimensions with a FAISS
older than 1.9, see ``fast_scan_supported``) holds only codes and ids — the float vectors
are stored once, in SQLite — and its candidates are re-ranked exactly from the stored vectors by
the caller (``TileIndex.nearest``). For each kind of query, ``nprobe`` and the re-rank depth are
the cheapest pair whose recall@10 against exact search reaches ``TARGET_RECALL`` on a sample:
text queries embedded by the index's own model (text sits apart from image embeddings, the CLIP
"modality gap", and needs a much wider search at equal recall: OOD-DiskANN, arXiv 2211.12850)
and image queries (perturbed stored vectors). The exact answers of those samples are kept up to
date as vectors are added and removed (``Calibration``), so every update re-checks the recall
cheaply; the index is re-trained only when it has grown to ``RETRAIN_GROWTH`` times the size it
was trained at or the recall check fails (``training_reason``), and then in the indexing job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .atomic import atomic_write

#: Exact search below this many vectors (measured: ~10 ms p95 at 100k on 2 cores; see bench/).
APPROX_THRESHOLD = 100_000
#: Recall@10 against exact search that every query sample must reach.
TARGET_RECALL = 0.97
#: Re-train once the index holds this many times the vectors it was trained on.
RETRAIN_GROWTH = 2.0
#: Candidates re-ranked exactly per query: the calibration picks one of these per query kind.
RERANK_DEPTHS = (128, 256, 512, 1024)
RERANK = RERANK_DEPTHS[0]
MAX_RERANK = RERANK_DEPTHS[-1]
#: Relative cost of re-ranking one candidate (reading its vector from SQLite) against scanning one code.
RERANK_COST = 100
#: Exact answers kept per calibration query: removals can take this many minus 10 before a rescan.
TRUTH_DEPTH = 50
QUERY_KINDS = ("text", "image")
#: Image queries are calibrated at this cosine to a stored vector: farther off the data than examples usually
#: are (one example tile is itself a stored vector; the mean of several is close to each), so they are covered.
IMAGE_QUERY_COSINE = 0.5
_IMAGE_QUERIES = 200
_K = 10

ProgressFn = Callable[[float, str], None]


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


def exact_top(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, depth: int,
              chunk: int = 131072) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the ``depth`` best vectors per query, best first, by exact inner product.

    Streams over ``vectors`` in chunks (no copy of the matrix); missing places hold id -1.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_ids = np.full((len(q), depth), -1, dtype=np.int64)
    best = np.full((len(q), depth), -np.inf, dtype=np.float32)
    for start in range(0, len(ids), chunk):
        scores = q @ vectors[start:start + chunk].T
        cand_ids = np.broadcast_to(ids[start:start + chunk], scores.shape)
        best_ids, best = _merge_top(best_ids, best, cand_ids, scores, depth)
    return best_ids, best


def _merge_top(ids_a, scores_a, ids_b, scores_b, depth: int):
    ids = np.concatenate([ids_a, ids_b], axis=1)
    scores = np.concatenate([scores_a, scores_b], axis=1)
    if scores.shape[1] > depth:
        part = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        ids, scores = np.take_along_axis(ids, part, 1), np.take_along_axis(scores, part, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


@dataclass
class Calibration:
    """Query samples by kind ("text", "image") with their exact best answers over the store's vectors."""

    queries: dict[str, np.ndarray] = field(default_factory=dict)
    truth_ids: dict[str, np.ndarray] = field(default_factory=dict)
    truth_scores: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def compute(cls, queries: dict[str, np.ndarray], ids: np.ndarray, vectors: np.ndarray) -> "Calibration":
        cal = cls()
        for kind, q in queries.items():
            if q is not None and len(q):
                cal.queries[kind] = np.ascontiguousarray(q, dtype=np.float32)
                cal.truth_ids[kind], cal.truth_scores[kind] = exact_top(q, ids, vectors, TRUTH_DEPTH)
        return cal

    @property
    def kinds(self) -> list[str]:
        return list(self.queries)

    def added(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Fold new vectors into the exact answers (only their scores need computing)."""
        for kind, q in self.queries.items():
            got_ids, got = exact_top(q, ids, vectors, TRUTH_DEPTH)
            self.truth_ids[kind], self.truth_scores[kind] = _merge_top(
                self.truth_ids[kind], self.truth_scores[kind], got_ids, got, TRUTH_DEPTH)

    def removed(self, ids: np.ndarray) -> bool:
        """Drop removed vectors from the answers; False when some query has fewer than 10 exact answers left."""
        gone = np.asarray(ids, dtype=np.int64)
        ok = True
        for kind in self.queries:
            t_ids, t_sc = self.truth_ids[kind], self.truth_scores[kind]
            dead = np.isin(t_ids, gone) | (t_ids < 0)
            order = np.argsort(dead, axis=1, kind="stable")  # survivors first, still best first
            t_ids, t_sc = np.take_along_axis(t_ids, order, 1), np.take_along_axis(t_sc, order, 1)
            dead = np.take_along_axis(dead, order, 1)
            t_ids[dead], t_sc[dead] = -1, -np.inf
            self.truth_ids[kind], self.truth_scores[kind] = t_ids, t_sc
            ok &= bool(((~dead).sum(axis=1) >= min(_K, t_ids.shape[1])).all())
        return ok

    def recall_of(self, kind: str, candidates: np.ndarray) -> float:
        """Recall@10 of candidate lists (one row per query of ``kind``): an exact re-rank keeps every true
        top-10 answer that is among the candidates."""
        truth = self.truth_ids[kind][:, :_K]
        hits = []
        for t, g in zip(truth, candidates):
            t = t[t >= 0]
            if len(t):
                hits.append(np.isin(t, g).sum() / len(t))
        return float(np.mean(hits)) if hits else 1.0

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for kind in self.queries:
            out[f"{kind}_queries"] = self.queries[kind]
            out[f"{kind}_ids"] = self.truth_ids[kind]
            out[f"{kind}_scores"] = self.truth_scores[kind]
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, dim: int) -> "Calibration":
        """From ``arrays()``; anything of the wrong shape or kind raises ValueError."""
        cal = cls()
        for kind in ("text", "image"):
            if f"{kind}_queries" not in arrays:
                continue
            q, ids, sc = (np.asarray(arrays[f"{kind}_{part}"]) for part in ("queries", "ids", "scores"))
            if q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != dim or ids.dtype != np.int64 \
                    or sc.dtype != np.float32 or ids.shape != (len(q), TRUTH_DEPTH) or sc.shape != ids.shape \
                    or not np.isfinite(q).all():
                raise ValueError(f"calibration arrays of {kind} queries do not fit")
            cal.queries[kind], cal.truth_ids[kind], cal.truth_scores[kind] = q, ids, sc
        return cal


def fast_scan_supported() -> bool:
    """Whether this FAISS removes ids from, and honours id selectors in, IVF-PQ fast-scan indexes.

    Both arrived after FAISS 1.8.0 (its ``remove_ids`` aborts the process, facebookresearch/faiss#3128,
    fixed by #3354 for 1.9; its fast-scan search ignores ``SearchParameters.sel``), the version QGIS's
    Python gets with NumPy 1.24 (engine/deps/pins.py). Older FAISS gets classic 8-bit IVF-PQ codes.
    """
    import faiss

    try:
        version = tuple(int(part) for part in str(faiss.__version__).split(".")[:2])
    except ValueError:
        return False
    return version >= (1, 9)


def pq_subquantizers(dim: int, fast_scan: bool = True) -> int:
    """PQ codes per vector: a 4-bit code per two dimensions for fast scan (256 for 512-d: 128 bytes), else an
    8-bit code per four dimensions (128 bytes too); a divisor of ``dim`` (even for fast scan)."""
    for m in range(max(1, dim // (2 if fast_scan else 4)), 0, -1):
        if dim % m == 0 and (not fast_scan or m % 2 == 0 or m == 1):
            return m
    return 1


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` vectors: 4·√n (FAISS's guideline is 4·√n to 16·√n; 4,096 lists of ~256 vectors at a
    million), at least 64, and at most one per 39 vectors (k-means wants that many training points per list).

    Finer lists matter most for text queries, whose true neighbours sit off the images' cone: on the million-tile
    bench's planted text queries, 4,096 lists reached recall@10 0.994 (re-ranking 256) scanning 6 % of them,
    where 1,024 lists needed half of theirs for 0.987 (2.2 ms against 6.9 ms of FAISS time per query).
    """
    return int(max(64, min(round(4 * math.sqrt(n)), n // 39, 65536)))


class VectorStore:
    """Inner-product search keyed by tile id; ``kind`` says how: "flat", "ivf<nlist>,pq<m>x4fs" (fast scan) or
    "ivf<nlist>,pq<m>"."""

    def __init__(self, index, kind: str = "flat") -> None:
        self.index = index
        self.kind = kind
        #: Query kind ("text", "image") → (nprobe, candidates re-ranked); empty for exact search.
        self.settings: dict[str, tuple[int, int]] = {}
        self.trained_at = 0
        #: Recall@10 measured per query kind ("text", "image"); exact search is 1.0 for both.
        self.recall: dict[str, float] = {}
        self.calibration: Calibration | None = None
        #: Set when a check found the file this store was read from damaged: rebuild before trusting it.
        self.damaged = False
        #: The background check of the file it was read from, while it runs (``TileIndex`` starts it).
        self.verifying: Any = None
        #: Why the last recall check asks for re-training ("" when it does not).
        self.retrain_note = ""

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, threshold: int | None = None, seed: int = 0,
              text_queries: np.ndarray | None = None, progress: ProgressFn | None = None) -> "VectorStore":
        """A flat store below ``threshold`` (default ``APPROX_THRESHOLD``) vectors, else a trained IVF-PQ store
        calibrated on image queries and, when given, the model's ``text_queries``."""
        import faiss

        threshold = APPROX_THRESHOLD if threshold is None else threshold
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        dim = vectors.shape[1]
        if len(ids) < max(threshold, 1):
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            if len(ids):
                index.add_with_ids(vectors, ids)
            store = cls(index, "flat")
            store.recall = {kind: 1.0 for kind in QUERY_KINDS}
            return store
        say = progress or (lambda f, m: None)
        fast = fast_scan_supported()
        nlist, m = nlist_for(len(ids)), pq_subquantizers(dim, fast)
        ivf: Any
        if fast:
            ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
        else:
            ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        ivf.cp.niter = 10
        ivf.cp.spherical = True  # unit centroids: assigning by inner product is assigning by angle
        rng = np.random.default_rng(seed)
        size = min(len(vectors), max(64 * nlist, 20_000))
        sample = vectors[np.sort(rng.choice(len(vectors), size=size, replace=False))]
        say(0.0, f"Training the search index ({nlist:,} lists) on {len(sample):,} tiles")
        ivf.train(sample)
        del sample
        step = 65536
        for start in range(0, len(ids), step):
            say(0.3 + 0.4 * start / len(ids), f"Adding tiles to the search index ({start:,} of {len(ids):,})")
            ivf.add_with_ids(vectors[start:start + step], ids[start:start + step])
        store = cls(ivf, _kind_of(ivf))
        store.trained_at = len(ids)
        say(0.7, "Measuring the search index's recall on text and image queries")
        queries = {"image": perturbed_queries(vectors, rng, min(_IMAGE_QUERIES, len(vectors)), IMAGE_QUERY_COSINE)}
        if text_queries is not None and len(text_queries):
            queries["text"] = np.ascontiguousarray(text_queries, dtype=np.float32)
        store.calibration = Calibration.compute(queries, ids, vectors)
        store.calibrate()
        say(1.0, f"Search index ready ({store.describe()})")
        return store

    @property
    def approximate(self) -> bool:
        return self.kind != "flat"

    @property
    def nprobe(self) -> int:
        """The widest nprobe of any query kind (used for queries of no known kind)."""
        return max((s[0] for s in self.settings.values()), default=0)

    @property
    def rerank(self) -> int:
        """The deepest re-rank of any query kind."""
        return max((s[1] for s in self.settings.values()), default=0)

    def calibrate(self, max_nprobe: int | None = None) -> bool:
        """For each query kind the cheapest (nprobe, re-rank depth) whose recall reaches ``TARGET_RECALL``;
        returns whether every kind reached it (else its widest setting is kept).

        One search per nprobe tried (doubling) gives the candidates of every re-rank depth at once;
        the cost of a setting is the codes it scans plus ``RERANK_COST`` per candidate re-ranked.
        """
        if not self.approximate or self.calibration is None:
            return True
        nlist = int(self.index.nlist)
        top = min(max_nprobe or nlist, nlist)
        probes = sorted({min(1 << i, top) for i in range(32) if (1 << i) < top * 2})
        per_list = self.ntotal / max(nlist, 1)
        ok = True
        for kind in self.calibration.kinds:
            best: tuple[float, int, int, float] | None = None
            widest = (top, MAX_RERANK, 0.0)
            for nprobe in probes:
                if best is not None and nprobe * per_list >= best[0]:
                    break  # scanning alone would cost more than the best setting found
                candidates = self._candidates(self.calibration.queries[kind], MAX_RERANK, nprobe)[1]
                for depth in RERANK_DEPTHS:
                    r = self.calibration.recall_of(kind, candidates[:, :depth])
                    cost = nprobe * per_list + RERANK_COST * depth
                    if r >= TARGET_RECALL and (best is None or cost < best[0]):
                        best = (cost, nprobe, depth, r)
                    if nprobe == top and depth == MAX_RERANK:
                        widest = (nprobe, depth, r)
            if best is None:
                ok = False
                self.settings[kind], self.recall[kind] = (widest[0], widest[1]), widest[2]
            else:
                self.settings[kind], self.recall[kind] = (best[1], best[2]), best[3]
        return ok

    # -- updating -----------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Every id the store holds, ascending."""
        import faiss

        if not self.approximate:
            return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        invlists = self.index.invlists
        parts = []
        for lst in range(self.index.nlist):
            size = invlists.list_size(lst)
            if size:
                ptr = invlists.get_ids(lst)
                parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                invlists.release_ids(lst, ptr)
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
            if self.calibration is not None:
                self.calibration.added(np.asarray(ids, dtype=np.int64), vectors)

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids; False when the calibration's exact answers must be recomputed from all vectors."""
        import faiss

        if not len(ids):
            return True
        ids = np.asarray(ids, dtype=np.int64)
        self.index.remove_ids(faiss.IDSelectorBatch(ids))
        return self.calibration.removed(ids) if self.calibration is not None else True

    def recheck(self) -> bool:
        """After updates: the recall on the samples at the current settings; where a kind falls short, the
        calibration again, up to a quarter of the lists. False (with ``retrain_note``) when even that does
        not reach the target: time to re-train."""
        self.retrain_note = ""
        if not self.approximate or self.calibration is None:
            return True
        short = False
        for kind in self.calibration.kinds:
            nprobe, depth = self.settings.get(kind, (self.nprobe or 1, MAX_RERANK))
            r = self.calibration.recall_of(kind, self._candidates(self.calibration.queries[kind], depth, nprobe)[1])
            self.recall[kind] = r
            short |= r < TARGET_RECALL or kind not in self.settings
        if not short:
            return True
        limit = max(self.nprobe, int(self.index.nlist) // 4)
        if self.calibrate(max_nprobe=limit):
            return True
        worst = min(self.recall, key=lambda k: self.recall[k])
        self.retrain_note = f"its recall@10 on {worst} queries fell to {self.recall[worst]:.3f}"
        return False

    def training_reason(self, count: int, text_available: bool) -> str:
        """Why the store should be built anew for ``count`` vectors ("" when it should not)."""
        if not self.approximate:
            return f"it has grown past {APPROX_THRESHOLD:,} tiles" if count >= APPROX_THRESHOLD else ""
        if count < APPROX_THRESHOLD // 2:
            return "it has shrunk below the size where approximate search pays"
        if self.trained_at and count >= RETRAIN_GROWTH * self.trained_at:
            return f"it holds {count / self.trained_at:.1f} times the tiles it was trained on"
        if self.retrain_note:
            return self.retrain_note
        if text_available and (self.calibration is None or "text" not in self.calibration.queries):
            return "its search depth was never measured on text queries"
        return ""

    # -- searching ----------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def describe(self) -> str:
        if not self.approximate:
            return "flat (exact)"
        parts = [f"{kind} nprobe={n} rerank={d}" for kind, (n, d) in sorted(self.settings.items())]
        return f"{self.kind}, " + ", ".join(parts)

    def setting(self, kind: str | None) -> tuple[int, int]:
        """(nprobe, re-rank depth) for queries of ``kind``; the widest of all for an unknown kind."""
        if kind in self.settings:
            return self.settings[kind]
        return (self.nprobe or 1, self.rerank or RERANK)

    def _candidates(self, queries: np.ndarray, depth: int, nprobe: int, sel=None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32)
        depth = max(1, min(int(depth), self.ntotal))
        params: Any = faiss.SearchParametersIVF() if self.approximate else faiss.SearchParameters()
        if self.approximate:
            params.nprobe = int(nprobe)
        if sel is not None:
            params.sel = sel
        return self.index.search(q, depth, params=params)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates per query row: (scores, ids), best first by the store's own (approximate) scores.

        Exact stores give the top ``k``; approximate ones ``max(k, re-rank depth)`` candidates to re-rank
        exactly, searched with the setting calibrated for ``kind`` ("text", "image"). ``allowed``
        (ascending ids) restricts the answer to those ids; the IVF then probes proportionally more
        lists, as the allowed share of the index is smaller. Ids of -1 mark missing results.
        """
        k = max(0, min(int(k), self.ntotal))
        if k == 0 or (allowed is not None and not len(allowed)):
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        nprobe, rerank = self.setting(kind) if self.approximate else (0, 0)
        depth = max(k, rerank) if self.approximate else k
        if allowed is None:
            return self._candidates(queries, depth, nprobe)
        sel, keep = _selector(allowed)
        share = max(len(allowed) / max(self.ntotal, 1), 1e-9)
        nlist = int(getattr(self.index, "nlist", 1))
        nprobe = int(min(nlist, math.ceil(nprobe / share))) if self.approximate else 0
        out = self._candidates(queries, depth, nprobe, sel)
        del keep
        return out

    # -- the file ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        import faiss

        atomic_write(path, lambda tmp: faiss.write_index(self.index, tmp))

    @classmethod
    def load(cls, path: Path, kind: str, settings: dict | None = None) -> "VectorStore":
        """Read a store written by ``save``; its kind must be what ``kind`` says and the search settings
        must fit it (else ValueError)."""
        import faiss

        if kind.endswith("x4fs") and not fast_scan_supported():
            raise ValueError("this FAISS cannot update or restrict a fast-scan index")
        index = faiss.read_index(str(path))
        store = cls(index, kind)
        actual = _kind_of(index)
        if actual != kind:
            raise ValueError(f"the file holds a {actual} index, not {kind}")
        if store.approximate:
            nlist = int(getattr(index, "nlist", 0))
            given = settings if isinstance(settings, dict) else {}
            for name, value in given.items():
                if name not in QUERY_KINDS or not isinstance(value, (list, tuple)) or len(value) != 2 \
                        or not all(type(v) is int for v in value) or not 1 <= value[0] <= nlist \
                        or value[1] not in RERANK_DEPTHS:
                    raise ValueError("search settings out of range")
                store.settings[name] = (int(value[0]), int(value[1]))
            if not store.settings:
                raise ValueError("no search settings")
        return store


def _kind_of(index) -> str:
    import faiss

    if isinstance(index, faiss.IndexIDMap2) or isinstance(index, faiss.IndexIDMap):
        return "flat"
    if isinstance(index, faiss.IndexIVFPQFastScan):
        return f"ivf{index.nlist},pq{index.pq.M}x4fs"
    if isinstance(index, faiss.IndexIVFPQ):
        return f"ivf{index.nlist},pq{index.pq.M}"
    return type(index).__name__


def _selector(allowed: np.ndarray):
    """A FAISS id selector for ascending ids: a bitmap where the ids are small, else a hash set.

    Returns (selector, what it points into), the second to keep alive during the search.
    """
    import faiss

    allowed = np.asarray(allowed, dtype=np.int64)
    top = int(allowed[-1]) if len(allowed) else 0
    if 0 <= int(allowed[0]) and top < (1 << 28):
        mask = np.zeros(top + 1, dtype=bool)
        mask[allowed] = True
        bits = np.packbits(mask, bitorder="little")
        return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits
    return faiss.IDSelectorBatch(allowed), allowed


def rerank_exact(query: np.ndarray, ids: Sequence[int], vectors: np.ndarray, k: int) -> list[tuple[float, int]]:
    """The best ``k`` (score, id) of candidates by exact inner product with their stored vectors."""
    if not len(ids):
        return []
    scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
    order = np.lexsort((np.asarray(ids), -scores))[:k]  # best first; ties by id, like exact search
    return [(float(scores[i]), int(ids[i])) for i in order]
