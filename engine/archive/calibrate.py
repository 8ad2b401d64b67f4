"""How wide an archive search must look: nprobe and re-rank depth chosen on samples of real-looking queries.

Two samples, each with its exact best answers over every stored vector: image queries (stored
vectors perturbed to cosine 0.6, like the mean of example tiles) and, when the index has them,
text queries embedded by its own model. Text sits apart from image embeddings in a CLIP space
(the "modality gap"), so its true neighbours spread over more inverted lists than an image
query's (OOD-DiskANN, arXiv 2211.12850): calibrating on image queries alone would overstate
recall for the searches people type. The exact answers are folded forward as shards are added,
so each addition re-checks the recall without a full scan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

#: Recall@10 against exact search that every query sample must reach: the goal of 0.9 on queries never seen,
#: with a margin for the difference between samples (measured: within ±0.015 on 200 text queries).
TARGET_RECALL = 0.93
#: Re-rank depths tried (candidates re-ranked exactly from the float16 vectors), the last only when needed.
DEPTHS = (256, 512, 1024, 2048)
MAX_RERANK = 8192
#: What re-ranking one candidate costs, in PQ codes scanned (measured on 2 cores: ~4.6 µs to read and check a
#: float16 vector the process has not touched yet, ~25 ns to scan a 64-byte code).
RERANK_COST = 180
#: Exact answers kept per calibration query.
TRUTH_DEPTH = 32
IMAGE_QUERIES = 200
_K = 10


@dataclass
class Truth:
    """Query samples by kind ("image", "text") with their exact best answers (ids, scores; best first)."""

    queries: dict[str, np.ndarray] = field(default_factory=dict)
    ids: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, queries: dict[str, np.ndarray]) -> "Truth":
        truth = cls()
        for kind, q in queries.items():
            if q is not None and len(q):
                q = np.ascontiguousarray(q, dtype=np.float32)
                truth.queries[kind] = q
                truth.ids[kind] = np.full((len(q), TRUTH_DEPTH), -1, np.int64)
                truth.scores[kind] = np.full((len(q), TRUTH_DEPTH), -np.inf, np.float32)
        return truth

    def fold(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Fold (ids, float32 vectors) chunks into the exact answers."""
        for ids, vecs in chunks:
            for kind, q in self.queries.items():
                scores = q @ vecs.T
                self.ids[kind], self.scores[kind] = _merge_top(
                    self.ids[kind], self.scores[kind], np.broadcast_to(ids, scores.shape), scores)

    def drop(self, removed: np.ndarray) -> bool:
        """Forget removed ids; False when some query then has fewer than 10 exact answers (rescan needed)."""
        ok = True
        for kind in self.queries:
            dead = np.isin(self.ids[kind], removed)
            if dead.any():
                self.ids[kind] = np.where(dead, -1, self.ids[kind])
                self.scores[kind] = np.where(dead, -np.inf, self.scores[kind]).astype(np.float32)
                order = np.argsort(-self.scores[kind], axis=1, kind="stable")
                self.ids[kind] = np.take_along_axis(self.ids[kind], order, 1)
                self.scores[kind] = np.take_along_axis(self.scores[kind], order, 1)
            ok &= bool(((self.ids[kind] >= 0).sum(axis=1) >= _K).all())
        return ok

    def only(self, kind: str) -> "Truth":
        return Truth({kind: self.queries[kind]}, {kind: self.ids[kind]}, {kind: self.scores[kind]})

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for kind in self.queries:
            out[f"{kind}_queries"], out[f"{kind}_ids"], out[f"{kind}_scores"] = \
                self.queries[kind], self.ids[kind], self.scores[kind]
        return out

    @classmethod
    def from_arrays(cls, arrays, dim: int) -> "Truth":
        """From ``arrays()`` as saved; anything of the wrong shape or kind raises ValueError."""
        truth = cls()
        for kind in ("image", "text"):
            if f"{kind}_queries" not in arrays:
                continue
            q, ids, sc = (np.asarray(arrays[f"{kind}_{part}"]) for part in ("queries", "ids", "scores"))
            if q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != dim or ids.dtype != np.int64 \
                    or sc.dtype != np.float32 or ids.shape != (len(q), TRUTH_DEPTH) or sc.shape != ids.shape \
                    or not np.isfinite(q).all():
                raise ValueError(f"the calibration arrays of {kind} queries do not fit")
            truth.queries[kind], truth.ids[kind], truth.scores[kind] = q, ids, sc
        return truth


def _merge_top(ids_a, scores_a, ids_b, scores_b):
    ids = np.concatenate([ids_a, ids_b], axis=1)
    scores = np.concatenate([scores_a, scores_b], axis=1)
    if scores.shape[1] > TRUTH_DEPTH:
        part = np.argpartition(-scores, TRUTH_DEPTH - 1, axis=1)[:, :TRUTH_DEPTH]
        ids, scores = np.take_along_axis(ids, part, 1), np.take_along_axis(scores, part, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1).astype(np.float32)


def recall_by_depth(truth: Truth, search: Callable[[np.ndarray, int, int], Sequence[np.ndarray]], nprobe: int,
                    depths: Sequence[int]) -> dict[int, dict[str, float]]:
    """Recall@10 per depth and kind of ``search(queries, nprobe, depth)`` candidates (best first: the first
    ``d`` of the deepest search are the search of depth ``d``); re-ranking keeps every true answer among them."""
    out: dict[int, dict[str, float]] = {d: {} for d in depths}
    for kind, q in truth.queries.items():
        got = search(q, nprobe, max(depths))
        for d in depths:
            hits = []
            for t, g in zip(truth.ids[kind][:, :_K], got):
                t = t[t >= 0]
                hits.append(len(set(t.tolist()) & set(g[:d].tolist())) / max(len(t), 1))
            out[d][kind] = float(np.mean(hits)) if hits else 1.0
    return out


def choose(truth: Truth, search: Callable[[np.ndarray, int, int], Sequence[np.ndarray]], nlist: int, ntotal: int,
           start_nprobe: int = 1) -> tuple[int, int, dict[str, float]]:
    """(nprobe, re-rank depth, recall) of least cost whose recall reaches ``TARGET_RECALL`` for every kind.

    nprobe doubles until every depth passes (or scanning alone costs more than the best pair found);
    then, for each depth, its last doubling is bisected. The cost of a pair is the PQ codes it scans
    plus ``RERANK_COST`` per candidate re-ranked. When no depth passes even with every list probed, the
    depth grows to ``MAX_RERANK`` (and the widest setting is kept if that fails too).
    """
    per_list = ntotal / max(nlist, 1)
    depths = sorted({d for d in DEPTHS if d < ntotal} | {min(max(DEPTHS), max(ntotal, _K))})
    seen: dict[int, dict[int, dict[str, float]]] = {}

    def table(nprobe: int) -> dict[int, dict[str, float]]:
        if nprobe not in seen:
            seen[nprobe] = recall_by_depth(truth, search, nprobe, depths)
        return seen[nprobe]

    def passes(nprobe: int, depth: int) -> bool:
        return all(v >= TARGET_RECALL for v in table(nprobe)[depth].values())

    def cost(pair: tuple[int, int]) -> float:
        return pair[0] * per_list + RERANK_COST * pair[1]

    def best() -> tuple[int, int] | None:
        pairs = [(p, d) for p in seen for d in depths if passes(p, d)]
        return min(pairs, key=cost) if pairs else None

    grid = [max(1, min(start_nprobe, nlist))]
    while True:
        p = grid[-1]
        found = best()
        if all(passes(p, d) for d in depths) or p >= nlist or (found is not None and cost(found) <= p * per_list):
            break
        grid.append(min(2 * p, nlist))
    if best() is None:
        deep = min(MAX_RERANK, ntotal)
        if deep > max(depths):
            depths.append(deep)
            seen.clear()
        if not passes(nlist, max(depths)):
            return nlist, max(depths), table(nlist)[max(depths)]
    for d in depths:
        first = next((i for i, p in enumerate(grid) if p in seen and passes(p, d)), None)
        if first is None:
            continue
        low, high = (grid[first - 1] if first else 0), grid[first]
        while high - low > max(2, high // 8):
            mid = (low + high) // 2
            if passes(mid, d):
                high = mid
            else:
                low = mid
    chosen = best()
    assert chosen is not None
    return chosen[0], chosen[1], table(chosen[0])[chosen[1]]


def sides(truth: Truth) -> tuple[np.ndarray, float] | None:
    """(axis, threshold) telling a text query from an image query, or None when the samples do not fall apart.

    The axis is the image queries' mean direction: image embeddings share a large common part that
    text embeddings lack (the modality gap), so every image query lies further along it than every
    text query. Past the threshold, halfway between the two samples, a query is searched with the
    image queries' (narrower) setting; short of it, with the text queries'.
    """
    if set(truth.queries) != {"image", "text"}:
        return None
    axis = truth.queries["image"].mean(axis=0)
    axis = (axis / max(float(np.linalg.norm(axis)), 1e-12)).astype(np.float32)
    text_high = float((truth.queries["text"] @ axis).max())
    image_low = float((truth.queries["image"] @ axis).min())
    if text_high >= image_low:
        return None
    return axis, (text_high + image_low) / 2
