"""Top-k tiles for a text query or for example tiles, over an index's vector store.

A search may be restricted to some rasters and/or to an area (WGS84). The allowed tiles come
from SQL, not from a Python loop over every tile: a raster's tiles through the ``tiles_raster``
index, an area's through the R*Tree of tile bounds (``tile_bounds``) and then an exact test of
each tile's WGS84 footprint against the area (only where its bounding box is not inside the
area). The vector store then searches only among the allowed ids (``TileIndex.nearest``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EngineError
from .index import _LIVE, TileIndex, TileRecord


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
    """Ascending ids of the tiles allowed by a raster and/or area restriction; None means every tile.

    A tile is within an area when its WGS84 footprint intersects it. Rasters of which none is in
    the index are refused with a sentence (a search in them could only come back empty).
    """
    if not rasters and not within_wgs84_wkt:
        return None
    ids = raster_tile_ids(index, rasters) if rasters else None
    if within_wgs84_wkt:
        inside = tiles_within(index, within_wgs84_wkt)
        ids = inside if ids is None else np.intersect1d(ids, inside, assume_unique=True)
    assert ids is not None
    return ids


def raster_tile_ids(index: TileIndex, rasters: Sequence[str]) -> np.ndarray:
    """Ascending ids of the searchable tiles of the given rasters (paths as the index stores them)."""
    paths = list(dict.fromkeys(str(p) for p in rasters))
    marks = ",".join("?" * len(paths))
    known = [r[0] for r in index.conn.execute(f"SELECT r.id FROM rasters r WHERE {_LIVE} AND r.path IN ({marks})",
                                               paths)]
    if not known:
        shown = ", ".join(Path(p).name for p in paths[:3]) + (" …" if len(paths) > 3 else "")
        verb, it = ("is", "it") if len(paths) == 1 else ("are", "them")
        raise EngineError(f"{shown} {verb} not in the index at {index.folder}; index {it} first, or search "
                          f"without restricting to {it}.")
    return index.live_ids(known)


def _area(within_wgs84_wkt: str):
    """The search area as a prepared shapely geometry; a malformed one is refused with a sentence."""
    import shapely
    from shapely.errors import ShapelyError

    try:
        area = shapely.from_wkt(within_wgs84_wkt)
    except (ShapelyError, ValueError, TypeError) as exc:
        raise EngineError(f"The search area is not a valid geometry ({exc}).") from None
    if area is None or area.is_empty:
        raise EngineError("The search area is empty; draw or choose an area with some extent.")
    if not area.is_valid:
        area = shapely.make_valid(area)
    shapely.prepare(area)
    return area


def tiles_within(index: TileIndex, within_wgs84_wkt: str) -> np.ndarray:
    """Ascending ids of the searchable tiles whose WGS84 footprint intersects the area."""
    import shapely

    area = _area(within_wgs84_wkt)
    minx, miny, maxx, maxy = area.bounds
    rows = index.conn.execute(
        "SELECT t.id, t.raster_id, t.col_off, t.row_off, t.width, t.height, b.min_lon, b.min_lat, b.max_lon,"
        f" b.max_lat FROM tile_bounds b JOIN tiles t ON t.id = b.id JOIN rasters r ON r.id = t.raster_id AND {_LIVE}"
        " WHERE b.max_lon >= ? AND b.min_lon <= ? AND b.max_lat >= ? AND b.min_lat <= ?",
        (minx, maxx, miny, maxy)).fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64)
    try:
        table = np.array([r[:6] for r in rows], dtype=np.int64)
        boxes = np.array([r[6:] for r in rows], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise EngineError(f"A tile of the index at {index.folder} has a damaged footprint or window; index the "
                          "rasters again into a new folder.") from None
    keep = shapely.contains(area, shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))
    edge = np.flatnonzero(~keep)
    if len(edge):
        keep[edge] = _footprints_intersect(index, area, table[edge])
    geometries = index.raster_geometries()
    for rid in np.unique(table[keep, 1]).tolist():
        if rid not in geometries or not geometries[rid][2].placeable:
            raise _damaged_footprint(index, table[keep][table[keep, 1] == rid][0, 0], geometries.get(rid))
    return np.sort(table[keep, 0])


def _footprints_intersect(index: TileIndex, area, table: np.ndarray) -> np.ndarray:
    """Exact test of (n, 6) id/raster/window rows: does each tile's WGS84 footprint intersect the area?"""
    import shapely

    geometries = index.raster_geometries()
    out = np.zeros(len(table), dtype=bool)
    for rid in np.unique(table[:, 1]).tolist():
        rows = np.flatnonzero(table[:, 1] == rid)
        got = geometries.get(rid)
        if got is None:
            continue  # an orphan tile (its raster row is gone): not searchable
        lonlat = got[2].wgs84_corners(table[rows, 2:6])
        bad = ~np.isfinite(lonlat).all(axis=(1, 2))
        if bad.any():
            raise _damaged_footprint(index, table[rows[np.flatnonzero(bad)[0]], 0], got)
        out[rows] = shapely.intersects(area, shapely.polygons(lonlat))
    return out


def _damaged_footprint(index: TileIndex, tile_id, got) -> EngineError:
    name = Path(got[0]).name if got else "its raster"
    return EngineError(f"Tile {int(tile_id)} of {name} has a damaged footprint in the index at {index.folder}; "
                       "index the rasters again into a new folder.")


def tiles_at(index: TileIndex, lon: float, lat: float) -> list[int]:
    """Ids of the searchable tiles whose WGS84 footprint covers a point, ascending (a point meets what covers it)."""
    return tiles_within(index, f"POINT ({float(lon)!r} {float(lat)!r})").tolist()


def top_k(index: TileIndex, queries: np.ndarray, k: int, min_score: float | None = None,
          allowed: np.ndarray | None = None, exclude: Sequence[int] = (), kind: str | None = None) -> list[Hit]:
    """Best ``k`` tiles for the mean of ``queries`` (unit vectors), best first.

    ``k`` larger than the index returns every tile; ``allowed`` (ascending ids) restricts the candidates;
    ``kind`` ("text" or "image") says what the queries are, for the search depth calibrated for them.
    """
    if k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    query = queries.mean(axis=0, keepdims=True).astype(np.float32)
    query /= max(float(np.linalg.norm(query)), 1e-12)
    exclude_set = {int(e) for e in exclude}
    pairs = index.nearest(query, k + len(exclude_set), allowed, kind)  # exact scores; ids the database lacks dropped
    pairs = [(s, i) for s, i in pairs if i not in exclude_set and (min_score is None or s >= min_score)][:k]
    records = index.tiles([i for _, i in pairs])
    pairs = [(s, i) for s, i in pairs if i in records]  # a tile removed meanwhile is left out, never a KeyError
    return [Hit(rank=n + 1, score=s, tile=records[i]) for n, (s, i) in enumerate(pairs)]


def search_text(index: TileIndex, encoder, query: str, k: int = 10, min_score: float | None = None,
                templates: Sequence[str] | None = None, allowed: np.ndarray | None = None) -> list[Hit]:
    """Tiles that best match a text query, embedded through the prompt templates."""
    return top_k(index, embed_query(encoder, query, templates), k, min_score, allowed, kind="text")


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
    return top_k(index, vecs, k, min_score, allowed, exclude=ids.tolist(), kind="image")


def clean_query(query: str) -> str:
    """A query with surrounding blanks removed; an empty one is refused."""
    text = " ".join((query or "").split())
    if not text:
        raise EngineError("The search text is empty; type what to look for, e.g. 'airport runway'.")
    return text


def area_from_text(value: str) -> str:
    """A search area typed on the command line as WGS84 WKT, from WKT or a vector file (``FILE`` or ``FILE:LAYER``).

    A file's features (all of them, of its only layer or the named one) are unioned and converted
    to WGS84; WKT is taken as longitude/latitude.
    """
    import shapely

    text = (value or "").strip()
    if not text:
        raise EngineError("--within needs a vector file or a WKT polygon in longitude/latitude.")
    path, layer = Path(text).expanduser(), None
    if not path.exists() and ":" in text and Path(text.rsplit(":", 1)[0]).expanduser().exists():
        path, layer = Path(text.rsplit(":", 1)[0]).expanduser(), text.rsplit(":", 1)[1]
    if not path.exists():
        if not text.lstrip("(").upper().startswith(("POLYGON", "MULTIPOLYGON", "POINT", "LINESTRING",
                                                     "MULTILINESTRING", "MULTIPOINT", "GEOMETRYCOLLECTION")):
            raise EngineError(f"{text[:80]!r} is neither a vector file nor WKT (e.g. 'POLYGON ((lon lat, …))').")
        return _area(text).wkt
    geoms = _file_geometries_wgs84(path, layer)
    if not geoms:
        raise EngineError(f"{path.name} has no geometries to search within.")
    return shapely.union_all(geoms).wkt


def _file_geometries_wgs84(path: Path, layer_name: str | None) -> list:
    import shapely
    from osgeo import ogr, osr

    from .tiling import _quiet_gdal

    with _quiet_gdal():
        try:
            ds = ogr.Open(str(path))
        except RuntimeError:
            ds = None
    if ds is None or ds.GetLayerCount() == 0:
        raise EngineError(f"{path.name} is not a vector file GDAL can read (GeoPackage, GeoJSON, shapefile …).")
    names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
    if layer_name is None and len(names) > 1:
        raise EngineError(f"{path.name} has {len(names)} layers ({', '.join(names[:5])}); name one as "
                          f"{path.name}:LAYER.")
    if layer_name is not None and layer_name not in names:
        raise EngineError(f"{path.name} has no layer {layer_name!r} (it has {', '.join(names[:5])}).")
    lyr = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs = lyr.GetSpatialRef()
    ct = None
    if srs is not None:
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        ct = osr.CoordinateTransformation(srs, wgs84)
    out = []
    with _quiet_gdal():
        for feature in lyr:
            geom = feature.GetGeometryRef()
            if geom is None or geom.IsEmpty():
                continue
            geom = geom.Clone()
            if ct is not None and geom.Transform(ct) != 0:
                raise EngineError(f"A geometry of {path.name} cannot be converted to longitude/latitude.")
            out.append(shapely.from_wkb(bytes(geom.ExportToIsoWkb())))
    return out
