"""Scoring every tile of an index for a concept, learning from the user's marks.

Three methods, chosen by what the concept holds (``score_concept``):

* **text** — no marks yet: the cosine of each tile with the *seed*, the direction the user
  described: ``W_TEXT·text − W_NEGATIVE·negative text + W_EXAMPLES·mean(example tiles)``,
  normalised. With text alone this is exactly today's search.
* **rocchio** — some marks: the seed moved towards the accepted tiles and away from the rejected
  ones, ``ROCCHIO_SEED·seed + ROCCHIO_ACCEPTED·accepted − ROCCHIO_REJECTED·rejected``, where
  *accepted* and *rejected* are the (normalised) means of those tiles' embeddings minus the
  index's mean embedding: every image embedding shares a large common part that says nothing
  about the concept, and left in, it would drown the text. Normalised; scores are cosines.
  Weights are Rocchio's classic 1 / 0.75 / 0.25 (Manning et al., *Introduction to Information
  Retrieval*, §9.1.1): accepted tiles say more than rejected ones, which are often rejected for
  reasons unrelated to the concept.
* **logistic** — at least ``MIN_EACH`` positives (accepted + examples) and ``MIN_EACH`` rejected:
  a logistic regression on the stored embeddings of the marked tiles, with class-balanced weights,
  whose weight vector is pulled towards the seed direction: the penalty is
  ``LOGISTIC_L2/2 · ‖w − κ·seed‖²`` with ``κ = PRIOR_LOGITS_PER_STD / std(seed scores over the
  index)``, i.e. the prior alone is the seed ranking at one logit per standard deviation. A handful
  of marks refines the concept but cannot flip it. Scores are probabilities (0–1), threshold 0.5.

The two constants were chosen on the planted world of the tests (tests/planted_concepts.py, 512-d):
with ``LOGISTIC_L2`` = 0.1 five contradicting accepted and five contradicting rejected tiles leave
the weight vector at cosine ≈ 0.8 to the seed, and twenty honest marks lift the concept's recall
from 0.16 to 0.73; with 0.3 the same twenty marks reach only 0.51 (0.9 takes 60–80 marks), with
0.03 five wrong marks pull the direction down to cosine ≈ 0.6.

Scores are computed for every tile with one matrix–vector product over the index's embedding
matrix, read once per index generation through ``index_matrix`` (the single place to swap for a
faster bulk read).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from .errors import EngineError
from .footprints import affine_from_footprint  # noqa: F401 (kept importable from here)
from .progress import ProgressFn, no_progress

W_TEXT = 1.0
W_NEGATIVE = 0.5
W_EXAMPLES = 1.0
ROCCHIO_SEED = 1.0
ROCCHIO_ACCEPTED = 0.75
ROCCHIO_REJECTED = 0.25
#: Marks needed on each side (positives, rejected) before the logistic regression takes over.
MIN_EACH = 5
#: Strength of the pull towards the seed direction (per unit of squared weight distance).
LOGISTIC_L2 = 0.1
#: The prior's slope along the seed: logits per standard deviation of the seed's scores over the index.
PRIOR_LOGITS_PER_STD = 1.0
NEWTON_STEPS = 30
#: Thresholds this close outside the scores' range count as its ends (scores are printed with 6 decimals).
THRESHOLD_SLACK = 1e-6

METHOD_TEXT = "text"
METHOD_ROCCHIO = "rocchio"
METHOD_LOGISTIC = "logistic"


# -- the embedding matrix ------------------------------------------------------------------
@dataclass(frozen=True)
class RasterGeo:
    """Where a raster's tiles are: its path, CRS and the affine from pixel (col, row) to CRS (x, y)."""

    id: int
    path: str
    crs_wkt: str
    affine: tuple[float, float, float, float, float, float]  # x = a + col·b + row·c, y = d + col·e + row·f


@dataclass(frozen=True)
class IndexMatrix:
    """Every tile of an index as arrays: ids (ascending), unit embeddings, raster and pixel window."""

    ids: np.ndarray  # (N,) int64, ascending
    vectors: np.ndarray  # (N, D) float32
    raster_ids: np.ndarray  # (N,) int64
    windows: np.ndarray  # (N, 4) int64: col_off, row_off, width, height
    rasters: dict  # raster id → RasterGeo
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def mean_vector(self) -> np.ndarray:
        """The mean embedding of the index (computed once): what every tile shares, whatever it shows."""
        mean = self._derived.get("mean")
        if mean is None:
            mean = np.zeros(self.vectors.shape[1], np.float64)
            for start in range(0, len(self.vectors), 262144):
                mean += self.vectors[start : start + 262144].sum(axis=0, dtype=np.float64)
            mean = (mean / max(len(self.vectors), 1)).astype(np.float32)
            self._derived["mean"] = mean
        return mean

    def rows(self, ids, where: str = "the index") -> np.ndarray:
        """Row positions of tile ids; an id not in the index is refused by number."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.ids, ids)
        ok = (
            (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == ids)
            if len(self.ids)
            else np.zeros(len(ids), bool)
        )
        if not ok.all():
            raise EngineError(f"Tile {int(ids[~ok][0])} is not in {where}.")
        return pos


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def index_matrix(idx, progress: ProgressFn | None = None) -> IndexMatrix:
    """The index's tiles as an ``IndexMatrix``, kept in memory for the index's current generation.

    The one accessor scoring and areas use for all vectors: a faster bulk read of the
    embeddings plugs in here. One index is cached at a time (the matrix can be gigabytes).
    """
    key = (str(idx.folder), idx.created, idx.generation)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        (progress or no_progress)(0.0, "Reading the tile embeddings")
        matrix = _read_matrix(idx)
        _CACHE.clear()
        _CACHE[key] = matrix
        return matrix


def forget_matrices() -> None:
    """Drop the cached matrix (frees its memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _read_matrix(idx) -> IndexMatrix:
    """Every searchable tile's id, embedding, raster and window, read in bulk in one snapshot of the index."""
    with idx.snapshot():
        ids, vecs = idx.embeddings()
        geo_ids, raster_ids, windows = idx.tile_windows()
        geometries = idx.raster_geometries()
    if len(geo_ids) != len(ids) or not np.array_equal(geo_ids, ids):
        raise EngineError(f"The index at {idx.folder} keeps changing while it is read; try again when indexing ends.")
    rasters = {}
    for rid, (path, crs_wkt, geometry) in geometries.items():
        if geometry.transform is not None:
            rasters[int(rid)] = RasterGeo(int(rid), path, crs_wkt, geometry.transform)
    return IndexMatrix(ids, vecs, raster_ids, windows, rasters)


# -- scoring -------------------------------------------------------------------------------
@dataclass
class ConceptScores:
    """The result of scoring every tile: method, per-row scores and what they were learnt from."""

    method: str
    description: str
    scores: np.ndarray  # (N,) float32, higher = more the concept
    threshold: float  # a starting threshold (0.5 for probabilities)
    marked_rows: np.ndarray  # rows of tiles the user marked (examples, accepted, rejected)
    positives: int = 0
    negatives: int = 0
    direction: np.ndarray | None = field(default=None, repr=False)

    @property
    def probabilities(self) -> bool:
        return self.method == METHOD_LOGISTIC

    def least_certain(self, k: int, exclude_marked: bool = True) -> np.ndarray:
        """Rows whose scores lie closest to the threshold: the tiles each new mark teaches most about."""
        gap = np.abs(self.scores.astype(np.float64) - self.threshold)
        if exclude_marked and len(self.marked_rows):
            gap[self.marked_rows] = np.inf
        k = int(min(max(k, 0), np.isfinite(gap).sum()))
        if k == 0:
            return np.zeros(0, np.int64)
        part = np.argpartition(gap, k - 1)[:k]
        return part[np.argsort(gap[part], kind="stable")]

    def best(self, k: int, exclude_marked: bool = False) -> np.ndarray:
        """Rows of the ``k`` highest scores, best first (optionally leaving out marked tiles)."""
        scores = self.scores
        if exclude_marked and len(self.marked_rows):
            scores = scores.copy()
            scores[self.marked_rows] = -np.inf
        k = int(min(max(k, 0), np.isfinite(scores).sum()))
        if k == 0:
            return np.zeros(0, np.int64)
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 1e-12 else v.astype(np.float32)


def seed_direction(
    text: np.ndarray | None, negative: np.ndarray | None, examples: np.ndarray | None
) -> np.ndarray | None:
    """The direction the user described (text, minus negative text, plus example tiles), or None."""
    parts = []
    if text is not None:
        parts.append(W_TEXT * _unit(text))
    if examples is not None and len(examples):
        parts.append(W_EXAMPLES * _unit(examples.mean(axis=0)))
    if not parts:
        return None
    seed = np.sum(parts, axis=0)
    if negative is not None:
        seed = seed - W_NEGATIVE * _unit(negative)
    return _unit(seed)


def score_concept(
    matrix: IndexMatrix,
    text: np.ndarray | None = None,
    negative: np.ndarray | None = None,
    example_rows=(),
    accepted_rows=(),
    rejected_rows=(),
    use_marks: bool | None = None,
    name: str = "the concept",
) -> ConceptScores:
    """Score every tile of ``matrix`` for a concept (see the module's docstring for the methods).

    ``use_marks``: None uses marks when there are some; True requires them ("refine");
    False scores by text and examples only.
    """
    vecs = matrix.vectors
    examples = np.asarray(example_rows, dtype=np.int64)
    accepted = np.asarray(accepted_rows, dtype=np.int64)
    rejected = np.asarray(rejected_rows, dtype=np.int64)
    if negative is not None and text is None and not len(examples):
        raise EngineError(f"{name} has only a negative text; give it a text query or example tiles too.")
    seed = seed_direction(text, negative, vecs[examples] if len(examples) else None)
    marked = np.unique(np.concatenate([examples, accepted, rejected]))
    has_marks = bool(len(accepted) or len(rejected))
    if use_marks and not has_marks:
        raise EngineError(f"{name} has no accepted or rejected tiles yet; accept or reject some results, then refine.")
    if use_marks is False or not has_marks:
        if seed is None:
            raise EngineError(
                f"{name} has no text, example tiles or accepted tiles to score with; "
                "give it a text query or mark some tiles."
            )
        scores = vecs @ seed
        what = " + ".join(
            w
            for w, on in (
                ("text", text is not None),
                ("example tiles", len(examples)),
                ("negative text", negative is not None),
            )
            if on
        )
        return ConceptScores(
            METHOD_TEXT,
            f"{what} (cosine similarity)",
            scores,
            _start_threshold(scores),
            marked,
            int(len(examples)),
            0,
            seed,
        )
    positives = np.unique(np.concatenate([examples, accepted]))
    if len(positives) >= MIN_EACH and len(rejected) >= MIN_EACH:
        return _logistic(matrix, seed, positives, rejected, marked)
    if seed is None and not len(accepted):
        raise EngineError(
            f"{name} has only rejected tiles and no text or examples; accept at least one tile or give it a text query."
        )
    centre = matrix.mean_vector()
    q = np.zeros(vecs.shape[1], np.float32) if seed is None else ROCCHIO_SEED * seed
    if len(accepted):
        q = q + ROCCHIO_ACCEPTED * _unit(vecs[accepted].mean(axis=0) - centre)
    if len(rejected):
        q = q - ROCCHIO_REJECTED * _unit(vecs[rejected].mean(axis=0) - centre)
    q = _unit(q)
    scores = vecs @ q
    need = f"; the classifier starts at {MIN_EACH} accepted and {MIN_EACH} rejected"
    desc = f"Rocchio: {'seed + ' if seed is not None else ''}{len(accepted)} accepted − {len(rejected)} rejected{need}"
    pos_scores, neg_scores = scores[positives], scores[rejected]
    threshold = _start_threshold(scores, pos_scores, neg_scores)
    return ConceptScores(METHOD_ROCCHIO, desc, scores, threshold, marked, len(positives), len(rejected), q)


def _start_threshold(scores: np.ndarray, pos: np.ndarray | None = None, neg: np.ndarray | None = None) -> float:
    """A first threshold for cosine scores: between the marked groups when both exist, else the top 1 %."""
    if pos is not None and neg is not None and len(pos) and len(neg):
        value = 0.5 * (float(np.median(pos)) + float(np.median(neg)))
    else:
        value = float(np.quantile(scores, 0.99)) if len(scores) else 0.0
    return float(min(max(value, float(scores.min())), float(scores.max()))) if len(scores) else value


def _logistic(
    matrix: IndexMatrix, seed: np.ndarray | None, positives: np.ndarray, rejected: np.ndarray, marked: np.ndarray
) -> ConceptScores:
    vecs = matrix.vectors
    rows = np.concatenate([positives, rejected])
    x = vecs[rows].astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(rejected))])
    weights = np.where(y == 1, len(y) / (2.0 * len(positives)), len(y) / (2.0 * len(rejected)))
    if seed is None:  # marks only: the prior direction is what the marks' means say
        seed = _unit(vecs[positives].mean(axis=0) - vecs[rejected].mean(axis=0))
    prior = seed.astype(np.float64) * _prior_slope(vecs, seed)
    w, b = fit_logistic(x, y, weights, prior, LOGISTIC_L2)
    logits = (vecs @ w.astype(np.float32)).astype(np.float64) + b
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -700, 700)))  # float64: no ties where float32 would saturate
    cos = float(w @ seed / max(np.linalg.norm(w), 1e-12))
    desc = (
        f"logistic regression on {len(positives)} positive and {len(rejected)} rejected tiles, "
        f"regularised towards the text/examples (cosine {cos:.2f} to them)"
    )
    return ConceptScores(
        METHOD_LOGISTIC, desc, scores, 0.5, marked, len(positives), len(rejected), w.astype(np.float32)
    )


def _prior_slope(vecs: np.ndarray, seed: np.ndarray) -> float:
    """Logits per unit of seed cosine in the prior: ``PRIOR_LOGITS_PER_STD`` per standard deviation of
    the seed's scores over the index (from a sample), so the prior's strength does not depend on the
    model's cosine range."""
    rng = np.random.default_rng(0)
    sample = vecs[np.sort(rng.integers(0, len(vecs), 20000))] if len(vecs) > 20000 else vecs
    spread = float(np.std(sample @ seed))
    return PRIOR_LOGITS_PER_STD / max(spread, 1e-6)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, prior: np.ndarray, l2: float, steps: int = NEWTON_STEPS
) -> tuple[np.ndarray, float]:
    """Weighted logistic regression with penalty ``l2/2·‖w − prior‖²`` (bias free): damped Newton.

    The samples are centred first (embeddings share a large common direction, which would
    otherwise be nearly collinear with the bias). With fewer samples than dimensions,
    ``w − prior`` can only usefully lie in the span of the centred samples, so the problem is
    solved in an orthonormal basis of that span (``xᵀ = QR``, ``w = prior + Qθ``): an n×n system
    with the same penalty instead of a D×D one. Returns (w, b) for the uncentred ``x·w + b``.
    """
    n, d = x.shape
    centre = x.mean(axis=0)
    xc = x - centre
    offset = xc @ prior
    if n < d:
        q, r = np.linalg.qr(xc.T)
        feats = r.T
    else:
        q, feats = None, xc
    m = feats.shape[1]
    theta, b = np.zeros(m), 0.0

    def loss(th: np.ndarray, bias: float) -> float:
        z = offset + feats @ th + bias
        return float(np.sum(weights * (np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * th @ th)

    current = loss(theta, b)
    for _ in range(steps):
        z = offset + feats @ theta + b
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        res = weights * (p - y)
        s = weights * p * (1 - p)
        grad = np.concatenate([feats.T @ res + l2 * theta, [res.sum()]])
        hess = np.empty((m + 1, m + 1))
        hess[:m, :m] = feats.T @ (feats * s[:, None]) + l2 * np.eye(m)
        hess[:m, m] = hess[m, :m] = feats.T @ s
        hess[m, m] = s.sum() + 1e-9
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        scale = 1.0
        while scale > 1e-4:  # halve the step until the loss goes down
            trial = loss(theta - scale * step[:m], b - scale * step[m])
            if trial <= current:
                break
            scale *= 0.5
        theta, b, current = theta - scale * step[:m], b - scale * step[m], trial
        if scale * np.abs(step).max() < 1e-8:
            break
    w = prior + (q @ theta if q is not None else theta)
    return w, float(b - centre @ w)


def score_histogram(scores: np.ndarray, bins: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of all scores, for choosing a threshold."""
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:
        hi = lo + 1e-6
    return np.histogram(scores, bins=bins, range=(lo, hi))


def check_threshold(scores: np.ndarray, threshold: float) -> float:
    """The threshold, if it lies within the scores (so some tiles, not all by accident, are kept).

    Scores are printed with 6 decimals, so a threshold within ``THRESHOLD_SLACK`` of either end
    is taken as that end rather than refused.
    """
    lo, hi = float(scores.min()), float(scores.max())
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold > hi + THRESHOLD_SLACK or threshold < lo - THRESHOLD_SLACK:
        raise EngineError(
            f"The threshold {threshold:g} is outside the scores, which run from {lo:.4f} to "
            f"{hi:.4f}; choose a threshold in that range."
        )
    return min(max(threshold, lo), hi)
