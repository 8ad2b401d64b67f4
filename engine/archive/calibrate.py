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

from typing import Callable, Sequence

import numpy as np

from ..vectors import Calibration

#: Recall@10 against exact search that every query sample must reach: the goal of 0.9 on queries never seen,
#: with a margin for the difference between samples (measured: within ±0.015 on 200 text queries).
TARGET_RECALL = 0.93
#: Re-rank depths tried (candidates re-ranked exactly from the float16 vectors), the last only when needed.
DEPTHS = (256, 512, 1024, 2048)
MAX_RERANK = 8192
#: Image queries drawn for calibration: stored vectors perturbed to this cosine (the mean of a few example
#: tiles is not a copy of any). Closer than the vector cache's 0.5 on purpose: this sample also places the
#: threshold between text and image queries (``sides``), and at 0.5 the perturbed image queries reach into
#: the text side in the tests' planted world, so no threshold is found and every query gets the widest setting.
IMAGE_QUERIES = 200
IMAGE_COSINE = 0.6
#: What re-ranking one candidate costs, in PQ codes scanned (measured on 2 cores: ~4.6 µs to read and check a
#: float16 vector the process has not touched yet, ~25 ns to scan a 64-byte code).
RERANK_COST = 180
_K = 10


def empty_truth(queries: dict[str, np.ndarray]) -> Calibration:
    """Query samples with no exact answers yet (``Calibration.added`` folds the vectors in, shard by shard)."""
    dim = len(next(iter(queries.values()))[0])
    return Calibration.compute(queries, np.zeros(0, np.int64), np.zeros((0, dim), np.float32))


def only(truth: Calibration, kind: str) -> Calibration:
    """The sample of one kind of queries."""
    return Calibration({kind: truth.queries[kind]}, {kind: truth.truth_ids[kind]}, {kind: truth.truth_scores[kind]})


def recall_by_depth(truth: Calibration, search: Callable[[np.ndarray, int, int], Sequence[np.ndarray]], nprobe: int,
                    depths: Sequence[int]) -> dict[int, dict[str, float]]:
    """Recall@10 per depth and kind of ``search(queries, nprobe, depth)`` candidates (best first: the first
    ``d`` of the deepest search are the search of depth ``d``); re-ranking keeps every true answer among them."""
    out: dict[int, dict[str, float]] = {d: {} for d in depths}
    for kind, q in truth.queries.items():
        got = search(q, nprobe, max(depths))
        for d in depths:
            out[d][kind] = truth.recall_of(kind, [g[:d] for g in got])  # type: ignore[arg-type]
    return out


def choose(truth: Calibration, search: Callable[[np.ndarray, int, int], Sequence[np.ndarray]], nlist: int, ntotal: int,
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


def sides(truth: Calibration) -> tuple[np.ndarray, float] | None:
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
