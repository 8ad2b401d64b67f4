"""One round of the find-every-X loop: a stored concept scored against its index.

``engine.jobs`` opens the index and calls these; the dock, the command line and the toolbox
all get the same ``ConceptRound`` (best tiles, the tiles to label next, the method in use, the
score histogram) and the same ``ConceptAreas``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .concepts import Concept, get_concept, resolve_marks
from .search import Hit
from .errors import EngineError
from .scoring import ConceptScores, IndexMatrix, index_matrix, score_concept, score_histogram

if TYPE_CHECKING:
    from .areas import AreasResult

VERDICT_OF_KIND = {"example": "example", "accepted": "accepted", "rejected": "rejected"}


@dataclass
class ConceptRound:
    """Every tile scored for a concept, with what to show: best tiles, tiles to label next, histogram."""

    concept: Concept
    scores: ConceptScores = field(repr=False)
    best: list                      # engine.search.Hit, best first
    next: list                      # engine.search.Hit, least certain first
    marks: dict[int, str]           # current tile id → example / accepted / rejected
    dropped_marks: int              # marks whose tile is no longer in the index
    histogram: tuple[np.ndarray, np.ndarray] = field(repr=False)
    seconds: float = 0.0
    index_dir: str = ""
    marked_hits: list = field(default_factory=list)  # the marked tiles with their scores now (rank 0)
    model: str = ""  # the label of the index's model (recorded with the results)

    @property
    def method(self) -> str:
        return self.scores.method

    @property
    def threshold(self) -> float:
        return self.scores.threshold

    @property
    def tile_count(self) -> int:
        return int(len(self.scores.scores))

    def count_above(self, threshold: float) -> int:
        """How many tiles score at or above ``threshold`` (a millisecond per million tiles: live in the dock)."""
        return int(np.count_nonzero(self.scores.scores >= threshold))

    def summary(self) -> str:
        c = self.concept
        text = (f"Concept '{c.name}': {self.scores.description}; {c.accepted} accepted, {c.rejected} rejected, "
                f"{c.examples} example(s); {self.tile_count} tiles scored in {self.seconds:.2f} s.")
        if self.dropped_marks:
            text += f" {self.dropped_marks} marked tile(s) are no longer in the index and were left out."
        return text


@dataclass
class ConceptAreas:
    """Areas of a concept above a threshold, with the round they came from and the GeoPackage written."""

    round: ConceptRound
    result: AreasResult
    path: Path | None = None
    matrix: IndexMatrix | None = field(default=None, repr=False)

    def area_rows(self) -> list[tuple[dict, str]]:
        """(attributes of ``engine.areas.AREA_FIELDS``, outline WKT) per area, biggest first."""
        return area_rows(self.round, self.result)

    def tile_rows(self) -> list[tuple[dict, str]]:
        """(attributes of ``engine.areas.AREA_TILE_FIELDS``, footprint WKT) per tile of the areas."""
        if self.matrix is None:
            raise ValueError("tile rows need the index matrix the areas were made from")
        return area_tile_rows(self.matrix, self.round, self.result)

    def summary(self) -> str:
        r = self.result
        tiles = len(r.tile_rows)
        text = (f"{len(r.areas)} area(s) of '{self.round.concept.name}' from {tiles} tile(s) scoring at least "
                f"{r.threshold:.4g}; {r.total_m2 / 10_000:.2f} ha in all.")
        if self.path:
            text += f" Wrote {self.path}."
        return text


def concept_vectors(concept: Concept) -> tuple[np.ndarray | None, np.ndarray | None]:
    return concept.query_vec, concept.negative_vec


def play_round(idx, name: str, top_k: int = 20, next_k: int = 10, use_marks: bool | None = None,
               hide_marked: bool = True, progress=None, cancel=None) -> ConceptRound:
    """Score every tile of ``idx`` for the stored concept ``name`` and pick what to show."""
    from .progress import check_cancel

    concept = get_concept(idx.conn, name, f"the index at {idx.folder}")
    if use_marks and not (concept.accepted or concept.rejected):  # refuse before reading a big matrix
        raise EngineError(f"The concept '{concept.name}' has no accepted or rejected tiles yet; accept or reject "
                          "some results, then refine.")
    matrix = index_matrix(idx, progress)
    check_cancel(cancel)
    start = time.perf_counter()
    marks, dropped = resolve_marks(idx.conn, concept)
    rows = {kind: matrix.rows(ids) for kind, ids in marks.items()}
    text, negative = concept_vectors(concept)
    scores = score_concept(matrix, text, negative, rows["example"], rows["accepted"], rows["rejected"],
                           use_marks=use_marks, name=f"The concept '{concept.name}'")
    seconds = time.perf_counter() - start
    by_tile = {int(i): kind for kind, ids in marks.items() for i in ids.tolist()}
    best_rows = scores.best(top_k, exclude_marked=hide_marked)
    next_rows = scores.least_certain(next_k)
    marked = [Hit(0, h.score, h.tile) for h in _hits(idx, matrix, scores, matrix.rows(sorted(by_tile)))]
    return ConceptRound(concept, scores, _hits(idx, matrix, scores, best_rows), _hits(idx, matrix, scores, next_rows),
                        by_tile, dropped, score_histogram(scores.scores), seconds, str(idx.folder), marked,
                        _model_label(idx))


def text_round(idx, concept: Concept, progress=None, cancel=None) -> ConceptRound:
    """A round for an unsaved, text-only concept (e.g. the toolbox given a query and no concept)."""
    from .progress import check_cancel

    matrix = index_matrix(idx, progress)
    check_cancel(cancel)
    start = time.perf_counter()
    scores = score_concept(matrix, concept.query_vec, concept.negative_vec, name=f"The query '{concept.query}'")
    return ConceptRound(concept, scores, [], [], {}, 0, score_histogram(scores.scores), time.perf_counter() - start,
                        str(idx.folder), model=_model_label(idx))


def _model_label(idx) -> str:
    from .jobs import model_label

    return model_label(idx.model)


def _hits(idx, matrix: IndexMatrix, scores: ConceptScores, rows: np.ndarray) -> list:
    ids = matrix.ids[rows]
    records = idx.tiles(ids.tolist())
    return [Hit(rank=n + 1, score=float(scores.scores[r]), tile=records[int(i)])
            for n, (r, i) in enumerate(zip(rows.tolist(), ids.tolist())) if int(i) in records]


def areas_of_round(idx, rnd: ConceptRound, threshold: float | None, out: str | Path | None = None) -> ConceptAreas:
    """Dissolve the round's tiles at or above ``threshold`` (default: the method's starting threshold)
    into areas; with ``out``, write them and their tiles to a GeoPackage that records the concept."""
    from .areas import make_areas

    matrix = index_matrix(idx)
    threshold = rnd.threshold if threshold is None else float(threshold)
    result = make_areas(matrix, rnd.scores.scores, threshold)
    path = write_areas(out, matrix, rnd, result) if out else None
    return ConceptAreas(rnd, result, path, matrix)


def area_metadata(rnd: ConceptRound, threshold: float) -> dict:
    c = rnd.concept
    return {"concept": c.name, "query": c.query, "negative": c.negative, "method": rnd.method,
            "examples": c.examples, "accepted": c.accepted, "rejected": c.rejected, "marks": c.marks,
            "threshold": float(threshold), "model": rnd.model}


def area_rows(rnd: ConceptRound, result) -> list[tuple[dict, str]]:
    meta = area_metadata(rnd, result.threshold)
    return [({"area_id": a.id, "tiles": a.tiles, "best_score": a.best_score, "mean_score": a.mean_score,
              "area_m2": a.area_m2, "area_ha": a.area_ha, "rasters": "; ".join(a.rasters), **meta}, a.outline_wkt)
            for a in result.areas]


def area_tile_rows(matrix: IndexMatrix, rnd: ConceptRound, result) -> list[tuple[dict, str]]:
    import shapely

    from .areas import tile_polygons

    polys = shapely.to_wkt(tile_polygons(matrix, result.tile_rows, result.crs_wkt), rounding_precision=-1,
                           output_dimension=2)  # explicit: inside QGIS desktop the default is refused
    ids = matrix.ids[result.tile_rows].tolist()
    scores = rnd.scores.scores[result.tile_rows].tolist()
    rasters = [matrix.rasters[int(r)].path for r in matrix.raster_ids[result.tile_rows].tolist()]
    name = rnd.concept.name
    return [({"tile_id": i, "score": s, "area_id": int(a), "verdict": rnd.marks.get(i, ""), "raster": r,
              "concept": name, "model": rnd.model}, wkt)
            for i, s, a, r, wkt in zip(ids, scores, result.tile_area.tolist(), rasters, polys)]


def write_areas(out: str | Path, matrix: IndexMatrix, rnd: ConceptRound, result) -> Path:
    """The areas and their tiles as two layers ("areas", "tiles") of one GeoPackage."""
    from .areas import AREA_FIELDS, AREA_TILE_FIELDS, write_layers_gpkg

    c = rnd.concept
    meta = area_metadata(rnd, result.threshold)
    what = f"concept '{c.name}'" + (f" (text “{c.query}”)" if c.query else "")
    desc = (f"Areas of {what}: tiles scoring at least {result.threshold:.4g} by {rnd.method}, dissolved where they "
            f"touch or overlap; {c.accepted} accepted, {c.rejected} rejected, {c.examples} example(s).")
    return write_layers_gpkg(out, [
        ("areas", "multipolygon", result.crs_wkt, AREA_FIELDS, area_rows(rnd, result), desc),
        ("tiles", "polygon", result.crs_wkt, AREA_TILE_FIELDS, area_tile_rows(matrix, rnd, result),
         f"Tiles of {what} scoring at least {result.threshold:.4g}, with their area."),
    ], {f"RSCLIP_{k.upper()}": v for k, v in meta.items()})


def tiles_of(idx, ids: Sequence[int]) -> list:
    """TileRecords for tile ids, in the order given; an id not in the index is refused by number."""
    ids = [int(i) for i in ids]
    records = idx.tiles(ids)
    missing = [i for i in ids if i not in records]
    if missing:
        raise EngineError(f"Tile {missing[0]} is not in the index at {idx.folder}; mark tiles from its results.")
    return [records[i] for i in dict.fromkeys(ids)]
