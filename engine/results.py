"""Result rows: one schema per kind of result, the same for the command line, the dock and the toolbox.

A ``ResultTable`` holds the fields of a kind of result and, per tile, its values in field order and its
footprint in one CRS (the CRS most of the tiles share; the others are reprojected). The command line's
and the dock's GeoPackages (``export.write_tiles_gpkg``), the dock's map layers (``plugin/layers.py``) and
the toolbox's outputs (``plugin/processing/base.py``) are all written from it, so a result has the same
fields wherever it was made. Every row records where it came from: the search text (or the concept, or
the class set) and the model, so a GeoPackage read months later still says what it answers.

Building a table reprojects footprints: in the plugin, do it in the task, off the GUI thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: Field names and kinds ("int", "real", "str") of each kind of result.
HIT_FIELDS = (("rank", "int"), ("score", "real"), ("raster", "str"), ("tile_id", "int"), ("query", "str"),
              ("model", "str"))
LABEL_FIELDS = (("label", "str"), ("probability", "real"), ("margin", "real"), ("raster", "str"), ("tile_id", "int"),
                ("classes", "str"), ("model", "str"))
FOOTPRINT_FIELDS = (("raster", "str"), ("tile_id", "int"), ("model", "str"))
CONCEPT_FIELDS = (("rank", "int"), ("score", "real"), ("raster", "str"), ("tile_id", "int"), ("mark", "str"),
                  ("concept", "str"), ("model", "str"))
FIELDS = {"search": HIT_FIELDS, "similar": HIT_FIELDS, "labels": LABEL_FIELDS, "footprints": FOOTPRINT_FIELDS,
          "concept": CONCEPT_FIELDS}
#: Hits of an index with several scales (engine/scales.py) also say their scale.
SCALED_HIT_FIELDS = (*HIT_FIELDS, ("scale", "int"))


@dataclass(frozen=True)
class ResultTable:
    """Rows of one kind of result ("search", "similar", "labels", "footprints", "concept") in one CRS."""

    kind: str
    fields: tuple
    crs_wkt: str
    rows: list  # (values in field order, footprint WKT in crs_wkt)
    classes: tuple = ()  # labels: the classes, in order (for one colour each)

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[dict]:
        """The rows as field → value dicts (for JSON, or a test)."""
        names = [name for name, _ in self.fields]
        return [dict(zip(names, values)) for values, _ in self.rows]


def _table(kind: str, tiles: Sequence, values: Sequence[list], classes: tuple = (), fields: tuple = ()) -> ResultTable:
    from .export import common_crs, tile_geometry_wkt

    fields = fields or FIELDS[kind]
    assert all(len(v) == len(fields) for v in values), f"rows of {kind} have {len(fields)} values"
    crs_wkt = common_crs(tiles)
    return ResultTable(kind, fields, crs_wkt, [(list(v), tile_geometry_wkt(t, crs_wkt)) for t, v in zip(tiles, values)],
                       classes)


def hit_table(hits: Sequence, query: str, model: str, kind: str = "search") -> ResultTable:
    """A search ("search") or similar-tiles ("similar") result; ``query`` is the text, or what the tiles are like."""
    if kind not in ("search", "similar"):
        raise ValueError(f"hits are 'search' or 'similar', not {kind!r}")
    fields = hit_fields(hits)
    return _table(kind, [h.tile for h in hits],
                  [[int(h.rank), float(h.score), h.tile.raster, int(h.tile.id), query, model, h.scale][:len(fields)]
                   for h in hits], fields=fields)


def hit_fields(hits: Sequence) -> tuple:
    """The fields of hits: with ``scale`` when they come from an index with several scales."""
    return SCALED_HIT_FIELDS if any(getattr(h, "scale", None) is not None for h in hits) else HIT_FIELDS


def label_table(labels: Sequence, classes: Sequence[str], model: str, class_set: str = "") -> ResultTable:
    """Zero-shot labels; the ``classes`` field names the shipped class set, else lists the classes."""
    source = class_set or ", ".join(classes)
    return _table("labels", [lab.tile for lab in labels],
                  [[lab.label, float(lab.probability), float(lab.margin), lab.tile.raster,
                    int(lab.tile.id), source, model] for lab in labels], tuple(classes))


def footprint_table(tiles: Sequence, model: str) -> ResultTable:
    """Indexed tiles' footprints (what "Build semantic index" outputs)."""
    return _table("footprints", tiles, [[t.raster, int(t.id), model] for t in tiles])


def concept_table(hits: Sequence, marks: dict, concept: str, model: str, marked_hits: Sequence = ()) -> ResultTable:
    """A concept round's listed tiles and its marked ones (rank empty for marked tiles not listed) with their mark."""
    listed = {int(h.tile.id) for h in hits}
    everything = [*hits, *(h for h in marked_hits if int(h.tile.id) not in listed)]
    return _table("concept", [h.tile for h in everything],
                  [[int(h.rank) or None, float(h.score), h.tile.raster, int(h.tile.id),
                    marks.get(int(h.tile.id), ""), concept, model] for h in everything])


def similar_query(tile_ids: Sequence[int]) -> str:
    """What a similar-tiles result answers, for its ``query`` field: "similar to tiles 12, 40"."""
    ids = sorted({int(i) for i in tile_ids})
    shown = ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    return f"similar to tile{'s' if len(ids) != 1 else ''} {shown}"


def change_table(result) -> ResultTable:
    """A change search's ranked places (``change.ChangeResult``): the ground both tiles show, both scores, the
    difference and the query, in the result's CRS."""
    from .change import CHANGE_FIELDS, change_values

    rows = [([change_values(r, result)[name] for name, _ in CHANGE_FIELDS], r.footprint_wkt) for r in result.rows]
    return ResultTable("change", CHANGE_FIELDS, result.crs_wkt, rows)
