"""Top-k tiles for a text query or for example tiles, over an index's vector store."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import EngineError
from .index import TileIndex, TileRecord, checked_footprint


@dataclass(frozen=True)
class Hit:
    """One result: its 1-based rank, cosine similarity and the tile it points at."""

    rank: int
    score: float
    tile: TileRecord
    #: The tile's scale in an index with several (engine/scales.py); None in a one-scale index.
    scale: int | None = None


def candidate_ids(index: TileIndex, rasters: Sequence[str] | None = None,
                  within_wgs84_wkt: str | None = None) -> np.ndarray | None:
    """Tile ids allowed by a raster and/or area restriction; None means every tile."""
    if not rasters and not within_wgs84_wkt:
        return None
    area = None
    if within_wgs84_wkt:
        from shapely import wkt as shapely_wkt
        from shapely.errors import ShapelyError

        try:
            area = shapely_wkt.loads(within_wgs84_wkt)
        except (ShapelyError, ValueError) as exc:
            raise EngineError(f"The search area is not a valid geometry ({exc}).") from None
    ids = []
    for tile in index.iter_tiles(list(rasters) if rasters else None):
        if area is not None:
            from shapely import wkt as shapely_wkt

            if not area.intersects(shapely_wkt.loads(checked_footprint(tile, wgs84=True))):
                continue
        ids.append(tile.id)
    return np.asarray(ids, dtype=np.int64)


def top_k(index: TileIndex, queries: np.ndarray, k: int, min_score: float | None = None,
          allowed: np.ndarray | None = None, exclude: Sequence[int] = ()) -> list[Hit]:
    """Best ``k`` tiles for the mean of ``queries`` (unit vectors), best first.

    ``k`` larger than the index returns every tile; ``allowed`` restricts the candidates.
    """
    if k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    query = queries.mean(axis=0, keepdims=True).astype(np.float32)
    query /= max(float(np.linalg.norm(query)), 1e-12)
    exclude_set = {int(e) for e in exclude}
    if allowed is None:
        pairs = index.nearest(query, k + len(exclude_set))  # ids the database lacks are dropped there
    else:
        cand_ids, vecs = index.embeddings(allowed.tolist())
        sims = vecs @ query[0]
        order = np.argsort(-sims, kind="stable")[: k + len(exclude_set)]
        pairs = [(float(sims[i]), int(cand_ids[i])) for i in order]
    pairs = [(s, i) for s, i in pairs if i not in exclude_set and (min_score is None or s >= min_score)][:k]
    records = index.tiles([i for _, i in pairs])
    pairs = [(s, i) for s, i in pairs if i in records]  # a tile removed meanwhile is left out, never a KeyError
    return [Hit(rank=n + 1, score=s, tile=records[i]) for n, (s, i) in enumerate(pairs)]


def search_text(index: TileIndex, encoder, query: str, k: int = 10, min_score: float | None = None,
                templates: Sequence[str] | None = None, allowed: np.ndarray | None = None) -> list[Hit]:
    """Tiles that best match a text query, embedded through the prompt templates."""
    return top_k(index, embed_query(encoder, query, templates), k, min_score, allowed)


def embed_query(encoder, query: str, templates: Sequence[str] | None = None) -> np.ndarray:
    """A search text as the (1, D) unit vector search ranks by: the templates filled in, embedded and averaged.

    The one place a query becomes a vector, for search, change between dates and heat maps alike:
    through ``templates`` when given, else the encoder's model's own (``prompts.model_templates``).
    """
    from .prompts import REMOTE_SENSING_TEMPLATES, model_templates

    text = clean_query(query)
    if not templates:
        ref = getattr(encoder.loaded, "ref", None)
        templates = model_templates(ref.to_dict()) if ref is not None else REMOTE_SENSING_TEMPLATES
    if any(encoder.is_truncated(t.format(text)) for t in templates):
        logging.getLogger("rsclip_search.engine").warning(
            "The search text is longer than the model reads (%d tokens); only its beginning is used.",
            encoder.loaded.context_length)
    return encoder.encode_prompts([text], templates)


def search_similar(index: TileIndex, tile_ids: Sequence[int], k: int = 10, min_score: float | None = None,
                   allowed: np.ndarray | None = None) -> list[Hit]:
    """Tiles most like the given example tiles (their mean embedding), examples excluded."""
    if not tile_ids:
        raise EngineError("Choose at least one tile to find similar tiles.")
    ids, vecs = index.embeddings(list(tile_ids))
    missing = set(int(t) for t in tile_ids) - set(ids.tolist())
    if missing:
        raise EngineError(f"Tile {sorted(missing)[0]} is not in the index at {index.folder}.")
    return top_k(index, vecs, k, min_score, allowed, exclude=ids.tolist())


def clean_query(query: str) -> str:
    """A query with surrounding blanks removed; an empty one is refused."""
    text = " ".join((query or "").split())
    if not text:
        raise EngineError("The search text is empty; type what to look for, e.g. 'airport runway'.")
    return text
