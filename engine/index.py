"""An index is a folder: a SQLite database of rasters, tiles and embeddings, plus a FAISS file.

SQLite is the source of truth and is written in transactions (one per batch of tiles), so
an interrupted run leaves every committed batch searchable and nothing half-written. The
FAISS file is a cache derived from it (see ``vectors.py``). One writer at a time holds a
lock file; readers see the last committed state (SQLite WAL mode).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .atomic import atomic_write_bytes
from .errors import EngineError

DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"
FAISS_META = "vectors.json"
LOCK_NAME = "index.lock"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rasters (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    crs_wkt TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bands TEXT NOT NULL,
    status TEXT NOT NULL,
    planned INTEGER NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    id INTEGER PRIMARY KEY,
    raster_id INTEGER NOT NULL REFERENCES rasters(id) ON DELETE CASCADE,
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    footprint TEXT NOT NULL,
    footprint_wgs84 TEXT NOT NULL,
    embedding BLOB NOT NULL,
    UNIQUE (raster_id, col_off, row_off, width, height)
);
CREATE INDEX IF NOT EXISTS tiles_raster ON tiles(raster_id);
"""


@dataclass(frozen=True)
class TileRecord:
    """One indexed tile as stored: where it is, never its pixels."""

    id: int
    raster: str
    raster_id: int
    window: tuple[int, int, int, int]
    bounds: tuple[float, float, float, float]
    footprint_wkt: str
    footprint_wgs84_wkt: str
    crs_wkt: str


@dataclass(frozen=True)
class RasterRecord:
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


def is_index(folder: Path | str) -> bool:
    return (Path(folder) / DB_NAME).is_file()


class TileIndex:
    """Open handle on an index folder. Use ``open_index``/``create_index`` to get one."""

    def __init__(self, folder: Path, conn: sqlite3.Connection) -> None:
        self.folder = folder
        self.conn = conn
        self._store = None
        self._store_generation = -1

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path | str) -> "TileIndex":
        """Open an existing index for reading (and writing under ``writing()``)."""
        folder = Path(folder).expanduser().resolve()
        db = folder / DB_NAME
        if not db.is_file():
            if folder.is_dir() and any(folder.iterdir()) or folder.is_file():
                raise EngineError(f"{folder} is not an RS-CLIP Search index (no {DB_NAME} in it).")
            raise EngineError(f"No index at {folder}; build one first with 'index'.")
        try:
            conn = _connect(db)
        except sqlite3.DatabaseError as exc:
            raise EngineError(f"The index database {db} is damaged or not an index ({exc}).") from None
        try:
            version = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise EngineError(f"The index database {db} is damaged or not an index ({exc}).") from None
        if version is None or int(version[0]) != SCHEMA_VERSION:
            conn.close()
            raise EngineError(f"{db} has an unknown index format; rebuild the index with this version.")
        return cls(folder, conn)

    @classmethod
    def create(cls, folder: Path | str, model: dict, tiling: dict, dim: int) -> "TileIndex":
        """Create a new empty index recording the model and tiling it is built with."""
        folder = Path(folder).expanduser().resolve()
        if (folder / DB_NAME).exists():
            return cls.open(folder)
        if folder.is_file():
            raise EngineError(f"{folder} is a file; the index needs a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{DB_NAME}.creating"
        if tmp.exists():
            tmp.unlink()
        conn = _connect(tmp, wal=False)
        with conn:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                ("schema", str(SCHEMA_VERSION)),
                ("model", json.dumps(model, sort_keys=True)),
                ("tiling", json.dumps(tiling, sort_keys=True)),
                ("dim", str(int(dim))),
                ("generation", "0"),
                ("created", str(time.time())),
                ("updated", str(time.time())),
            ])
        conn.close()
        os.replace(tmp, folder / DB_NAME)
        return cls.open(folder)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "TileIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def model(self) -> dict:
        return json.loads(self._meta("model") or "{}")

    @property
    def tiling(self) -> dict:
        return json.loads(self._meta("tiling") or "{}")

    @property
    def dim(self) -> int:
        return int(self._meta("dim") or 0)

    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    @property
    def created(self) -> float:
        return float(self._meta("created") or 0)

    @property
    def updated(self) -> float:
        return float(self._meta("updated") or 0)

    def tile_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])

    def rasters(self) -> list[RasterRecord]:
        rows = self.conn.execute(
            "SELECT r.id, r.path, r.fingerprint, r.crs_wkt, r.width, r.height, r.bands, r.status, r.planned,"
            " (SELECT COUNT(*) FROM tiles t WHERE t.raster_id = r.id) FROM rasters r ORDER BY r.id").fetchall()
        return [RasterRecord(r[0], r[1], r[2], r[3], r[4], r[5], tuple(json.loads(r[6])), r[7], r[8], r[9])
                for r in rows]

    def raster(self, path: str) -> RasterRecord | None:
        return next((r for r in self.rasters() if r.path == path), None)

    # -- writing -------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator["TileIndex"]:
        """Hold the index's writer lock; a second writer is refused with a clear message."""
        with _file_lock(self.folder / LOCK_NAME):
            yield self

    def begin_raster(self, path: str, fingerprint: str, crs_wkt: str, width: int, height: int,
                     bands: Sequence[int], planned: int) -> tuple[int, set[tuple[int, int, int, int]]]:
        """Register a raster to index; returns its id and the windows already committed.

        A raster whose fingerprint changed since it was indexed loses its old tiles first.
        """
        row = self.conn.execute("SELECT id, fingerprint, bands FROM rasters WHERE path=?", (path,)).fetchone()
        with self.conn:
            if row is not None and (row[1] != fingerprint or tuple(json.loads(row[2])) != tuple(bands)):
                self._delete_raster(row[0])
                row = None
            if row is None:
                cur = self.conn.execute(
                    "INSERT INTO rasters(path, fingerprint, crs_wkt, width, height, bands, status, planned, added_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'partial', ?, ?)",
                    (path, fingerprint, crs_wkt, width, height, json.dumps(list(bands)), planned, time.time()))
                raster_id = cur.lastrowid
                assert raster_id is not None, "an INSERT into a rowid table sets lastrowid"
                return raster_id, set()
        done = self.conn.execute(
            "SELECT col_off, row_off, width, height FROM tiles WHERE raster_id=?", (row[0],)).fetchall()
        return int(row[0]), {tuple(r) for r in done}

    def add_tiles(self, raster_id: int, tiles: Sequence, embeddings: np.ndarray) -> None:
        """Commit one batch of tiles with their embeddings in a single transaction."""
        if len(tiles) != len(embeddings):
            raise ValueError("tiles and embeddings differ in length")
        if len(tiles) == 0:
            return
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.shape[1] != self.dim:
            raise EngineError(f"Embeddings have {emb.shape[1]} dimensions but the index holds {self.dim}.")
        rows = [(raster_id, t.window.col_off, t.window.row_off, t.window.width, t.window.height,
                 *t.bounds, t.footprint_wkt, t.footprint_wgs84_wkt, e.tobytes()) for t, e in zip(tiles, emb)]
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO tiles(raster_id, col_off, row_off, width, height, minx, miny, maxx, maxy,"
                " footprint, footprint_wgs84, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._bump()

    def set_planned(self, raster_id: int, planned: int) -> None:
        """Record how many tiles a raster plans (it grows when scales are added to the index)."""
        with self.conn:
            self.conn.execute("UPDATE rasters SET planned=? WHERE id=? AND planned<>?", (planned, raster_id, planned))

    def add_scales(self, tiling: dict) -> None:
        """Record tiling settings with more scales (engine/scales.py): every raster is reopened, so indexing it
        again embeds the new scales' windows and skips those already stored."""
        with self.conn:
            self.conn.execute("UPDATE meta SET value=? WHERE key='tiling'", (json.dumps(tiling, sort_keys=True),))
            self.conn.execute("UPDATE rasters SET status='partial'")

    def finish_raster(self, raster_id: int) -> None:
        with self.conn:
            self.conn.execute("UPDATE rasters SET status='complete' WHERE id=?", (raster_id,))
            self._bump()

    def remove_raster(self, path: str) -> int:
        """Drop a raster and its tiles; returns how many tiles went."""
        row = self.conn.execute("SELECT id FROM rasters WHERE path=?", (path,)).fetchone()
        if row is None:
            raise EngineError(f"{path} is not in the index at {self.folder}.")
        with self.conn:
            n = self._delete_raster(row[0])
            self._bump()
        return n

    def _delete_raster(self, raster_id: int) -> int:
        n = self.conn.execute("DELETE FROM tiles WHERE raster_id=?", (raster_id,)).rowcount
        self.conn.execute("DELETE FROM rasters WHERE id=?", (raster_id,))
        return n

    def _bump(self) -> None:
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
        self.conn.execute("UPDATE meta SET value = ? WHERE key='updated'", (str(time.time()),))

    # -- reading -------------------------------------------------------------------
    _TILE_SQL = ("SELECT t.id, r.path, r.id, t.col_off, t.row_off, t.width, t.height, t.minx, t.miny, t.maxx, t.maxy,"
                 " t.footprint, t.footprint_wgs84, r.crs_wkt FROM tiles t JOIN rasters r ON r.id = t.raster_id")

    def tiles(self, ids: Iterable[int]) -> dict[int, TileRecord]:
        ids = [int(i) for i in ids]
        out: dict[int, TileRecord] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            sql = f"{self._TILE_SQL} WHERE t.id IN ({','.join('?' * len(part))})"
            for r in self.conn.execute(sql, part):
                out[r[0]] = _tile_record(r)
        return out

    def iter_tiles(self, raster_paths: Sequence[str] | None = None) -> Iterator[TileRecord]:
        sql, args = self._TILE_SQL, []
        if raster_paths:
            sql += f" WHERE r.path IN ({','.join('?' * len(raster_paths))})"
            args = list(raster_paths)
        for r in self.conn.execute(sql + " ORDER BY t.id", args):
            yield _tile_record(r)

    def embeddings(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) for the given tiles, or for all of them in id order."""
        if ids is None:
            rows = self.conn.execute("SELECT id, embedding FROM tiles ORDER BY id").fetchall()
        else:
            rows = []
            ids = [int(i) for i in ids]
            for chunk in range(0, len(ids), 500):
                part = ids[chunk:chunk + 500]
                marks = ",".join("?" * len(part))
                rows += self.conn.execute(f"SELECT id, embedding FROM tiles WHERE id IN ({marks}) ORDER BY id",
                                          part).fetchall()
        out_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.empty((len(rows), self.dim), dtype=np.float32)
        for i, r in enumerate(rows):
            vec = np.frombuffer(r[1], dtype=np.float32)
            if vec.shape[0] != self.dim:
                raise EngineError(f"Tile {r[0]} in {self.folder} has a damaged embedding; rebuild the index.")
            vecs[i] = vec
        return out_ids, vecs

    def vector_store(self):
        """The FAISS store for the current committed state, loaded from cache or rebuilt."""
        from .vectors import VectorStore

        gen = self.generation
        if self._store is not None and self._store_generation == gen:
            return self._store
        store = self._load_cached_store(gen)
        if store is None:
            ids, vecs = self.embeddings()
            store = VectorStore.build(ids, vecs)
            self._save_store(store, gen)
        self._store, self._store_generation = store, gen
        return store

    def _load_cached_store(self, gen: int):
        from .vectors import VectorStore

        meta_path, faiss_path = self.folder / FAISS_META, self.folder / FAISS_NAME
        try:
            meta = json.loads(meta_path.read_text())
            if int(meta["generation"]) != gen or _sha256(faiss_path) != meta["sha256"]:
                return None
            store = VectorStore.load(faiss_path, str(meta.get("kind", "flat")))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return None
        return store if store.ntotal == int(meta.get("count", -1)) else None

    def _save_store(self, store, gen: int) -> None:
        """Write the FAISS cache; skipped silently where the folder is read-only."""
        try:
            store.save(self.folder / FAISS_NAME)
            meta = {"generation": gen, "sha256": _sha256(self.folder / FAISS_NAME), "count": store.ntotal,
                    "kind": store.kind}
            atomic_write_bytes(self.folder / FAISS_META, json.dumps(meta).encode())
        except OSError:
            pass


def _tile_record(r) -> TileRecord:
    return TileRecord(id=r[0], raster=r[1], raster_id=r[2], window=(r[3], r[4], r[5], r[6]),
                      bounds=(r[7], r[8], r[9], r[10]), footprint_wkt=r[11], footprint_wgs84_wkt=r[12], crs_wkt=r[13])


def _connect(path: Path, wal: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level="DEFERRED", check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    if wal:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError:
            pass
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on ``path``; released when the process dies."""
    fh = open(path, "a+")
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
