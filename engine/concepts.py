"""Concepts: named searches stored in the index's database, with the tiles the user marked.

A concept ("solar farms") holds an optional text query, an optional negative text ("but not
runway markings"), both also stored embedded by the index's model (so scoring a concept needs
no model), and marks: tiles given as examples, accepted or rejected. It lives in two SQLite
tables next to the tiles, so it survives restarts and travels with the index; it never
touches the tile embeddings.

Marks are keyed by raster path + pixel window, not by tile id alone, and keep the tile's
footprint: re-indexing a raster gives its tiles new ids, but the same windows, so the marks
find their tiles again. A mark whose window is no longer in the index (its raster removed,
or re-indexed with other tile settings) is kept, left out of scoring (the round says how
many), and still exported as training data.
"""
from __future__ import annotations

import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import EngineError

#: The concept tables, created by the index's format-3 migration (``index._concept_tables``).
CONCEPT_SCHEMA = """
CREATE TABLE IF NOT EXISTS concepts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    query TEXT NOT NULL DEFAULT '',
    negative TEXT NOT NULL DEFAULT '',
    query_vec BLOB,
    negative_vec BLOB,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS concept_marks (
    concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('example', 'accepted', 'rejected')),
    raster TEXT NOT NULL,
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    tile_id INTEGER NOT NULL,
    footprint TEXT NOT NULL,
    crs_wkt TEXT NOT NULL,
    marked REAL NOT NULL,
    PRIMARY KEY (concept_id, raster, col_off, row_off, width, height)
);
CREATE INDEX IF NOT EXISTS concept_marks_concept ON concept_marks(concept_id, kind);
"""

KINDS = ("example", "accepted", "rejected")
MAX_NAME = 100


@contextmanager
def _writing(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction; a database that cannot be written (disk full, locked, read-only) is one sentence."""
    try:
        with conn:
            yield
    except sqlite3.OperationalError as exc:
        raise EngineError(f"Cannot store the concept in the index ({exc}); free some disk space or wait for "
                          "other writers, then try again.") from None


def has_concept_tables(conn: sqlite3.Connection) -> bool:
    """False for an older index read without updating it (read-only media): it has no concepts yet."""
    row = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN "
                       "('concepts', 'concept_marks')").fetchone()
    return int(row[0]) == 2


@dataclass(frozen=True)
class Concept:
    """A stored concept and how many tiles of each kind it has marked."""

    id: int
    name: str
    query: str
    negative: str
    query_vec: np.ndarray | None
    negative_vec: np.ndarray | None
    created: float
    updated: float
    examples: int = 0
    accepted: int = 0
    rejected: int = 0

    @property
    def marks(self) -> int:
        return self.examples + self.accepted + self.rejected

    def describe(self) -> str:
        parts = [f"'{self.name}'"]
        if self.query:
            parts.append(f"text “{self.query}”")
        if self.negative:
            parts.append(f"but not “{self.negative}”")
        parts.append(f"{self.examples} example(s), {self.accepted} accepted, {self.rejected} rejected")
        return ", ".join(parts)


@dataclass(frozen=True)
class Mark:
    """One marked tile: its kind, where it is (raster + window), its id when marked and its footprint."""

    kind: str
    raster: str
    window: tuple[int, int, int, int]
    tile_id: int
    footprint_wkt: str
    crs_wkt: str


def clean_name(name: str) -> str:
    """A concept name with blanks tidied; empty or over-long names are refused."""
    text = " ".join((name or "").split())
    if not text:
        raise EngineError("A concept needs a name, e.g. 'solar farms'.")
    if len(text) > MAX_NAME:
        raise EngineError(f"A concept name may have at most {MAX_NAME} characters.")
    return text


def _vec(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


def _blob(vec: np.ndarray | None) -> bytes | None:
    return None if vec is None else np.ascontiguousarray(vec, dtype=np.float32).reshape(-1).tobytes()


_CONCEPT_SQL = ("SELECT c.id, c.name, c.query, c.negative, c.query_vec, c.negative_vec, c.created, c.updated,"
                " (SELECT COUNT(*) FROM concept_marks m WHERE m.concept_id=c.id AND m.kind='example'),"
                " (SELECT COUNT(*) FROM concept_marks m WHERE m.concept_id=c.id AND m.kind='accepted'),"
                " (SELECT COUNT(*) FROM concept_marks m WHERE m.concept_id=c.id AND m.kind='rejected')"
                " FROM concepts c")


def _concept(row) -> Concept:
    return Concept(row[0], row[1], row[2], row[3], _vec(row[4]), _vec(row[5]), row[6], row[7], row[8], row[9], row[10])


def list_concepts(conn: sqlite3.Connection) -> list[Concept]:
    """Every concept of the index, by name (an index without concept tables has none)."""
    if not has_concept_tables(conn):
        return []
    return [_concept(r) for r in conn.execute(_CONCEPT_SQL + " ORDER BY c.name COLLATE NOCASE")]


def get_concept(conn: sqlite3.Connection, name: str, where: str = "this index") -> Concept:
    """The concept called ``name`` (case-insensitive); an unknown name is refused with the known ones."""
    text = " ".join((name or "").split())
    row = None
    if has_concept_tables(conn):
        row = conn.execute(_CONCEPT_SQL + " WHERE c.name = ? COLLATE NOCASE", (text,)).fetchone()
    if row is None:
        known = [c.name for c in list_concepts(conn)]
        hint = f"; its concepts are: {', '.join(known)}" if known else "; it has none yet (create one first)"
        raise EngineError(f"There is no concept '{text}' in {where}{hint}.")
    return _concept(row)


def create_concept(conn: sqlite3.Connection, name: str, query: str = "", negative: str = "",
                   query_vec: np.ndarray | None = None, negative_vec: np.ndarray | None = None) -> Concept:
    """Store a new concept; a name already used (in any letter case) is refused."""
    name = clean_name(name)
    now = time.time()
    try:
        with _writing(conn):
            conn.execute("INSERT INTO concepts(name, query, negative, query_vec, negative_vec, created, updated)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (name, query, negative, _blob(query_vec), _blob(negative_vec), now, now))
    except sqlite3.IntegrityError:
        raise EngineError(f"There is already a concept called '{name}'; choose another name.") from None
    return get_concept(conn, name)


def set_concept_text(conn: sqlite3.Connection, concept: Concept, query: str, negative: str,
                     query_vec: np.ndarray | None, negative_vec: np.ndarray | None) -> Concept:
    """Replace the concept's text query and negative text (and their embeddings); marks stay."""
    with _writing(conn):
        conn.execute("UPDATE concepts SET query=?, negative=?, query_vec=?, negative_vec=?, updated=? WHERE id=?",
                     (query, negative, _blob(query_vec), _blob(negative_vec), time.time(), concept.id))
    return get_concept(conn, concept.name)


def rename_concept(conn: sqlite3.Connection, old: str, new: str) -> Concept:
    concept = get_concept(conn, old)
    new = clean_name(new)
    try:
        with _writing(conn):
            conn.execute("UPDATE concepts SET name=?, updated=? WHERE id=?", (new, time.time(), concept.id))
    except sqlite3.IntegrityError:
        raise EngineError(f"There is already a concept called '{new}'; choose another name.") from None
    return get_concept(conn, new)


def delete_concept(conn: sqlite3.Connection, name: str) -> Concept:
    """Remove a concept and its marks; returns what was removed."""
    concept = get_concept(conn, name)
    with _writing(conn):
        conn.execute("DELETE FROM concept_marks WHERE concept_id=?", (concept.id,))
        conn.execute("DELETE FROM concepts WHERE id=?", (concept.id,))
    return concept


def mark_tiles(conn: sqlite3.Connection, concept: Concept, kind: str, tiles: Iterable) -> int:
    """Mark tiles (``TileRecord``s) as examples, accepted or rejected; a tile marked before changes its mark."""
    if kind not in KINDS:
        raise EngineError(f"A mark is one of {', '.join(KINDS)}, not '{kind}'.")
    now = time.time()
    rows = [(concept.id, kind, t.raster, *t.window, t.id, t.footprint_wkt, t.crs_wkt, now) for t in tiles]
    with _writing(conn):
        conn.executemany("INSERT OR REPLACE INTO concept_marks(concept_id, kind, raster, col_off, row_off, width,"
                         " height, tile_id, footprint, crs_wkt, marked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("UPDATE concepts SET updated=? WHERE id=?", (now, concept.id))
    return len(rows)


def unmark_tiles(conn: sqlite3.Connection, concept: Concept, tiles: Iterable | None = None) -> int:
    """Forget the marks on these tiles (all of the concept's marks when ``tiles`` is None)."""
    with _writing(conn):
        if tiles is None:
            n = conn.execute("DELETE FROM concept_marks WHERE concept_id=?", (concept.id,)).rowcount
        else:
            n = sum(conn.execute("DELETE FROM concept_marks WHERE concept_id=? AND raster=? AND col_off=? AND"
                                 " row_off=? AND width=? AND height=?", (concept.id, t.raster, *t.window)).rowcount
                    for t in tiles)
        conn.execute("UPDATE concepts SET updated=? WHERE id=?", (time.time(), concept.id))
    return n


def concept_marks(conn: sqlite3.Connection, concept: Concept) -> list[Mark]:
    rows = conn.execute("SELECT kind, raster, col_off, row_off, width, height, tile_id, footprint, crs_wkt"
                        " FROM concept_marks WHERE concept_id=? ORDER BY marked, raster, row_off, col_off",
                        (concept.id,))
    return [Mark(r[0], r[1], (r[2], r[3], r[4], r[5]), r[6], r[7], r[8]) for r in rows]


def resolve_marks(conn: sqlite3.Connection, concept: Concept) -> tuple[dict[str, np.ndarray], int]:
    """Current tile ids of the concept's marks, by kind, and how many marks have no tile in the index now."""
    rows = conn.execute(
        "SELECT m.kind, t.id FROM concept_marks m"
        " LEFT JOIN rasters r ON r.path = m.raster"
        " LEFT JOIN tiles t ON t.raster_id = r.id AND t.col_off = m.col_off AND t.row_off = m.row_off"
        " AND t.width = m.width AND t.height = m.height"
        " WHERE m.concept_id = ?", (concept.id,)).fetchall()
    out = {kind: np.asarray(sorted(i for k, i in rows if k == kind and i is not None), dtype=np.int64)
           for kind in KINDS}
    return out, sum(1 for _, i in rows if i is None)


def slug(name: str) -> str:
    """A file-name-safe form of a concept name (for chip and output file names)."""
    text = re.sub(r"[^\w.-]+", "_", name.strip(), flags=re.UNICODE).strip("._")
    return text or "concept"


def parse_tile_ids(values: Sequence[str] | str | None) -> list[int]:
    """Tile ids from '12,15 18' style text (CLI and dock input); anything else is refused readably."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    ids: list[int] = []
    for value in values:
        for part in re.split(r"[,\s]+", str(value).strip()):
            if not part:
                continue
            try:
                ids.append(int(part))
            except ValueError:
                raise EngineError(f"'{part}' is not a tile id; tile ids are whole numbers such as 12.") from None
    return ids
