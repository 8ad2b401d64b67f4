"""An index is a folder: a SQLite database of rasters, tiles and embeddings, plus a FAISS cache.

SQLite is the source of truth and is written in transactions (one per batch of tiles), so an
interrupted run leaves every committed batch searchable and nothing half-written. One writer at a
time holds a lock file; readers see the last committed state (SQLite WAL mode).

What readers can rely on:

* Re-indexing a raster that changed writes its new tiles under a *staging* row that readers do not
  see; one transaction at the end swaps it in and drops the old tiles. Until then the old tiles stay
  searchable; an interrupted re-index leaves the old tiles (and resumes the staging row next time).
* Every change a reader can see bumps the ``generation`` and draws a new random ``revision``, recorded
  in ``history``; tile ids are never reused (``next_tile_id``) and a tile's embedding never changes.
* The FAISS file is a cache bound to its database by the index's random ``index_id``, the
  generation, the revision and a digest of its searchable rasters and tile-id range (``vectors.json``,
  which also holds the file's size and checksums and the cache's vector count). A cache of an
  earlier state of the same database (its revision is in ``history``) is brought up to date by
  adding and removing vectors by id; any other is rebuilt from the database. The file's size and a
  sample of its blocks are checked on every open, its SHA-256 when it is small, else in the
  background and on a FAISS read error. A search re-ranks the cache's candidates with the stored
  embeddings and drops any id the database lacks (and rebuilds the cache).
* An index on read-only media opens read-only (SQLite ``mode=ro``, or ``immutable=1`` when it has no
  WAL files); its cache goes to the user's cache folder, or stays in memory.
* Values read from the folder are checked; a damaged one gives the "damaged" sentence.

Storage (format 4): a tile row is its pixel window and its embedding; each raster row holds its
geotransform, so footprints are computed (``engine.footprints``), not stored; an R*Tree holds every
tile's WGS84 bounds for searches within an area. New databases use pages large enough that
embedding rows fill them (``page_size_for``): a 512-d tile costs about 1.1 times its float32 vector.

The schema is versioned (``meta.schema``). ``@migration(n)`` registers the step from version n to
n + 1; opening an older index for writing runs the missing steps in one transaction. Opened for
reading, an older index is seen through temporary views (``read_view``), so read-only media work too.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from .atomic import atomic_write, atomic_write_bytes
from .errors import EngineError
from .footprints import (RasterGeometry, affine_from_footprint, parse_transform, transform_text, wkt_bounds)

if TYPE_CHECKING:
    from .vectors import VectorStore
from .storage import (StorageError, folder_is_writable, os_storage_error, read_only_error, sqlite_storage_error,
                      user_cache_root)

DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"
FAISS_META = "vectors.json"
LOCK_NAME = "index.lock"
#: Largest embedding width accepted from an index folder (real CLIP models: 512–1024).
MAX_DIM = 16384
#: Largest tile id SQLite can store.
_MAX_ID = (1 << 63) - 1
#: Largest ``vectors.json`` read; a bigger one is not ours.
MAX_CACHE_META = 1 << 16
#: The calibration sidecar of the vector cache (queries and their exact answers, NumPy arrays).
CALIB_NAME = "vectors.calib.npz"
MAX_CALIB_BYTES = 64 << 20
#: What ``vectors.json`` describes: format 3 = re-ranked, incrementally updated stores with a calibration.
CACHE_FORMAT = 3
#: Cache files up to this size are hashed in full on every open; larger ones in the background.
FULL_CHECK_BYTES = 16 << 20
#: How much of the database file SQLite may map into memory for reading.
MMAP_BYTES = 1 << 34
#: WAL size at which a writer checkpoints into the database (and to which the WAL file is cut back).
WAL_BYTES = 1 << 20
#: Restricted searches over at most this many tiles score them all exactly, without the vector cache.
EXACT_RESTRICTED = 2048

_log = logging.getLogger("rsclip_search.engine")

#: The raster columns of version 1 (frozen: later versions add to them in their migration steps).
_V1_RASTER_COLUMNS = """id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    crs_wkt TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bands TEXT NOT NULL,
    status TEXT NOT NULL,
    planned INTEGER NOT NULL,
    added_at REAL NOT NULL"""
#: The schema as released in version 1; newer versions are reached through the migration steps.
_BASE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS rasters ({_V1_RASTER_COLUMNS}, UNIQUE (path))",
    """CREATE TABLE IF NOT EXISTS tiles (
    id INTEGER PRIMARY KEY,
    raster_id INTEGER NOT NULL REFERENCES rasters(id) ON DELETE CASCADE,
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    footprint TEXT NOT NULL,
    footprint_wgs84 TEXT NOT NULL,
    embedding BLOB NOT NULL,
    UNIQUE (raster_id, col_off, row_off, width, height)
)""",
    "CREATE INDEX IF NOT EXISTS tiles_raster ON tiles(raster_id)",
)

# -- schema versions -----------------------------------------------------------------------------
Step = Callable[[sqlite3.Connection], None]
#: version n → the step that makes an index of version n one of version n + 1.
MIGRATIONS: dict[int, Step] = {}
#: version n → temporary views that make an index of version n read like one of version n + 1.
READ_VIEWS: dict[int, Step] = {}


def migration(from_version: int, read_view: Step | None = None) -> Callable[[Step], Step]:
    """Register the step from ``from_version`` to the next version (run inside one transaction).

    A step must not commit (no ``executescript``). ``read_view`` lets indexes of ``from_version``
    be read without changing them (read-only media): it creates TEMP views or tables with the new
    version's names; without it such an index is refused with a sentence until opened writable.
    """

    def register(step: Step) -> Step:
        if from_version in MIGRATIONS:
            raise ValueError(f"two migrations from version {from_version}")
        MIGRATIONS[from_version] = step
        if read_view is not None:
            READ_VIEWS[from_version] = read_view
        return step

    return register


def _v1_read_view(conn: sqlite3.Connection) -> None:
    row = conn.execute("SELECT group_concat(key || '=' || value, ';') FROM "
                       "(SELECT key, value FROM main.meta WHERE key IN ('created', 'model', 'tiling') ORDER BY key)"
                       ).fetchone()
    legacy_id = "v1-" + hashlib.sha256(str(row[0]).encode()).hexdigest()[:32]
    conn.execute("CREATE TEMP VIEW rasters AS SELECT id, path, fingerprint, crs_wkt, width, height, bands, status,"
                 " planned, added_at, NULL AS content, NULL AS full_sha256, NULL AS replaces FROM main.rasters")
    conn.execute("CREATE TEMP VIEW meta AS SELECT key, value FROM main.meta UNION ALL "
                 f"SELECT 'index_id', '{legacy_id}' UNION ALL SELECT 'revision', 'v1' UNION ALL "
                 "SELECT 'next_tile_id', COALESCE((SELECT MAX(id) FROM main.tiles), 0) + 1")


@migration(1, read_view=_v1_read_view)
def _staging_rows_identity_and_index_id(conn: sqlite3.Connection) -> None:
    """v2: re-index under staging rows (path unique among live rows only), relink data, index id, no id reuse."""
    conn.execute(f"CREATE TABLE rasters_v2 ({_V1_RASTER_COLUMNS}, content TEXT, full_sha256 TEXT, replaces INTEGER)")
    conn.execute("INSERT INTO rasters_v2(id, path, fingerprint, crs_wkt, width, height, bands, status, planned,"
                 " added_at) SELECT id, path, fingerprint, crs_wkt, width, height, bands, status, planned, added_at"
                 " FROM rasters")
    conn.execute("DROP TABLE rasters")
    conn.execute("ALTER TABLE rasters_v2 RENAME TO rasters")
    conn.execute("CREATE UNIQUE INDEX rasters_path ON rasters(path, status = 'staging')")
    conn.execute("CREATE INDEX rasters_content ON rasters(content)")
    next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM tiles").fetchone()[0]
    conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [
        ("index_id", uuid.uuid4().hex), ("revision", secrets.token_hex(8)), ("next_tile_id", str(next_id))])


def _no_concepts_yet(conn: sqlite3.Connection) -> None:
    """Read view of a version 2 index: it has no concept tables, which reads as no concepts stored."""


@migration(2, read_view=_no_concepts_yet)
def _concept_tables(conn: sqlite3.Connection) -> None:
    """v3: concepts ("find every X") with their example, accepted and rejected tiles, next to the tiles."""
    from .concepts import CONCEPT_SCHEMA

    for statement in CONCEPT_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _wkt_bound(wkt: object, which: int) -> float | None:
    """SQL function for read views: one bound (0 min x, 1 min y, 2 max x, 3 max y) of a polygon WKT."""
    box = wkt_bounds(wkt)
    return None if box is None else box[which]


def _affine_of_first_tile(wkt: object, col: object, row: object, width: object, height: object) -> str | None:
    """SQL function for migrations and read views: a raster's geotransform from one tile's stored footprint."""
    if not isinstance(wkt, str) or not all(isinstance(v, int) and v >= 0 for v in (col, row)) \
            or not all(isinstance(v, int) and v > 0 for v in (width, height)):
        return None
    try:
        gt = affine_from_footprint(wkt, (col, row, width, height))  # type: ignore[arg-type]
    except (ValueError, IndexError, ZeroDivisionError):
        return None
    return transform_text(gt) if parse_transform(transform_text(gt)) is not None else None


def _shadow_temp_view(conn: sqlite3.Connection, name: str) -> str:
    """The source a new read view of ``name`` selects from: ``main.name``, or the earlier read view renamed."""
    row = conn.execute("SELECT sql FROM temp.sqlite_master WHERE type = 'view' AND name = ?", (name,)).fetchone()
    if row is None:
        return f"main.{name}"
    renamed = f"_{name}_before_v{len(READ_VIEWS)}_{secrets.token_hex(3)}"
    body = re.sub(r"^\s*CREATE\s+(TEMP\s+|TEMPORARY\s+)?VIEW\s+\"?\w+\"?\s+AS\s", "", row[0], flags=re.IGNORECASE)
    conn.execute(f'CREATE TEMP VIEW "{renamed}" AS {body}')
    conn.execute(f'DROP VIEW temp."{name}"')
    return f'temp."{renamed}"'


_V4_TILES = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    raster_id INTEGER NOT NULL REFERENCES rasters(id) ON DELETE CASCADE,
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    embedding BLOB NOT NULL
)"""
_V4_TABLES = (
    "CREATE UNIQUE INDEX tiles_raster ON tiles(raster_id, col_off, row_off, width, height)",
    "CREATE VIRTUAL TABLE tile_bounds USING rtree(id, min_lon, max_lon, min_lat, max_lat)",
    "CREATE TABLE history (generation INTEGER PRIMARY KEY, revision TEXT NOT NULL)",
    "CREATE TABLE query_samples (kind TEXT NOT NULL, phrase TEXT NOT NULL, vector BLOB NOT NULL, "
    "PRIMARY KEY (kind, phrase))",
)


def _v3_read_view(conn: sqlite3.Connection) -> None:
    """Read a format-3 index as format 4: geotransforms and WGS84 bounds computed from its stored footprints."""
    conn.create_function("rsclip_affine", 5, _affine_of_first_tile, deterministic=True)
    conn.create_function("rsclip_wkt_bound", 2, _wkt_bound, deterministic=True)
    base = _shadow_temp_view(conn, "rasters")
    conn.execute(f"CREATE TEMP VIEW rasters AS SELECT b.*, (SELECT rsclip_affine(t.footprint, t.col_off, t.row_off,"
                 " t.width, t.height) FROM main.tiles t WHERE t.raster_id = b.id ORDER BY t.id LIMIT 1) AS transform"
                 f" FROM {base} b")
    conn.execute("CREATE TEMP VIEW tiles AS SELECT id, raster_id, col_off, row_off, width, height, embedding"
                 " FROM main.tiles")
    conn.execute("CREATE TEMP VIEW tile_bounds AS SELECT id, rsclip_wkt_bound(footprint_wgs84, 0) AS min_lon,"
                 " rsclip_wkt_bound(footprint_wgs84, 2) AS max_lon, rsclip_wkt_bound(footprint_wgs84, 1) AS min_lat,"
                 " rsclip_wkt_bound(footprint_wgs84, 3) AS max_lat FROM main.tiles")
    for statement in _V4_TABLES[2:]:
        conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE"))


@migration(3, read_view=_v3_read_view)
def _compact_tiles(conn: sqlite3.Connection) -> None:
    """v4: footprints from numbers (each raster's geotransform, each tile's window) instead of two WKT strings
    per tile, an R*Tree of the tiles' WGS84 bounds, the history of revisions, query samples."""
    conn.execute("ALTER TABLE rasters ADD COLUMN transform TEXT")
    first = conn.execute("SELECT raster_id, footprint, col_off, row_off, width, height FROM tiles WHERE id IN"
                         " (SELECT MIN(id) FROM tiles GROUP BY raster_id)").fetchall()
    conn.executemany("UPDATE rasters SET transform = ? WHERE id = ?",
                     [(_affine_of_first_tile(*row[1:]), row[0]) for row in first])
    conn.execute(_V4_TILES.format(name="tiles_v4"))
    conn.execute("INSERT INTO tiles_v4(id, raster_id, col_off, row_off, width, height, embedding)"
                 " SELECT id, raster_id, col_off, row_off, width, height, embedding FROM tiles")
    conn.execute(_V4_TABLES[1])
    cur = conn.execute("SELECT id, footprint_wgs84 FROM tiles")
    while rows := cur.fetchmany(65536):
        boxes = [(i, box) for i, box in ((r[0], wkt_bounds(r[1])) for r in rows) if box is not None]
        conn.executemany("INSERT INTO tile_bounds(id, min_lon, max_lon, min_lat, max_lat) VALUES (?, ?, ?, ?, ?)",
                         [(i, b[0], b[2], b[1], b[3]) for i, b in boxes])
    conn.execute("DROP TABLE tiles")
    conn.execute("ALTER TABLE tiles_v4 RENAME TO tiles")
    for statement in (_V4_TABLES[0], *_V4_TABLES[2:]):
        conn.execute(statement)
    conn.execute("INSERT INTO history(generation, revision) SELECT CAST(g.value AS INTEGER), r.value FROM meta g,"
                 " meta r WHERE g.key = 'generation' AND r.key = 'revision'")


#: The version this code writes: one past the last registered step.
SCHEMA_VERSION = max(MIGRATIONS) + 1


def _run_migrations(conn: sqlite3.Connection, folder: Path, announce: bool = True) -> int:
    """Bring the database to ``SCHEMA_VERSION`` in one transaction; returns the version it had."""
    conn.execute("PRAGMA foreign_keys=OFF")  # a table rebuild must not cascade-delete tiles
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = version = _schema_version(conn, folder)
            if version > SCHEMA_VERSION:
                raise _newer_error(folder, version)
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(version),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    if announce and start < SCHEMA_VERSION:
        _log.info("Updated the index at %s from format %d to %d.", folder, start, SCHEMA_VERSION)
    return start


def _schema_version(conn: sqlite3.Connection, folder: Path) -> int:
    row = conn.execute("SELECT value FROM main.meta WHERE key='schema'").fetchone()
    if row is None:
        raise EngineError(f"{folder / DB_NAME} is not an RS-CLIP Search index (it records no index format).")
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        raise _damaged(folder, f"its format entry {str(row[0])[:40]!r} is not a number") from None
    if version < 1:
        raise _damaged(folder, f"its format entry {version} is not a valid version")
    return version


def _newer_error(folder: Path, version: int) -> EngineError:
    return EngineError(f"The index at {folder} was made by a newer version of RS-CLIP Search (index format "
                       f"{version}; this version reads up to {SCHEMA_VERSION}); update RS-CLIP Search to open it.")


class DamagedIndexError(EngineError):
    """Something read from the index folder is not what the engine wrote: never a problem of one raster."""


def _damaged(folder: Path, what: str) -> EngineError:
    return DamagedIndexError(f"The index at {folder} is damaged ({what}); index the rasters again into a new folder.")


# -- records -----------------------------------------------------------------------------------------
_DERIVED = ("bounds", "footprint_wkt", "footprint_wgs84_wkt")


@dataclass(frozen=True, slots=True)
class TileRecord:
    """One indexed tile as stored: where it is, never its pixels.

    The index builds it from the tile's window and its raster's geometry (CRS and geotransform):
    ``bounds`` (in the raster's CRS), ``footprint_wkt`` (the polygon in the raster's CRS) and
    ``footprint_wgs84_wkt`` (longitude/latitude) are computed on first use, so reading thousands
    of records costs no WKT or PROJ work until a footprint is asked for. Code that has the
    footprints already passes them in (positionally, as before); they do not take part in
    equality, which the tile's identity and window decide.
    """

    id: int
    raster: str
    raster_id: int
    window: tuple[int, int, int, int]
    bounds: tuple[float, float, float, float] = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    footprint_wkt: str = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    footprint_wgs84_wkt: str = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    crs_wkt: str = ""
    geometry: RasterGeometry | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", tuple(self.window))
        for name in _DERIVED:  # left unset: computed by __getattr__ on first use
            if object.__getattribute__(self, name) is None:
                object.__delattr__(self, name)

    def __getattr__(self, name: str):
        if name not in _DERIVED:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        geometry = self.geometry
        if name == "bounds":
            if geometry is None or not geometry.valid:
                raise EngineError(f"Tile {self.id} of {Path(str(self.raster)).name} has a damaged footprint in its "
                                  "index; index the rasters again into a new folder.")
            value: object = geometry.native_bounds(self.window)
        elif name == "footprint_wkt":
            value = geometry.native_wkt(self.window) if geometry is not None else ""
        else:
            value = geometry.wgs84_wkt(self.window) if geometry is not None else ""
        object.__setattr__(self, name, value)
        return value


@dataclass(frozen=True)
class RasterRecord:
    """One raster of an index; ``reindexing`` is (new tiles so far, planned) while a re-index is staged."""

    id: int
    path: str
    fingerprint: str
    crs_wkt: str
    width: int
    height: int
    bands: tuple[int, ...]
    status: str
    planned: int
    tiles: int
    content: str | None = None
    full_sha256: str | None = None
    reindexing: tuple[int, int] | None = None

    @property
    def missing(self) -> bool:
        """True when the file is no longer at its recorded path (moved, renamed or deleted)."""
        from .identity import exists

        return not exists(self.path)


def page_size_for(dim: int) -> int:
    """SQLite page size of a new index: the smallest in which rows of ``dim``-d embeddings fill 95% of a page.

    A 512-d row (2 KB) would fill half of a 4 KB page and leave the rest empty; 32 KB pages hold 15.
    """
    row = 4 * dim + 52  # the embedding, the window's numbers, record and cell headers
    for size in (4096, 8192, 16384, 32768):
        if size - ((size - 8) // row) * row <= 0.05 * size:
            return size
    return 65536


def is_index(folder: Path | str) -> bool:
    return (Path(folder) / DB_NAME).is_file()


_LIVE = "r.status != 'staging'"
_FOOTPRINT = re.compile(r"POLYGON \(\((?:[-+0-9.eE]+ [-+0-9.eE]+, ){4}[-+0-9.eE]+ [-+0-9.eE]+\)\)")


class Footprinted(Protocol):
    """Anything with a footprint in a CRS: an indexed tile, a concept's mark."""

    @property
    def crs_wkt(self) -> str: ...

    @property
    def footprint_wkt(self) -> str: ...


def checked_footprint(tile: Footprinted, wgs84: bool = False) -> str:
    """A tile's footprint WKT as written by the engine (a closed 5-point polygon), else the damaged sentence."""
    wkt = getattr(tile, "footprint_wgs84_wkt", None) if wgs84 else tile.footprint_wkt
    if not isinstance(wkt, str) or not _FOOTPRINT.fullmatch(wkt):
        tile_id, raster = getattr(tile, "id", getattr(tile, "tile_id", "?")), getattr(tile, "raster", "?")
        raise EngineError(f"Tile {tile_id} of {Path(str(raster)).name} has a damaged footprint in its index; "
                          "index the rasters again into a new folder.")
    return wkt


def _guarded(method):
    """SQLite failures inside a read become the storage or "damaged" sentence, never a traceback."""

    @functools.wraps(method)
    def wrapper(self: "TileIndex", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    return wrapper


class TileIndex:
    """Open handle on an index folder. Use ``TileIndex.open``/``TileIndex.create`` to get one."""

    def __init__(self, folder: Path, conn: sqlite3.Connection, mode: str = "rw", version: int = SCHEMA_VERSION) -> None:
        self.folder = folder
        self.conn = conn
        #: "rw", "ro" (read-only, sees the WAL) or "immutable" (read-only media without WAL files).
        self.mode = mode
        self.version = version
        #: Bytes a running job still expects to write, for the full-disk sentence.
        self.space_hint = 0
        self._store: VectorStore | None = None
        self._store_key: tuple | None = None
        self._snapshot_depth = 0
        self._model: dict = {}
        self._tiling: dict = {}
        self._dim = 0
        self._index_id = ""
        self._geometries: dict[int, tuple[tuple, RasterGeometry]] = {}
        #: Gives the model's text embeddings to calibrate on when a search must build the vector store of
        #: an index that stores none (set by the jobs that have the model loaded).
        self.text_queries: Callable[[], np.ndarray | None] | None = None

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path | str, write: bool = False) -> "TileIndex":
        """Open an existing index; ``write=True`` refuses read-only storage and updates an older format."""
        folder = Path(folder).expanduser().resolve()
        db = folder / DB_NAME
        try:
            has_db = db.is_file()
        except OSError:
            has_db = False
        if not has_db:
            if folder.is_dir() and any(folder.iterdir()) or folder.is_file():
                raise EngineError(f"{folder} is not an RS-CLIP Search index (no {DB_NAME} in it).")
            raise EngineError(f"No index at {folder}; build one first with 'index'.")
        conn, mode = _open_connection(db, folder)
        idx = cls(folder, conn, mode)
        try:
            idx.version = _schema_version(conn, folder)
            if idx.version > SCHEMA_VERSION:
                raise _newer_error(folder, idx.version)
            if write:
                idx._require_writable()
            elif idx.version < SCHEMA_VERSION:
                idx._read_older_version()
            idx._load_meta()
        except sqlite3.Error as exc:
            conn.close()
            raise idx._translate(exc, opening=True) from None
        except BaseException:
            conn.close()
            raise
        return idx

    @classmethod
    def create(cls, folder: Path | str, model: dict, tiling: dict, dim: int) -> "TileIndex":
        """Create a new empty index recording the model and tiling it is built with."""
        from .storage import check_writable_folder

        folder = Path(folder).expanduser().resolve()
        if (folder / DB_NAME).exists():
            return cls.open(folder, write=True)
        check_writable_folder(folder)
        tmp = folder / f".{DB_NAME}.creating"
        made = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                tmp.unlink()
            conn = _connect(tmp, "rw", wal=False)
            try:
                conn.execute(f"PRAGMA page_size = {page_size_for(int(dim))}")
                with conn:
                    for statement in _BASE_SCHEMA:
                        conn.execute(statement)
                    now = str(time.time())
                    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                        ("schema", "1"), ("model", json.dumps(model, sort_keys=True)),
                        ("tiling", json.dumps(tiling, sort_keys=True)), ("dim", str(int(dim))),
                        ("generation", "0"), ("created", now), ("updated", now)])
                _run_migrations(conn, folder, announce=False)
            finally:
                conn.close()
            os.replace(tmp, folder / DB_NAME)
        except (sqlite3.Error, OSError) as exc:
            for leftover in (tmp, Path(f"{tmp}-journal")):
                _unlink_quietly(leftover)
            for path in made:  # a failed first run leaves no folder behind
                try:
                    path.rmdir()
                except OSError:
                    pass
            if isinstance(exc, OSError):
                raise os_storage_error(exc, folder) from None
            raise sqlite_storage_error(exc, folder) or _damaged(folder, str(exc)) from None
        return cls.open(folder, write=True)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "TileIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def readonly(self) -> bool:
        return self.mode != "rw"

    def _read_older_version(self) -> None:
        """Make an older index read like the current one, through TEMP views; the file is not changed."""
        for version in range(self.version, SCHEMA_VERSION):
            view = READ_VIEWS.get(version)
            if view is None:
                raise EngineError(f"The index at {self.folder} is in an older format ({self.version}) that this "
                                  "version cannot read without updating it; open it once where it can be written.")
            view(self.conn)

    def _drop_read_views(self) -> None:
        for kind, name in self.conn.execute("SELECT type, name FROM temp.sqlite_master WHERE type IN ('view', 'table')"
                                            ).fetchall():
            self.conn.execute(f'DROP {"VIEW" if kind == "view" else "TABLE"} temp."{name}"')

    def _require_writable(self) -> None:
        """Refuse read-only storage; bring an older format up to date (one transaction)."""
        if self.readonly:
            raise read_only_error(self.folder)
        if self.version < SCHEMA_VERSION:
            self._drop_read_views()
            try:
                _run_migrations(self.conn, self.folder)
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            self.version = SCHEMA_VERSION
            self._load_meta()

    def _translate(self, exc: sqlite3.Error, opening: bool = False) -> EngineError:
        """The sentence for a SQLite failure: storage (full, read-only, busy) or damage."""
        storage = sqlite_storage_error(exc, self.folder, self.space_hint)
        if storage is not None:
            return storage
        if opening:
            return DamagedIndexError(f"The index database {self.folder / DB_NAME} is damaged or not an index ({exc}).")
        return _damaged(self.folder, f"SQLite: {exc}")

    # -- metadata ------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        if not isinstance(row[0], str):
            raise _damaged(self.folder, f"its {key!r} entry is not text")
        return row[0]

    def _load_meta(self) -> None:
        """Read and check the values fixed at creation; a damaged one gives the damaged sentence."""
        from .tiling import TilingSpec

        model = self._json_meta("model")
        for key in ("kind", "name", "arch", "checkpoint", "checkpoint_sha256"):
            if model.get(key) is not None and not isinstance(model[key], str):
                raise _damaged(self.folder, f"its model entry has a {key} that is not text")
        tiling = self._json_meta("tiling")
        try:
            TilingSpec.from_dict(tiling).validate()
        except EngineError as exc:
            raise _damaged(self.folder, f"its tile settings are not valid: {exc}") from None
        dim = self._number_meta("dim")
        if not 1 <= dim <= MAX_DIM:
            raise _damaged(self.folder, f"its embedding width {dim} is not possible")
        index_id = self._meta("index_id")
        if not index_id:
            raise _damaged(self.folder, "it has no index id")
        self._number_meta("generation")
        for key in ("created", "updated"):
            self._number_meta(key, float)
        self._model, self._tiling, self._dim, self._index_id = model, tiling, dim, index_id

    def _json_meta(self, key: str) -> dict:
        text = self._meta(key)
        try:
            value = json.loads(text) if text is not None else None
        except ValueError:
            raise _damaged(self.folder, f"its {key!r} entry is not valid JSON") from None
        if not isinstance(value, dict):
            raise _damaged(self.folder, f"its {key!r} entry is missing or not a record")
        return value

    def _number_meta(self, key: str, kind: type = int):
        """A whole (``int``) or real (``float``) number entry, finite and not negative."""
        text = self._meta(key)
        try:
            value = kind(text)
        except (TypeError, ValueError):
            what = "a whole number" if kind is int else "a number"
            raise _damaged(self.folder, f"its {key!r} entry {str(text)[:40]!r} is not {what}") from None
        if not math.isfinite(value) or value < 0:
            raise _damaged(self.folder, f"its {key!r} entry is not a finite number of 0 or more")
        return value

    @property
    def model(self) -> dict:
        return dict(self._model)

    @property
    def tiling(self) -> dict:
        return dict(self._tiling)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def index_id(self) -> str:
        """Random id drawn when the index was created (or migrated): ties caches to this database."""
        return self._index_id

    @property
    @_guarded
    def generation(self) -> int:
        return self._number_meta("generation")

    @property
    @_guarded
    def revision(self) -> str:
        return self._meta("revision") or ""

    @property
    @_guarded
    def created(self) -> float:
        return self._number_meta("created", float)

    @property
    @_guarded
    def updated(self) -> float:
        return self._number_meta("updated", float)

    @_guarded
    def has_tiles(self) -> bool:
        """Whether any tile is searchable: the first one found answers (``tile_count`` reads them all)."""
        return bool(self.conn.execute(f"SELECT EXISTS(SELECT 1 FROM tiles t JOIN rasters r ON r.id = t.raster_id"
                                      f" AND {_LIVE})").fetchone()[0])

    @_guarded
    def tile_count(self) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM tiles t JOIN rasters r ON r.id = t.raster_id AND {_LIVE}"
                                     ).fetchone()[0])

    @_guarded
    def rasters(self) -> list[RasterRecord]:
        """The searchable rasters, oldest first; a raster being re-indexed says how far it got."""
        cols = ("SELECT r.id, r.path, r.fingerprint, r.crs_wkt, r.width, r.height, r.bands, r.status, r.planned,"
                " (SELECT COUNT(*) FROM tiles t WHERE t.raster_id = r.id), r.content, r.full_sha256 FROM rasters r")
        staged = {}
        for row in self.conn.execute(cols + " WHERE r.status = 'staging'"):
            staged[row[1]] = (int(row[9]), int(row[8]) if isinstance(row[8], int) else 0)
        out = []
        for row in self.conn.execute(cols + f" WHERE {_LIVE} ORDER BY r.id"):
            rec = self._raster_record(row)
            if rec.path in staged:
                rec = RasterRecord(**{**rec.__dict__, "reindexing": staged[rec.path]})
            out.append(rec)
        return out

    def _raster_record(self, r) -> RasterRecord:
        try:
            bands = json.loads(r[6]) if isinstance(r[6], str) else None
        except ValueError:
            bands = None
        ok = (isinstance(r[0], int) and all(isinstance(v, str) for v in (r[1], r[2], r[3], r[7]))
              and all(isinstance(v, int) for v in (r[4], r[5], r[8], r[9]))
              and isinstance(bands, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in bands)
              and all(v is None or isinstance(v, str) for v in (r[10], r[11])))
        if not ok or not isinstance(bands, list):
            raise _damaged(self.folder, f"raster row {r[0]!r} has values of the wrong kind")
        return RasterRecord(r[0], r[1], r[2], r[3], r[4], r[5], tuple(bands), r[7], r[8], r[9], r[10], r[11])

    def raster(self, path: str) -> RasterRecord | None:
        return next((r for r in self.rasters() if r.path == path), None)

    @_guarded
    def holds_path(self, path: str) -> bool:
        """Whether any row (searchable, partly indexed or staging) has this path: a cheap "seen before?"."""
        return self.conn.execute("SELECT 1 FROM rasters WHERE path = ? LIMIT 1", (path,)).fetchone() is not None

    @_guarded
    def same_content(self, content: str | None, fingerprint: str) -> list[RasterRecord]:
        """Searchable rasters whose file had this content sample (or this exact fingerprint)."""
        rows = self.conn.execute(
            "SELECT r.id, r.path, r.fingerprint, r.crs_wkt, r.width, r.height, r.bands, r.status, r.planned,"
            " (SELECT COUNT(*) FROM tiles t WHERE t.raster_id = r.id), r.content, r.full_sha256 FROM rasters r"
            f" WHERE {_LIVE} AND ((r.content IS NOT NULL AND r.content = ?) OR r.fingerprint = ?) ORDER BY r.id",
            (content, fingerprint)).fetchall()
        return [self._raster_record(r) for r in rows]

    # -- writing -------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator["TileIndex"]:
        """Hold the index's writer lock; a second writer is refused with a clear message."""
        self._require_writable()
        with _file_lock(self.folder / LOCK_NAME):
            try:
                yield self
            finally:
                self._checkpoint()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; storage failures become ``StorageError``, damage the damaged sentence."""
        self._require_writable()
        try:
            with self.conn:
                yield
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        except OSError as exc:
            raise os_storage_error(exc, self.folder, self.space_hint) from None

    @contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction for modules that keep their own rows (the vector archive's)."""
        with self._transaction():
            yield self.conn

    def _checkpoint(self) -> None:
        """Copy the WAL into the database so the folder reads right even where the WAL cannot be used."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # a full disk or a reader in the way: the WAL stays and SQLite keeps using it

    def begin_raster(self, path: str, fingerprint: str, crs_wkt: str, width: int, height: int,
                     bands: Sequence[int], planned: int, content: str | None = None,
                     full_sha256: str | None = None, changed: bool = False,
                     transform: Sequence[float] | None = None) -> tuple[int, set[tuple[int, int, int, int]]]:
        """Register a raster to index; returns the row to add tiles to and the windows it already holds.

        A new raster gets a searchable row (its batches appear as they commit). A raster whose file
        changed (other fingerprint, bands or SHA-256, or ``changed``) gets a staging row that replaces
        the searchable one only in ``finish_raster``; an interrupted re-index resumes its staging row
        when the file is still the same. ``transform`` is the raster's GDAL geotransform, from which
        the tiles' footprints are computed.
        """
        bands_json = json.dumps(list(bands))
        gt = transform_text(transform) if transform is not None else None

        def same(row) -> bool:
            return row[1] == fingerprint and _same_bands(row[2], bands) and \
                (row[3] is None or full_sha256 is None or row[3] == full_sha256)

        with self._transaction():
            live = self.conn.execute("SELECT r.id, r.fingerprint, r.bands, r.full_sha256 FROM rasters r WHERE "
                                     f"r.path=? AND {_LIVE}", (path,)).fetchone()
            staging = self.conn.execute("SELECT id, fingerprint, bands, full_sha256 FROM rasters WHERE path=? AND "
                                        "status='staging'", (path,)).fetchone()
            if live is not None and not changed and same(live):
                rid = int(live[0])
                self.conn.execute("UPDATE rasters SET content = COALESCE(content, ?), full_sha256 = COALESCE("
                                  "full_sha256, ?) WHERE id = ?", (content, full_sha256, rid))
            elif live is not None and staging is not None and same(staging):
                rid = int(staging[0])
            else:
                if staging is not None:
                    self._delete_raster(staging[0])
                status = "partial" if live is None else "staging"
                cur = self.conn.execute(
                    "INSERT INTO rasters(path, fingerprint, crs_wkt, width, height, bands, status, planned, added_at,"
                    " content, full_sha256, replaces, transform) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (path, fingerprint, crs_wkt, width, height, bands_json, status, planned, time.time(), content,
                     full_sha256, None if live is None else live[0], gt))
                assert cur.lastrowid is not None, "an INSERT into a rowid table sets lastrowid"
                rid = int(cur.lastrowid)
                if live is None:
                    self._bump()
            if gt is not None:
                self.conn.execute("UPDATE rasters SET transform = ? WHERE id = ? AND transform IS NOT ?", (gt, rid, gt))
            done = self.conn.execute("SELECT col_off, row_off, width, height FROM tiles WHERE raster_id=?",
                                     (rid,)).fetchall()
        return rid, {tuple(r) for r in done}

    def add_tiles(self, raster_id: int, tiles: Sequence, embeddings: np.ndarray,
                  wgs84_bounds: np.ndarray | None = None) -> None:
        """Commit one batch of tiles with their embeddings in a single transaction.

        ``tiles`` are pixel windows (``TileWindow``) or objects with a ``window``; ``wgs84_bounds``
        (n × min lon, min lat, max lon, max lat), when the caller computed them, spare computing them here.
        """
        if len(tiles) != len(embeddings):
            raise ValueError("tiles and embeddings differ in length")
        if len(tiles) == 0:
            return
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.shape[1] != self.dim:
            raise EngineError(f"Embeddings have {emb.shape[1]} dimensions but the index holds {self.dim}.")
        windows = [getattr(t, "window", t) for t in tiles]
        table = np.array([(w.col_off, w.row_off, w.width, w.height) for w in windows], dtype=np.int64)
        with self._transaction():
            status = self._status(raster_id)
            if wgs84_bounds is None:
                wgs84_bounds = self._writer_geometry(raster_id, tiles).wgs84_bounds(table)
            first = max(self._number_meta("next_tile_id"),
                        int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM tiles").fetchone()[0]) + 1)
            if first + len(tiles) > _MAX_ID:
                raise _damaged(self.folder, f"its tile ids have reached {first - 1}, the largest SQLite allows")
            ids = range(first, first + len(tiles))
            self.conn.executemany(
                "INSERT OR REPLACE INTO tiles(id, raster_id, col_off, row_off, width, height, embedding)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(i, raster_id, *w, e.tobytes()) for i, w, e in zip(ids, table.tolist(), emb)])
            box = np.asarray(wgs84_bounds, dtype=np.float64).reshape(-1, 4)
            ok = np.isfinite(box).all(axis=1)
            self.conn.executemany(
                "INSERT OR REPLACE INTO tile_bounds(id, min_lon, max_lon, min_lat, max_lat) VALUES (?, ?, ?, ?, ?)",
                [(i, b[0], b[2], b[1], b[3]) for i, b, good in zip(ids, box.tolist(), ok.tolist()) if good])
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'next_tile_id'", (str(first + len(tiles)),))
            if status != "staging":
                self._bump()

    def set_planned(self, raster_id: int, planned: int) -> None:
        """Record how many tiles a raster plans (it grows when scales are added to the index)."""
        with self._transaction():
            self.conn.execute("UPDATE rasters SET planned=? WHERE id=? AND planned<>?", (planned, raster_id, planned))

    def add_scales(self, tiling: dict) -> None:
        """Record tiling settings with more scales (engine/scales.py): every raster is reopened, so indexing it
        again embeds the new scales' windows and skips those already stored."""
        with self._transaction():
            self.conn.execute("UPDATE meta SET value=? WHERE key='tiling'", (json.dumps(tiling, sort_keys=True),))
            self.conn.execute("UPDATE rasters SET status='partial' WHERE status='complete'")  # staging rows stay
        self._load_meta()

    def finish_raster(self, raster_id: int, full_sha256: str | None = None) -> None:
        """Mark a raster complete; a staging row replaces its old tiles here, in one transaction. ``full_sha256``
        is recorded with it when it was computed while the raster was tiled."""
        with self._transaction():
            if full_sha256 is not None:
                self.conn.execute("UPDATE rasters SET full_sha256 = COALESCE(full_sha256, ?) WHERE id = ?",
                                  (full_sha256, raster_id))
            if self._status(raster_id) == "staging":
                path, replaces = self.conn.execute("SELECT path, replaces FROM rasters WHERE id=?",
                                                   (raster_id,)).fetchone()
                for (old,) in self.conn.execute(f"SELECT r.id FROM rasters r WHERE r.path=? AND {_LIVE}",
                                                (path,)).fetchall():
                    self._delete_raster(old)
                if replaces is not None:
                    self._delete_raster(replaces)
            self.conn.execute("UPDATE rasters SET status='complete', replaces=NULL WHERE id=?", (raster_id,))
            self._bump()

    def abandon_raster(self, raster_id: int) -> bool:
        """Drop what this run wrote for a raster that failed; True when it was a re-index (old tiles kept)."""
        with self._transaction():
            status = self._status(raster_id)
            self._delete_raster(raster_id)
            if status != "staging":
                self._bump()
        return status == "staging"

    def drop_staging(self, path: str) -> int:
        """Forget an unfinished re-index of ``path`` (its file went back to what is indexed)."""
        with self._transaction():
            rows = self.conn.execute("SELECT id FROM rasters WHERE path=? AND status='staging'", (path,)).fetchall()
            return sum(self._delete_raster(r[0]) for r in rows)

    def remove_raster(self, path: str) -> int:
        """Drop a raster (and any re-index of it in progress); returns how many tiles went."""
        with self._transaction():
            rows = self.conn.execute("SELECT id FROM rasters WHERE path=?", (path,)).fetchall()
            if not rows:
                raise EngineError(f"{path} is not in the index at {self.folder}.")
            n = sum(self._delete_raster(r[0]) for r in rows)
            self._bump()
        return n

    def relink(self, old_path: str, new_path: str, fingerprint: str, content: str | None,
               full_sha256: str | None) -> int:
        """Point a raster's tiles at its new path (same content, moved or renamed); returns its tile count."""
        with self._transaction():
            row = self.conn.execute(f"SELECT r.id FROM rasters r WHERE r.path=? AND {_LIVE}", (old_path,)).fetchone()
            if row is None:
                raise EngineError(f"{old_path} is not in the index at {self.folder}.")
            if self.conn.execute("SELECT 1 FROM rasters WHERE path=?", (new_path,)).fetchone() is not None:
                raise EngineError(f"{new_path} is already in the index at {self.folder}; remove it first "
                                  "(index --remove) or relink another file.")
            for (staged,) in self.conn.execute("SELECT id FROM rasters WHERE path=? AND status='staging'",
                                               (old_path,)).fetchall():
                self._delete_raster(staged)
            self.conn.execute("UPDATE rasters SET path=?, fingerprint=?, content=?, full_sha256=COALESCE(?, "
                              "full_sha256) WHERE id=?", (new_path, fingerprint, content, full_sha256, row[0]))
            self._bump()
            return int(self.conn.execute("SELECT COUNT(*) FROM tiles WHERE raster_id=?", (row[0],)).fetchone()[0])

    def update_identity(self, raster_id: int, fingerprint: str, content: str | None, full_sha256: str | None) -> None:
        """Record a file's new fingerprint when its bytes are known to be unchanged (touched, copied back)."""
        with self._transaction():
            self.conn.execute("UPDATE rasters SET fingerprint=?, content=COALESCE(?, content), "
                              "full_sha256=COALESCE(?, full_sha256) WHERE id=?",
                              (fingerprint, content, full_sha256, raster_id))

    def _status(self, raster_id: int) -> str:
        row = self.conn.execute("SELECT status FROM rasters WHERE id=?", (raster_id,)).fetchone()
        if row is None:
            raise EngineError(f"The raster being indexed was removed from the index at {self.folder} meanwhile; "
                              "run the same command again.")
        return str(row[0])

    def _delete_raster(self, raster_id: int) -> int:
        self.conn.execute("DELETE FROM tile_bounds WHERE id IN (SELECT id FROM tiles WHERE raster_id=?)", (raster_id,))
        n = self.conn.execute("DELETE FROM tiles WHERE raster_id=?", (raster_id,)).rowcount
        self.conn.execute("DELETE FROM rasters WHERE id=?", (raster_id,))
        return n

    def _bump(self) -> None:
        revision = secrets.token_hex(8)
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
        self.conn.execute("UPDATE meta SET value = ? WHERE key='updated'", (str(time.time()),))
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('revision', ?)", (revision,))
        self.conn.execute("INSERT OR REPLACE INTO history(generation, revision) SELECT CAST(value AS INTEGER), ? "
                          "FROM meta WHERE key = 'generation'", (revision,))

    def _raster_geometry(self, raster_id: int, crs_wkt: object, transform: object) -> RasterGeometry:
        """One shared ``RasterGeometry`` per raster (its WGS84 conversion is made once)."""
        key = (crs_wkt, transform)
        got = self._geometries.get(raster_id)
        if got is None or got[0] != key:
            got = (key, RasterGeometry(crs_wkt if isinstance(crs_wkt, str) else "", parse_transform(transform)))
            self._geometries[raster_id] = got
        return got[1]

    def _writer_geometry(self, raster_id: int, tiles: Sequence) -> RasterGeometry:
        """The geometry of a raster being written; one recorded without a geotransform (callers that give
        only footprints) gets it from its first tile's footprint."""
        crs_wkt, transform = self.conn.execute("SELECT crs_wkt, transform FROM rasters WHERE id=?",
                                               (raster_id,)).fetchone()
        if parse_transform(transform) is None and tiles and isinstance(getattr(tiles[0], "footprint_wkt", None), str):
            w = tiles[0].window
            transform = _affine_of_first_tile(tiles[0].footprint_wkt, w.col_off, w.row_off, w.width, w.height)
            if transform is not None:
                self.conn.execute("UPDATE rasters SET transform=? WHERE id=?", (transform, raster_id))
        return self._raster_geometry(raster_id, crs_wkt, transform)

    # -- reading -------------------------------------------------------------------
    _TILE_SQL = ("SELECT t.id, r.path, r.id, t.col_off, t.row_off, t.width, t.height, r.crs_wkt, r.transform"
                 f" FROM tiles t JOIN rasters r ON r.id = t.raster_id AND {_LIVE}")

    @contextmanager
    def snapshot(self) -> Iterator["TileIndex"]:
        """Reads inside see one committed state, whatever a writer commits meanwhile (re-entrant)."""
        if self._snapshot_depth or self.conn.in_transaction:
            self._snapshot_depth += 1
            try:
                yield self
            finally:
                self._snapshot_depth -= 1
            return
        try:
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        self._snapshot_depth = 1
        try:
            yield self
        finally:
            self._snapshot_depth = 0
            if self.conn.in_transaction:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error:
                    pass

    @_guarded
    def tiles(self, ids: Iterable[int]) -> dict[int, TileRecord]:
        """Records of the given tile ids; ids the database does not hold are simply absent."""
        out: dict[int, TileRecord] = {}
        for part in _id_chunks(ids):
            sql = f"{self._TILE_SQL} WHERE t.id IN (SELECT value FROM json_each(?))"
            for r in self.conn.execute(sql, (part,)):
                out[r[0]] = self._tile_record(r)
        return out

    @_guarded
    def first_tile(self, raster_id: int) -> TileRecord | None:
        """A raster's first tile (every tile of a raster has the same window size), or None without tiles."""
        row = self.conn.execute(f"{self._TILE_SQL} WHERE t.raster_id = ? ORDER BY t.id LIMIT 1",
                                (int(raster_id),)).fetchone()
        return None if row is None else self._tile_record(row)

    def iter_tiles(self, raster_paths: Sequence[str] | None = None) -> Iterator[TileRecord]:
        sql, args = self._TILE_SQL, []
        if raster_paths:
            sql += f" WHERE r.path IN ({','.join('?' * len(raster_paths))})"
            args = list(raster_paths)
        try:
            for r in self.conn.execute(sql + " ORDER BY t.id", args):
                yield self._tile_record(r)
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    def _tile_record(self, r) -> TileRecord:
        if not (type(r[0]) is int and type(r[1]) is str and all(type(v) is int for v in r[2:7])
                and type(r[7]) is str):
            raise _damaged(self.folder, f"tile {r[0]!r} has values of the wrong kind")
        return TileRecord(r[0], r[1], r[2], (r[3], r[4], r[5], r[6]), crs_wkt=r[7],
                          geometry=self._raster_geometry(r[2], r[7], r[8]))

    @_guarded
    def live_ids(self, raster_ids: Sequence[int] | None = None) -> np.ndarray:
        """Ids of every searchable tile (of the given rasters), ascending.

        Read per raster from the small ``tiles_raster`` index as one text of ids each (parsed by NumPy),
        not row by row: a million ids in a fraction of a second.
        """
        parts = [np.zeros(0, dtype=np.int64)]
        with self.snapshot():
            live = [r[0] for r in self.conn.execute(f"SELECT r.id FROM rasters r WHERE {_LIVE}")]
            wanted = set(live) if raster_ids is None else set(live) & {int(r) for r in raster_ids}
            for rid in sorted(wanted):
                text = self.conn.execute("SELECT group_concat(id) FROM main.tiles INDEXED BY tiles_raster "
                                         "WHERE raster_id = ?", (rid,)).fetchone()[0]
                if text:
                    if not isinstance(text, str) or not re.fullmatch(r"[0-9,]+", text):
                        raise _damaged(self.folder, "a tile id is not a whole number")
                    parts.append(np.array(np.fromstring(text, dtype=np.int64, sep=","), dtype=np.int64))
        return np.sort(np.concatenate(parts))

    @_guarded
    def tile_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, raster ids, (n, 4) windows) of every searchable tile, ascending ids, in one read."""
        rows = self.conn.execute(f"SELECT t.id, t.raster_id, t.col_off, t.row_off, t.width, t.height FROM tiles t "
                                 f"JOIN rasters r ON r.id = t.raster_id AND {_LIVE} ORDER BY t.id").fetchall()
        try:
            table = np.array(rows, dtype=np.int64).reshape(-1, 6)
        except (TypeError, ValueError, OverflowError):
            raise _damaged(self.folder, "a tile's window is not whole numbers") from None
        return table[:, 0].copy(), table[:, 1].copy(), np.ascontiguousarray(table[:, 2:6])

    @_guarded
    def raster_geometries(self) -> dict[int, tuple[str, str, RasterGeometry]]:
        """Raster id → (path, CRS WKT, geometry) of every searchable raster."""
        out = {}
        for rid, path, crs, transform in self.conn.execute(f"SELECT r.id, r.path, r.crs_wkt, r.transform FROM rasters r"
                                                           f" WHERE {_LIVE}"):
            if type(rid) is not int or type(path) is not str or type(crs) is not str:
                raise _damaged(self.folder, f"raster row {rid!r} has values of the wrong kind")
            out[rid] = (path, crs, self._raster_geometry(rid, crs, transform))
        return out

    @_guarded
    def embeddings(self, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) for the given tiles, or for all of them, in id order; read in bulk.

        Memory is the result plus one chunk: rows are copied chunk by chunk into the final array.
        """
        from .archive.layout import split_embeddings

        archived = split_embeddings(self, ids)  # an index in the archive layout (engine/archive/)
        if archived is not None:
            return archived.join(*self._sqlite_embeddings(archived.rest)) if archived.rest else \
                (archived.ids, archived.vectors)
        return self._sqlite_embeddings(ids)

    def _sqlite_embeddings(self, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        base = f"SELECT t.id, t.embedding FROM tiles t JOIN rasters r ON r.id = t.raster_id AND {_LIVE}"
        with self.snapshot():
            if ids is None:
                total = self.tile_count()
                cursors = [self.conn.execute(base + " ORDER BY t.id")]
            else:
                parts = list(_id_chunks(ids))
                total = sum(len(json.loads(p)) for p in parts)
                cursors = [self.conn.execute(base + " WHERE t.id IN (SELECT value FROM json_each(?)) ORDER BY t.id",
                                             (p,)) for p in parts]
            out_ids = np.empty(total, dtype=np.int64)
            vecs = np.empty((total, self.dim), dtype=np.float32)
            n = 0
            width = 4 * self.dim
            for cur in cursors:
                while rows := cur.fetchmany(8192):
                    if n + len(rows) > total:
                        raise _damaged(self.folder, "it holds more tiles than it counts")
                    blobs = [r[1] for r in rows]
                    bad = next((i for i, b in enumerate(blobs) if type(b) is not bytes or len(b) != width), None)
                    if bad is not None:
                        raise DamagedIndexError(f"Tile {rows[bad][0]} in {self.folder} has a damaged embedding; "
                                                "rebuild the index.")
                    block = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), self.dim)
                    if not np.isfinite(block).all():
                        bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                        raise DamagedIndexError(f"Tile {rows[bad][0]} in {self.folder} has a damaged embedding "
                                                "(not finite); rebuild the index.")
                    out_ids[n:n + len(rows)] = [r[0] for r in rows]
                    vecs[n:n + len(rows)] = block
                    n += len(rows)
        if n < total:
            out_ids, vecs = out_ids[:n], vecs[:n]
        return out_ids, vecs

    @_guarded
    def ids_digest(self) -> str:
        """A digest of which tiles are searchable, read in time independent of the number of tiles.

        Each searchable raster's id, fingerprint and status, the lowest and highest tile id (the ends
        of the rowid tree) and the next tile id: every change the engine makes moves one of them (and
        draws a new revision besides). A change made behind the engine's back that keeps all of them is
        seen when a search meets an id the database lacks (it drops it and rebuilds the cache).
        """
        rasters = self.conn.execute(f"SELECT r.id, r.fingerprint, r.status FROM rasters r WHERE {_LIVE} ORDER BY r.id"
                                    ).fetchall()
        # two subqueries: SQLite reads MIN or MAX alone from the end of the rowid tree, both in one query by a scan
        ends = self.conn.execute("SELECT (SELECT MIN(id) FROM main.tiles), (SELECT MAX(id) FROM main.tiles)").fetchone()
        next_id = self.conn.execute("SELECT value FROM meta WHERE key = 'next_tile_id'").fetchone()
        return hashlib.sha256(json.dumps([rasters, list(ends), str(next_id[0] if next_id else "")],
                                         default=str).encode()).hexdigest()

    @_guarded
    def present(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` are searchable tiles in the database now."""
        out: set[int] = set()
        for part in _id_chunks(ids):
            out.update(r[0] for r in self.conn.execute(
                f"SELECT t.id FROM tiles t JOIN rasters r ON r.id = t.raster_id AND {_LIVE} "
                "WHERE t.id IN (SELECT value FROM json_each(?))", (part,)))
        return out

    @_guarded
    def in_history(self, generation: object, revision: object) -> bool:
        """Whether (generation, revision) was a committed state of this database (a cache of it can be updated)."""
        if not isinstance(generation, int) or isinstance(generation, bool) or not isinstance(revision, str):
            return False
        return self.conn.execute("SELECT 1 FROM history WHERE generation = ? AND revision = ?",
                                 (generation, revision)).fetchone() is not None

    # -- query samples (what the approximate search is calibrated on) ----------------------------
    @_guarded
    def query_sample(self, kind: str) -> tuple[list[str], np.ndarray] | None:
        """The stored query sample of a kind ("text": the model's own text embeddings), or None."""
        rows = self.conn.execute("SELECT phrase, vector FROM query_samples WHERE kind = ? ORDER BY phrase",
                                 (kind,)).fetchall()
        if not rows:
            return None
        width = 4 * self.dim
        if any(type(p) is not str or type(v) is not bytes or len(v) != width for p, v in rows):
            raise _damaged(self.folder, f"its {kind} query sample has values of the wrong kind")
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim).copy()
        if not np.isfinite(vecs).all():
            raise _damaged(self.folder, f"its {kind} query sample is not finite")
        return [r[0] for r in rows], vecs

    def store_query_sample(self, kind: str, phrases: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the query sample of a kind (one transaction)."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._transaction():
            self.conn.execute("DELETE FROM query_samples WHERE kind = ?", (kind,))
            self.conn.executemany("INSERT OR REPLACE INTO query_samples(kind, phrase, vector) VALUES (?, ?, ?)",
                                  [(kind, str(p), v.tobytes()) for p, v in zip(phrases, vecs)])

    # -- the vector cache -----------------------------------------------------------------
    def vector_store(self, rebuild: bool = False, maintain: bool = False,
                     text_queries: Callable[[], np.ndarray | None] | None = None,
                     progress: Callable[[float, str], None] | None = None):
        """The FAISS store of the committed state: in memory, from a cache bound to this state, a cache of an
        earlier state of this database brought up to date, or built anew.

        ``maintain`` (the jobs that change the index) also re-trains an approximate store that has
        outgrown its training or failed its recall check, with ``progress``; searches never re-train
        a usable store. ``text_queries`` gives the model's text embeddings to calibrate on when the
        index stores none.
        """
        from . import vectors
        from .archive.layout import archived_store
        from .vectors import VectorStore

        say = progress or (lambda f, m: None)
        with self.snapshot():
            archived = archived_store(self, rebuild)  # an index in the archive layout (engine/archive/)
            if archived is not None:
                return archived
            key = (self.generation, self.revision)
            current = self._store is not None and self._store_key == key and not self._store.damaged
            if not rebuild and current and not maintain:
                return self._store
            binding = {"index_id": self.index_id, "generation": key[0], "revision": key[1],
                       "ids_digest": self.ids_digest()}
            store, exact = (None, False) if rebuild else self._usable_store(binding)
            changed = not exact
            if store is not None and not exact and not self._update_store(store, say):
                store = None
            if store is not None and maintain:
                reason = store.training_reason(store.ntotal, self.query_sample("text") is not None)
                if reason:
                    _log.info("Re-training the search index of %s: %s.", self.folder, reason)
                    store = None
            if store is None:
                # the text sample is needed only to calibrate an approximate store (never for exact search)
                count = self.tile_count()
                text = self._text_queries(text_queries) if count >= vectors.APPROX_THRESHOLD else None
                say(0.0, "Reading the tile embeddings")
                built_ids, vecs = self.embeddings()
                store = VectorStore.build(built_ids, vecs, text_queries=text, progress=say)
                del built_ids, vecs
                changed = True
            if changed:
                self._save_store(store, binding)
        self._store, self._store_key = store, key
        return store

    def _text_queries(self, provider: Callable[[], np.ndarray | None] | None) -> np.ndarray | None:
        sample = self.query_sample("text")
        if sample is not None:
            return sample[1]
        provider = provider or self.text_queries
        return provider() if provider is not None else None

    def _usable_store(self, binding: dict):
        """(store, exact): this handle's store or a cache file, bound to this state (exact) or to an earlier
        state of this database's history (to update); (None, False) when there is none."""
        if self._store is not None and not self._store.damaged and self._store_key is not None:
            if self._store_key == (binding["generation"], binding["revision"]):
                return self._store, True
            if self.in_history(*self._store_key):
                return self._store, False
        return self._load_cached_store(binding)

    def _update_store(self, store, say: Callable[[float, str], None]) -> bool:
        """Bring a store of an earlier state up to date: add and remove vectors by id, re-check the recall.

        False when it cannot be (its exact calibration answers must be recomputed: build anew instead).
        """
        live = self.live_ids()
        have = store.ids()
        added = np.setdiff1d(live, have, assume_unique=True)
        removed = np.setdiff1d(have, live, assume_unique=True)
        if len(added) or len(removed):
            say(0.0, f"Updating the search index ({len(added):,} tiles in, {len(removed):,} out)")
        if len(removed) and not store.remove(removed):
            return False
        for start in range(0, len(added), 65536):
            ids, vecs = self.embeddings(added[start:start + 65536])
            store.add(ids, vecs)
        if store.ntotal != len(live):
            return False
        store.recheck()
        return True

    def nearest(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None,
                kind: str | None = None) -> list[tuple[float, int]]:
        """Best ``k`` (score, tile id) for one query vector, scored exactly with the stored embeddings.

        ``allowed`` (ascending ids) restricts the candidates; ``kind`` ("text": a text query, "image":
        example tiles) chooses the search depth calibrated for such queries. The store's candidates are
        re-ranked with the database's vectors; ids the database lacks are dropped and the cache rebuilt.
        """
        from .vectors import rerank_exact

        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if allowed is not None and len(allowed) <= EXACT_RESTRICTED:
            ids, vecs = self.embeddings(allowed)
            return rerank_exact(query, ids, vecs, k)
        ids = np.zeros(0, np.int64)
        vecs = np.zeros((0, self.dim), np.float32)
        for attempt in range(2):
            store = self.vector_store(rebuild=attempt > 0)
            if store.damaged:
                store = self.vector_store(rebuild=True)
            _, found = store.search(query, k, allowed, kind)
            row = found[0][found[0] >= 0]
            if allowed is not None:  # the selector already restricts; this guards against one that is ignored
                row = row[np.isin(row, allowed)]
            candidates = row.tolist()
            ids, vecs = self.embeddings(candidates)
            if len(ids) == len(set(candidates)):
                break
            _log.info("The vector cache of %s named tiles the database lacks; rebuilt it.", self.folder)
        return rerank_exact(query, ids, vecs, k)

    def cache_folders(self) -> list[Path]:
        """Where the vector cache may live: the index folder, then the user's cache folder for this index."""
        safe = self.index_id if re.fullmatch(r"[0-9A-Za-z_-]{1,64}", self.index_id) else \
            hashlib.sha256(self.index_id.encode()).hexdigest()
        return [self.folder, user_cache_root() / safe]

    def cache_meta(self) -> dict | None:
        """The recorded cache description (``vectors.json``) in the first place that has a readable one."""
        for folder in self.cache_folders():
            meta = _read_cache_meta(folder / FAISS_META)
            if meta is not None:
                return meta
        return None

    def _load_cached_store(self, binding: dict):
        """(store, exact) from the first cache file of this database's lineage that checks out."""
        from .vectors import Calibration, VectorStore

        for folder in self.cache_folders():
            meta = _read_cache_meta(folder / FAISS_META)
            if meta is None or meta.get("format") != CACHE_FORMAT or meta.get("index_id") != binding["index_id"] \
                    or meta.get("dim") != self.dim:
                continue
            exact = all(meta.get(k) == v for k, v in binding.items())
            if not exact and not self.in_history(meta.get("generation"), meta.get("revision")):
                continue
            path = folder / FAISS_NAME
            try:
                kind = meta.get("kind")
                size = path.stat().st_size
                if not isinstance(kind, str) or size != meta.get("size") or not _file_checks_out(path, meta):
                    continue
                store = VectorStore.load(path, kind, meta.get("settings"))
                if store.ntotal != meta.get("count"):
                    continue
                trained, recall = meta.get("trained_at", 0), meta.get("recall")
                if not isinstance(trained, int) or not isinstance(recall, dict) or not all(
                        isinstance(k, str) and isinstance(v, float) for k, v in recall.items()):
                    continue
                store.trained_at, store.recall = trained, dict(recall)
                calib = meta.get("calibration")
                if calib is not None:
                    calib_path = folder / CALIB_NAME
                    if calib_path.stat().st_size > MAX_CALIB_BYTES or _sha256(calib_path) != calib:
                        continue
                    with np.load(calib_path, allow_pickle=False) as arrays:
                        store.calibration = Calibration.from_arrays(dict(arrays), self.dim)
                if size > FULL_CHECK_BYTES:
                    store.verifying = _verify_in_background(store, path, str(meta.get("sha256")))
                return store, exact
            except Exception as exc:  # noqa: BLE001 — a derived cache: anything wrong with it means "rebuild"
                _log.debug("Ignoring the vector cache in %s: %s", folder, exc)
        return None, False

    def _save_store(self, store, binding: dict) -> None:
        """Write the cache beside the database, or in the user's cache folder where the index is read-only.

        The FAISS file and the calibration sidecar are written first, the description binding them
        (with their checksums) last, each atomically. A full disk or an unwritable place only means
        the cache stays in memory: searches still work.
        """
        for folder in self.cache_folders():
            if folder == self.folder and not folder_is_writable(folder):
                continue
            try:
                folder.mkdir(parents=True, exist_ok=True)
                meta = dict(binding, count=store.ntotal, format=CACHE_FORMAT, kind=store.kind, dim=self.dim,
                            settings={k: list(v) for k, v in store.settings.items()}, trained_at=store.trained_at,
                            recall=store.recall, calibration=None)
                _unlink_quietly(folder / FAISS_META)  # a stale description must not bind the new files
                store.save(folder / FAISS_NAME)
                if store.calibration is not None:
                    arrays = store.calibration.arrays()
                    atomic_write(folder / CALIB_NAME, functools.partial(_save_npz, arrays=arrays))
                    meta["calibration"] = _sha256(folder / CALIB_NAME)
                path = folder / FAISS_NAME
                meta.update(size=path.stat().st_size, sha256=_sha256(path), sampled=_sampled_digest(path))
                atomic_write_bytes(folder / FAISS_META, json.dumps(meta).encode())
                return
            except (OSError, RuntimeError) as exc:
                _log.debug("Could not write the vector cache in %s: %s", folder, exc)
                for name in (FAISS_META,):
                    _unlink_quietly(folder / name)
                if folder == self.folder:
                    return  # a full disk here: keep the cache in memory rather than spill elsewhere


def _id_chunks(ids: Iterable[int], size: int = 250_000) -> Iterator[str]:
    """Ids as JSON arrays of at most ``size`` (for ``json_each``): one statement per chunk, not per id."""
    arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).reshape(-1)
    for start in range(0, len(arr), size):
        yield json.dumps(arr[start:start + size].tolist())


def _save_npz(path: str, *, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _sampled_digest(path: Path, blocks: int = 64, block: int = 4096) -> str:
    """SHA-256 of the size and ``blocks`` evenly spaced blocks of a file (head and tail included): cheap on open."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for n in range(blocks):
            fh.seek(max(0, (size - block) * n // max(blocks - 1, 1)))
            digest.update(fh.read(block))
    return digest.hexdigest()


def _file_checks_out(path: Path, meta: dict) -> bool:
    """Size and sampled blocks always; every byte (SHA-256) too when the file is small."""
    if _sampled_digest(path) != meta.get("sampled"):
        return False
    return path.stat().st_size > FULL_CHECK_BYTES or _sha256(path) == meta.get("sha256")


def _verify_in_background(store, path: Path, sha256: str) -> threading.Thread:
    """Hash a large cache file in a daemon thread while searches use it.

    A mismatch marks the store damaged (the next ``vector_store`` rebuilds it) and, where the
    description beside the file still names this checksum, removes that description, so that no
    later process trusts the file either. Until then a damaged file can only cost recall, never
    a wrong score: every candidate is re-ranked with the database's own vectors.
    """
    def check() -> None:
        try:
            ok = _sha256(path) == sha256
        except OSError:
            ok = False
        if ok:
            return
        store.damaged = True
        _log.warning("The vector cache %s is damaged (its checksum differs); it will be rebuilt from the "
                     "database.", path)
        meta_path = path.parent / FAISS_META
        meta = _read_cache_meta(meta_path)
        if meta is not None and meta.get("sha256") == sha256:
            _unlink_quietly(meta_path)

    thread = threading.Thread(target=check, name="rsclip-cache-check", daemon=True)
    thread.start()
    return thread


def _read_cache_meta(path: Path) -> dict | None:
    try:
        if path.stat().st_size > MAX_CACHE_META:
            return None
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _same_bands(stored: object, bands: Sequence[int]) -> bool:
    try:
        return isinstance(stored, str) and tuple(json.loads(stored)) == tuple(bands)
    except (ValueError, TypeError):
        return False


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _connect(path: Path, mode: str = "rw", wal: bool = True) -> sqlite3.Connection:
    """A connection: "rw"; "ro" (read-only, WAL honoured); "immutable" (read-only media, no locking)."""
    if mode == "rw":
        conn = sqlite3.connect(str(path), timeout=30, isolation_level="DEFERRED", check_same_thread=False)
    else:
        uri = Path(path).absolute().as_uri() + ("?mode=ro&immutable=1" if mode == "immutable" else "?mode=ro")
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level="DEFERRED", check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA temp_store=MEMORY")
    # Reads through a memory map: re-ranking reads a few hundred embeddings at random, 2.5× faster than
    # through read() calls (SQLite maps at most its compile-time limit, 2 GiB in common builds).
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    if mode == "rw":
        if wal:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError:
                pass
            # Checkpoint every ~1 MiB of WAL (SQLite's default is 1,000 pages: 32 MiB at 32 KiB pages) and
            # keep the WAL file that small after: an index on a nearly full disk needs little room to grow.
            page = int(conn.execute("PRAGMA page_size").fetchone()[0]) or 4096
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, WAL_BYTES // page)}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_BYTES}")
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _open_connection(db: Path, folder: Path) -> tuple[sqlite3.Connection, str]:
    """Open read-write where the folder allows it, else read-only; damage gives the damaged sentence."""
    writable = folder_is_writable(folder) and os.access(db, os.W_OK)
    modes = ("rw", "ro", "immutable") if writable else ("ro", "immutable")
    last: sqlite3.Error | None = None
    for mode in modes:
        conn = None
        try:
            conn = _connect(db, mode)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            if mode == "immutable" and _has_wal(db):
                _log.warning("The index at %s is on read-only storage with changes in %s-wal that cannot be read "
                             "there; it is shown as it was before them.", folder, DB_NAME)
            return conn, mode
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            last = exc
            text = str(exc).lower()
            if not ("unable to open" in text or "readonly" in text or "read-only" in text or "locking" in text
                    or "disk i/o" in text):
                break
    raise EngineError(f"The index database {db} is damaged or not an index ({last}).")


def _has_wal(db: Path) -> bool:
    try:
        return Path(f"{db}-wal").stat().st_size > 0
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on ``path``; released when the process dies."""
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise os_storage_error(exc, path.parent) from None
    try:
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise EngineError(f"The index at {path.parent} is being written by another process; "
                              "wait for it to finish and try again.") from None
        yield
    finally:
        fh.close()


__all__ = ["DamagedIndexError", "DB_NAME", "FAISS_META", "FAISS_NAME", "LOCK_NAME", "MIGRATIONS", "READ_VIEWS",
           "SCHEMA_VERSION", "RasterRecord", "StorageError", "TileIndex", "TileRecord", "checked_footprint", "is_index",
           "migration"]
