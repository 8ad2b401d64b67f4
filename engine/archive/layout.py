"""An index in the archive layout: where its vectors are, and the seam through which the index reads them.

The database's ``meta`` row ``vector_archive`` (JSON: the archive's id, ``max_id``, ``cleared``)
says that the vectors of tiles with ids up to ``max_id`` live in the index folder's ``archive/``
(float16 shards + IVF-PQ, ``engine.archive.store``); their ``embedding`` cells in SQLite are
emptied (up to ``cleared``) once that row is written. Tiles above ``max_id`` — batches committed
since the last seal — keep their float32 embedding in SQLite, as in any index, and are scored
exactly beside the archive's candidates. SQLite keeps the rasters, the tiles and their footprints.

How the engine gets there, always as the index's single writer:

* ``convert``: the archive is built from the database's vectors (streamed, shard by shard), then
  the ``vector_archive`` row is written in one transaction and the float32 cells are emptied in
  batches. Interrupted anywhere, the index stays as it was until the switch, and the next run
  resumes the archive from its manifest.
* ``seal``: a tail of at least a shard (during indexing) or all of it (at the end of a job) becomes
  new shards with a segment each; ``max_id`` moves in one transaction. Shards written before an
  interruption are adopted by the next seal, never written twice.
* ``maintain`` (end of every job that changes the index): converts an index that has grown past
  ``ARCHIVE_THRESHOLD_BYTES`` of float32 vectors, seals, records removed tiles, re-trains when the
  archive has outgrown its training, re-checks the recall, and drops the old FAISS cache.

Readers only read: ``archived_store`` is what ``TileIndex.vector_store`` returns for such an
index (the same ``search(queries, k)`` as ``engine.vectors.VectorStore``), ``split_embeddings``
what ``TileIndex.embeddings`` reads from the archive.
"""
from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import EngineError
from ..storage import os_storage_error
from . import store as archive_store
from .shards import SHARD_SIZE, archive_damaged

FOLDER = "archive"
META_KEY = "vector_archive"
#: An index moves to the archive layout once its float32 vectors pass this many bytes: 4 GiB, two million
#: 512-d tiles. Below it the SQLite layout is the better one: since its compact storage (#16) its folder
#: takes about 1.2 times the float32 vectors (bench/million.md), and its fast-scan search index answers a
#: million tiles from memory faster than the archive's on-disk lists. What limits it is the rebuild of that
#: search index, which holds every float32 vector in memory: 4 GB here, half the 8 GB the archive issue
#: allows a machine like this one (10^7 tiles would need 20 GB).
ARCHIVE_THRESHOLD_BYTES = 4 << 30
#: While indexing, the search is calibrated again each time the archive has grown by this factor (and always
#: at the end of the job).
RECALIBRATE_GROWTH = 1.25
#: Fewest tiles an archive is built for: PQ codes of 8 bits need 256 × 39 training vectors.
MIN_TILES = 10_000
#: Restricted searches over at most this many archived tiles score them all exactly.
EXACT_ALLOWED = 65536
_CHUNK = 65536
#: Tile ids whose float32 cells one transaction empties (16,384 rows: 32 MB of 512-d vectors).
_CLEAR_BATCH = 16384

ProgressFn = Callable[[float, str], None]


def threshold_tiles(dim: int) -> int:
    """Tiles past which an index of ``dim``-d vectors moves to the archive layout."""
    return ARCHIVE_THRESHOLD_BYTES // (4 * max(int(dim), 1))


@dataclass(frozen=True)
class Pointer:
    """The database's record of its archive."""

    archive_id: str
    max_id: int
    cleared: int

    def text(self) -> str:
        return json.dumps({"archive_id": self.archive_id, "max_id": self.max_id, "cleared": self.cleared})


def read_pointer(idx) -> Pointer | None:
    """The ``vector_archive`` row of an open index (None: its vectors are all in SQLite)."""
    row = idx.conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    if row is None:
        return None
    try:
        raw = json.loads(row[0])
        pointer = Pointer(raw["archive_id"], raw["max_id"], raw["cleared"])
    except (TypeError, ValueError, KeyError):
        raise archive_damaged(idx.folder, "its vector archive entry is not as written") from None
    if not (isinstance(pointer.archive_id, str) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                         for v in (pointer.max_id, pointer.cleared))):
        raise archive_damaged(idx.folder, "its vector archive entry is not as written")
    return pointer


def _write_pointer(idx, pointer: Pointer) -> None:
    with idx.write_transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (META_KEY, pointer.text()))


def archive_folder(idx) -> Path:
    return Path(idx.folder) / FOLDER


_OPENED: dict[str, tuple[tuple, archive_store.Archive]] = {}


def open_archive(idx, pointer: Pointer) -> archive_store.Archive:
    """The index's archive, checked against the database's record; reopened only when its manifest changed."""
    folder = archive_folder(idx)
    try:
        st = (folder / archive_store.MANIFEST).stat()
        key: tuple = (st.st_ino, st.st_mtime_ns, st.st_size, pointer.archive_id, idx.index_id)
    except OSError:
        key = ()
    cached = _OPENED.get(str(folder))
    if key and cached is not None and cached[0] == key:
        return cached[1]
    archive = archive_store.Archive.open(folder)
    if archive.archive_id != pointer.archive_id or archive.manifest["index_id"] != idx.index_id:
        raise archive_damaged(idx.folder, "its vector archive belongs to another index")
    if not archive.ready or archive.max_id < pointer.max_id:
        raise archive_damaged(idx.folder, "its vector archive lacks vectors the index records")
    if key:
        _OPENED[str(folder)] = (key, archive)
    return archive


# -- reading -----------------------------------------------------------------------------------------
class ArchiveStore:
    """What ``TileIndex.vector_store`` gives for an index in the archive layout: ``search(queries, k)``.

    Candidates come from the archive's IVF-PQ and are re-ranked exactly from its float16 vectors;
    the tail (tiles above ``max_id``, float32 in SQLite) is scored exactly beside them. Tiles of a
    re-index not yet finished (``hidden``) and tiles removed since the archive last recorded it
    (``extra_removed``, found by a rebuild) are never returned.
    """

    approximate = True
    damaged = False

    def __init__(self, archive: archive_store.Archive, pointer: Pointer, tail_ids: np.ndarray, tail_vecs: np.ndarray,
                 hidden: np.ndarray, extra_removed: np.ndarray | None = None) -> None:
        self.archive = archive
        self.pointer = pointer
        self.tail_ids = tail_ids
        self.tail_vecs = tail_vecs
        self.hidden = np.union1d(hidden, extra_removed) if extra_removed is not None else hidden
        settings = archive.settings()
        self.recall: dict[str, float] = dict(settings.get("recall") or {})
        self.kind = kind_of(archive)

    @property
    def ntotal(self) -> int:
        return self.archive.count - len(self.archive.removed) + len(self.tail_ids)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row, best first and scored exactly; ids of -1 mark missing results.

        ``kind`` ("text", "image") chooses the setting calibrated for such queries; without it the
        query's side of the modality gap does.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.archive.dim)
        k = max(0, int(k))
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        if k == 0:
            return scores, ids
        allowed_arr = None if allowed is None else np.unique(np.asarray(allowed, dtype=np.int64))
        tail_ok = np.ones(len(self.tail_ids), bool) if allowed_arr is None else np.isin(self.tail_ids, allowed_arr)
        archived_allowed = None if allowed_arr is None else allowed_arr[allowed_arr <= self.pointer.max_id]
        for row, query in enumerate(q):
            if archived_allowed is not None and len(archived_allowed) <= EXACT_ALLOWED:
                a_ids, a_scores = self.archive.exact(query, np.setdiff1d(archived_allowed, self.hidden))
            elif archived_allowed is not None and not len(archived_allowed):
                a_ids, a_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
            else:
                a_ids, a_scores = self.archive.search(query, k, archived_allowed, self.pointer.max_id, self.hidden,
                                                      kind=kind)[0]
            t_ids, t_scores = self.tail_ids[tail_ok], self.tail_vecs[tail_ok] @ query
            all_ids = np.concatenate([a_ids, t_ids])
            all_scores = np.concatenate([a_scores, t_scores]).astype(np.float32)
            order = np.argsort(-all_scores, kind="stable")[:k]
            scores[row, :len(order)] = all_scores[order]
            ids[row, :len(order)] = all_ids[order]
        return scores, ids


def kind_of(archive: archive_store.Archive) -> str:
    """The search structure in the words of ``VectorStore.kind``: "archive ivf<nlist>,pq<m>,nprobe=…,rerank=…"."""
    from .ivfpq import pq_subquantizers

    live = archive.live
    settings = archive.settings()
    nlist = live["trained"]["nlist"] if live else 0
    return (f"archive ivf{nlist},pq{pq_subquantizers(archive.dim)},nprobe={settings['nprobe']},"
            f"rerank={settings['rerank']}")


def describe(archive: archive_store.Archive) -> str:
    """One line for ``info``: what the archive holds and the recall its search was calibrated to."""
    measured = archive.settings().get("recall") or {}
    recall = ", ".join(f"{kind} {value:.2f}" for kind, value in sorted(measured.items()))
    shards = len(archive.manifest["shards"])
    return (f"{archive.count:,} float16 vectors in {shards} shard{'s' if shards != 1 else ''}, searched by "
            f"{kind_of(archive)}" + (f"; recall@10 {recall}" if recall else ""))


_STORES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def archived_store(idx, rebuild: bool = False) -> ArchiveStore | None:
    """The store of an index in the archive layout (None for any other index), kept per state of the index.

    ``rebuild`` (a search found ids the database lacks) also compares the archive's ids with the
    database's, in memory: a job that removed tiles and was stopped before recording them leaves that.
    """
    pointer = read_pointer(idx)
    if pointer is None:
        return None
    archive = open_archive(idx, pointer)
    key = (idx.generation, idx.revision, pointer, id(archive))
    cached = _STORES.get(idx)
    if cached is not None and cached[0] == key and not rebuild:
        return cached[1]
    tail = np.fromiter((r[0] for r in idx.conn.execute(
        "SELECT t.id FROM tiles t JOIN rasters r ON r.id = t.raster_id AND r.status != 'staging' WHERE t.id > ? "
        "ORDER BY t.id", (pointer.max_id,))), dtype=np.int64)
    tail_ids, tail_vecs = idx.embeddings(tail.tolist()) if len(tail) else (tail, np.zeros((0, idx.dim), np.float32))
    hidden = np.fromiter((r[0] for r in idx.conn.execute(
        "SELECT t.id FROM tiles t JOIN rasters r ON r.id = t.raster_id WHERE r.status = 'staging' AND t.id <= ? "
        "ORDER BY t.id", (pointer.max_id,))), dtype=np.int64)
    extra = _gone(idx, archive, pointer) if rebuild else None
    result = ArchiveStore(archive, pointer, tail_ids, tail_vecs, hidden, extra)
    _STORES[idx] = (key, result)
    return result


def _gone(idx, archive: archive_store.Archive, pointer: Pointer) -> np.ndarray:
    """Archived ids that are no longer rows of the database (all of them, not only those recorded)."""
    present = np.fromiter((r[0] for r in idx.conn.execute("SELECT id FROM tiles WHERE id <= ? ORDER BY id",
                                                          (pointer.max_id,))), dtype=np.int64)
    return np.setdiff1d(archive.shards.all_ids(), present, assume_unique=True)


def memory_budget() -> int:
    """Bytes of float32 vectors a job may hold at once: a quarter of the machine's memory."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass
class ArchivedPart:
    """The vectors ``TileIndex.embeddings`` takes from the archive, and the ids it must still read from SQLite."""

    ids: np.ndarray
    vectors: np.ndarray
    rest: list[int]

    def join(self, rest_ids: np.ndarray, rest_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate([self.ids, np.asarray(rest_ids, dtype=np.int64)])
        rest = np.asarray(rest_vecs, dtype=np.float32).reshape(-1, self.vectors.shape[1])
        vecs = np.concatenate([self.vectors, rest])
        order = np.argsort(ids, kind="stable")
        return ids[order], vecs[order]


def split_embeddings(idx, ids: Iterable[int] | None) -> ArchivedPart | None:
    """For an index in the archive layout: the archived tiles' vectors (float16 widened), the rest by id.

    None for any other index. Reading more vectors than ``memory_budget`` allows is refused with a sentence.
    """
    pointer = read_pointer(idx)
    if pointer is None:
        return None
    archive = open_archive(idx, pointer)
    live = "JOIN rasters r ON r.id = t.raster_id AND r.status != 'staging'"
    if ids is None:
        archived = np.fromiter((r[0] for r in idx.conn.execute(
            f"SELECT t.id FROM tiles t {live} WHERE t.id <= ? ORDER BY t.id", (pointer.max_id,))), dtype=np.int64)
        rest = [r[0] for r in idx.conn.execute(f"SELECT t.id FROM tiles t {live} WHERE t.id > ? ORDER BY t.id",
                                               (pointer.max_id,))]
    else:
        wanted = np.unique(np.asarray(list(ids), dtype=np.int64))
        archived = wanted[wanted <= pointer.max_id]
        archived = np.array(sorted(idx.present(archived.tolist())), dtype=np.int64) if len(archived) else archived
        rest = wanted[wanted > pointer.max_id].tolist()
    need = (len(archived) + len(rest)) * 4 * idx.dim
    if need > memory_budget():
        raise EngineError(f"The index at {idx.folder} holds {len(archived) + len(rest):,} tiles in the archive layout; "
                          f"reading all their vectors at once needs about {need / 1e9:.1f} GB of memory. Restrict the "
                          "job to some rasters or an area.")
    found, vecs = archive.shards.vectors(archived)
    if not found.all():
        missing = int(archived[np.flatnonzero(~found)[0]])
        raise archive_damaged(idx.folder, f"tile {missing} has no vector in its archive")
    return ArchivedPart(archived, vecs, rest)


# -- writing (the index's single writer) -------------------------------------------------------------------
def _sqlite_chunks(idx, above: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of every tile row with an id above ``above`` (staging ones too), ascending."""
    width = 4 * idx.dim
    last = above
    while True:
        rows = idx.conn.execute("SELECT id, embedding FROM tiles WHERE id > ? ORDER BY id LIMIT ?",
                                (last, _CHUNK)).fetchall()
        if not rows:
            return
        bad = next((r[0] for r in rows if type(r[1]) is not bytes or len(r[1]) != width), None)
        if bad is not None:
            raise archive_damaged(idx.folder, f"tile {bad} has no embedding, neither in SQLite nor in its archive")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), idx.dim)
        if not np.isfinite(vecs).all():
            raise archive_damaged(idx.folder, "a tile embedding is not finite")
        yield ids, vecs
        last = int(ids[-1])


def _writable_archive(idx, pointer: Pointer | None) -> archive_store.Archive:
    """The archive to add to: the pointed one, a build this index left unfinished, or a new one."""
    folder = archive_folder(idx)
    if pointer is not None:
        archive = archive_store.Archive.open(folder)
        if archive.archive_id != pointer.archive_id or archive.manifest["index_id"] != idx.index_id:
            raise archive_damaged(idx.folder, "its vector archive belongs to another index")
        return archive
    if (folder / archive_store.MANIFEST).is_file():
        try:
            archive = archive_store.Archive.open(folder)
            if archive.manifest["index_id"] == idx.index_id and archive.dim == idx.dim:
                return archive  # resume
        except EngineError:
            pass
        for entry in os.scandir(folder):  # a stale or foreign build: nothing points at it
            if entry.is_file():
                os.unlink(entry.path)
    return archive_store.Archive.create(folder, idx.dim, idx.index_id, SHARD_SIZE)


def model_text_sample(idx) -> np.ndarray | None:
    """The text queries the archive calibrates on: the index's stored text sample (``querysample``: the shipped
    class sets embedded by its own model through its templates), else that sample embedded now and stored,
    when the model is at hand. None when it is not (weights not downloaded, or not a model this machine
    loads): the archive then calibrates on image queries alone. Nothing is downloaded for it."""
    import logging

    from ..jobs import get_encoder
    from ..models import REGISTRY, ModelRef, is_cached
    from ..querysample import store_text_sample

    stored = idx.query_sample("text")
    if stored is not None:
        return stored[1]
    model = idx.model
    try:
        ref = ModelRef.from_dict(model)
        if model.get("kind") == "registry" and not (ref.name in REGISTRY and is_cached(REGISTRY[ref.name])):
            return None
        if idx.readonly:
            return None
        store_text_sample(idx, get_encoder(model))
    except (EngineError, OSError, ValueError, KeyError, TypeError) as exc:
        logging.getLogger("rsclip_search.engine").info("The archive of %s calibrates on image queries only: %s",
                                                       idx.folder, exc)
        return None
    stored = idx.query_sample("text")
    return stored[1] if stored is not None else None


def convert(idx, progress: ProgressFn | None = None, cancel=None, text_queries=None) -> None:
    """Move an index's vectors into the archive layout (see the module's description)."""
    from ..progress import no_progress, scaled

    say = progress or no_progress
    count = idx.tile_count()
    if count < MIN_TILES:
        raise EngineError(f"The index at {idx.folder} has {count:,} tiles; the archive layout is for indexes of "
                          f"millions of tiles and needs at least {MIN_TILES:,} to train its search index (an index "
                          f"moves there by itself past {threshold_tiles(idx.dim):,} tiles).")
    import logging

    logging.getLogger("rsclip_search.engine").info(
        "Moving the %s tile vectors of %s to the archive layout (float16 shards searched through an IVF-PQ); this "
        "takes a while once, and resumes if stopped.", f"{count:,}", idx.folder)
    try:
        archive = _writable_archive(idx, None)
        say(0.0, f"Moving {count:,} tile vectors to the archive layout")
        texts = text_queries if text_queries is not None else (lambda: model_text_sample(idx))
        archive_store.build(archive, _sqlite_chunks(idx, archive.max_id), texts, scaled(say, 0.0, 0.9), cancel)
    except OSError as exc:
        raise os_storage_error(exc, idx.folder) from None
    pointer = Pointer(archive.archive_id, archive.max_id, 0)
    _write_pointer(idx, pointer)
    _clear(idx, pointer, scaled(say, 0.9, 0.97))
    _drop_old_cache(idx)
    _compact(idx, say)


def seal(idx, full_only: bool = False, progress: ProgressFn | None = None, cancel=None) -> int:
    """Move the tail's vectors into new shards (only whole shards with ``full_only``); returns how many."""
    from ..progress import no_progress

    say = progress or no_progress
    pointer = read_pointer(idx)
    if pointer is None:
        return 0
    try:
        archive = _writable_archive(idx, pointer)
        if archive.max_id > pointer.max_id:  # shards an interrupted seal wrote: adopt them
            pointer = Pointer(pointer.archive_id, archive.max_id, pointer.cleared)
        added = archive.add_shards(_sqlite_chunks(idx, pointer.max_id), cancel, full_only=full_only)
        if added or archive.covered("live") != {s["file"] for s in archive.manifest["shards"]}:
            say(0.0, f"Adding {added:,} tile vectors to the archive")
            archive_store.build(archive, (), lambda: model_text_sample(idx), say, cancel,
                                recalibrate_at=RECALIBRATE_GROWTH)
    except OSError as exc:
        raise os_storage_error(exc, idx.folder) from None
    if archive.max_id != pointer.max_id or added:
        pointer = Pointer(pointer.archive_id, archive.max_id, pointer.cleared)
        _write_pointer(idx, pointer)
    _clear(idx, pointer)
    return added


def after_batch(idx, progress: ProgressFn | None = None, cancel=None) -> None:
    """Called by indexing after each committed batch: seals whole shards, or converts an index that has just
    grown past the threshold, so SQLite never holds much more than a shard of float32 vectors."""
    top = idx.conn.execute("SELECT COALESCE(MAX(id), 0) FROM tiles").fetchone()[0]
    pointer = read_pointer(idx)
    if pointer is None:
        if top >= threshold_tiles(idx.dim) and idx.tile_count() >= threshold_tiles(idx.dim):
            convert(idx, progress, cancel)
    elif top - pointer.max_id >= open_archive(idx, pointer).shard_size:
        seal(idx, full_only=True, progress=progress, cancel=cancel)


def maintain(idx, progress: ProgressFn | None = None, cancel=None, force: bool = False, text_queries=None) -> bool:
    """At the end of a job that changed the index: convert past the threshold (or ``force``), seal the tail,
    record removed tiles, re-train when outgrown, re-check the recall. Returns whether the index is archived."""
    from ..progress import no_progress, scaled

    say = progress or no_progress
    pointer = read_pointer(idx)
    if pointer is None:
        if not force and idx.tile_count() < threshold_tiles(idx.dim):
            return False
        convert(idx, say, cancel, text_queries)
        return True
    seal(idx, progress=scaled(say, 0.0, 0.3), cancel=cancel)
    pointer = read_pointer(idx)
    assert pointer is not None
    try:
        archive = _writable_archive(idx, pointer)
        _record_removed(idx, archive, pointer)
        texts = text_queries if text_queries is not None else (lambda: model_text_sample(idx))
        archive_store.build(archive, (), texts, scaled(say, 0.3, 0.97), cancel)
    except OSError as exc:
        raise os_storage_error(exc, idx.folder) from None
    _drop_old_cache(idx)
    _compact(idx, say)
    return True


def _record_removed(idx, archive: archive_store.Archive, pointer: Pointer) -> None:
    """Record archived tiles that the database no longer has (removed rasters, replaced re-indexes)."""
    total = idx.conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0]
    tail = idx.conn.execute("SELECT COUNT(*) FROM tiles WHERE id > ?", (pointer.max_id,)).fetchone()[0]
    if total - tail != archive.count - len(archive.removed):
        archive.set_removed(_gone(idx, archive, pointer))


def _clear(idx, pointer: Pointer, progress: ProgressFn | None = None) -> None:
    """Empty the float32 cells of archived tiles, a batch of ids per transaction (resumable: ``cleared``).

    Each batch's rows are deleted and written again without their vector, so their pages go back
    to SQLite's free list, which the next batches of indexing reuse: an UPDATE would shrink the rows
    in place and leave every page they held (SQLite does not merge pages that an update empties).
    """
    conn = idx.conn
    names = ", ".join(r[1] for r in conn.execute("PRAGMA main.table_info(tiles)") if r[1] != "embedding")
    start = pointer.cleared
    while start < pointer.max_id:
        end = min(start + _CLEAR_BATCH, pointer.max_id)
        done = Pointer(pointer.archive_id, pointer.max_id, end)
        with idx.write_transaction():
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS archive_rows AS SELECT {names} FROM main.tiles WHERE 0")
            conn.execute("DELETE FROM temp.archive_rows")
            conn.execute(f"INSERT INTO temp.archive_rows SELECT {names} FROM main.tiles WHERE id > ? AND id <= ? "
                         "AND length(embedding) > 0", (start, end))
            conn.execute("DELETE FROM main.tiles WHERE id IN (SELECT id FROM temp.archive_rows)")
            conn.execute(f"INSERT INTO main.tiles ({names}, embedding) SELECT {names}, X'' FROM temp.archive_rows")
            conn.execute("DELETE FROM temp.archive_rows")
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (META_KEY, done.text()))
        if progress is not None:
            progress(end / pointer.max_id, "Freeing the vectors' space in the database")
        start = end


def _compact(idx, progress: ProgressFn | None = None) -> None:
    """Give the space of the emptied float32 cells back to the file system when they are a quarter of the
    database or more (after a move; seals leave about a shard's worth free, which the next batches reuse)."""
    import logging
    import sqlite3

    try:
        pages, free = (idx.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
        if free * 4 < pages:
            return
        if progress is not None:
            progress(0.97, "Giving the vectors' space in the database back to the disk")
        idx.conn.execute("VACUUM")
        idx.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:  # busy readers or a full disk: the space stays free for the next batches
        logging.getLogger("rsclip_search.engine").info("Could not compact %s: %s", idx.folder, exc)


def _drop_old_cache(idx) -> None:
    """The FAISS cache of the SQLite layout is not read any more: remove it where it lies."""
    from ..index import FAISS_META, FAISS_NAME

    for folder in idx.cache_folders():
        for name in (FAISS_NAME, FAISS_META):
            try:
                (Path(folder) / name).unlink()
            except OSError:
                pass


def describe_index(idx) -> tuple[str, dict, dict, str] | None:
    """For ``info``, of an index in the archive layout: (kind, recall@10 per query kind, (nprobe, candidates
    re-ranked) per query kind, what the archive holds); None for any other index."""
    pointer = read_pointer(idx)
    if pointer is None:
        return None
    archive = open_archive(idx, pointer)
    settings = archive.settings()
    recall = {k: float(v) for k, v in (settings.get("recall") or {}).items()}
    kinds = settings.get("by_kind") or {kind: settings for kind in recall}
    per_kind = {kind: (int(v["nprobe"]), int(v["rerank"])) for kind, v in kinds.items()}
    return kind_of(archive), recall, per_kind, describe(archive)


def verify(idx, progress: ProgressFn | None = None, cancel=None) -> int:
    """Read back every file of the index's archive (see ``Archive.verify``); returns the bytes checked."""
    pointer = read_pointer(idx)
    if pointer is None:
        raise EngineError(f"The index at {idx.folder} keeps its vectors in its database (it is not in the archive "
                          "layout); there is no archive to check.")
    from ..progress import no_progress

    return open_archive(idx, pointer).verify(progress or no_progress, cancel)
