"""Keep the model busy: a background thread reads and prepares the next batches while the model
embeds the current one, and batches that come faster than SQLite likes to commit are committed together.

On a 2-core CPU the model uses most of the time; reading GDAL windows in the same thread would
add their time on top. With a GPU the model is fast and the reading must keep up: the reader
thread only reads (one GDAL call per window, straight into the batch's buffer), converts to uint8
and stages the batch; the scaling and normalising happen on the model's device
(``Encoder.encode_pixels``). The queue is bounded, so memory stays at a few batches whatever the
raster's size. ``GroupedCommits`` then commits a fast model's batches a few at a time.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Generator, Iterable, Iterator

import numpy as np

_DONE = object()

#: A batch embedded sooner than this after the last commit waits for the next one: with a fast model (a GPU, or
#: the no-op encoder of `make bench`) a commit per 64-tile batch spent as long in SQLite's per-transaction work
#: as in writing the rows. Half a second is also the most embedded work a killed run can lose beyond the
#: batch in hand; a model that needs longer than this per batch (any CPU model) still commits every batch.
COMMIT_SECONDS = 0.5
#: ... and never more tiles than this wait (8 MB of 512-d vectors).
COMMIT_TILES = 4096


def prefetch(items: Iterable[Any], prepare: Callable[[Any], Any], depth: int = 2) -> Generator[Any, None, None]:
    """Yield ``prepare(item)`` for each item, computed ahead in a background thread.

    ``items`` is consumed in that thread; its exceptions (including ``Cancelled``) are re-raised
    here, in the consumer, in order. Closing the generator stops the reader.
    """
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(prepare(item)):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which re-raises it)
            put(exc)

    thread = threading.Thread(target=reader, name="rsclip-tile-reader", daemon=True)
    thread.start()
    try:
        while True:
            got = out.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        thread.join(timeout=30)


def prefetch_batches(tiles: Iterator[tuple[Any, Any]], batch_size: int, prepare: Callable[[list], Any],
                     depth: int = 2) -> Generator[tuple[list, Any], None, None]:
    """Yield ``(items, prepare(arrays))`` batches of the ``(item, array)`` pairs from ``tiles``, read ahead
    in a background thread (see ``prefetch``)."""

    def batches() -> Iterator[tuple[list, list]]:
        items: list = []
        arrays: list = []
        for item, array in tiles:
            items.append(item)
            arrays.append(array)
            if len(items) >= batch_size:
                yield items, arrays
                items, arrays = [], []
        if items:
            yield items, arrays

    return prefetch(batches(), lambda batch: (batch[0], prepare(batch[1])), depth)


class GroupedCommits:
    """Commit embedded batches (windows, embeddings, WGS84 bounds) through ``commit`` as one transaction once
    ``seconds`` have passed since the last commit or ``tiles`` are waiting; ``flush`` commits what waits.

    Each commit stays atomic (the whole group or nothing), so resume and "nothing committed is lost" hold
    as with one commit per batch; callers flush at the end of a raster and when a run is cancelled.
    """

    def __init__(self, commit: Callable[[list, np.ndarray, np.ndarray | None], None],
                 seconds: float | None = None, tiles: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._commit, self._clock = commit, clock
        self._seconds = COMMIT_SECONDS if seconds is None else seconds
        self._tiles = COMMIT_TILES if tiles is None else tiles
        self._waiting: list[tuple[list, np.ndarray, np.ndarray | None]] = []
        self._since = clock()
        self.committed = 0  # tiles committed so far
        self.commits = 0

    @property
    def waiting(self) -> int:
        return sum(len(w) for w, _, _ in self._waiting)

    def add(self, windows: list, embeddings: np.ndarray, bounds: np.ndarray | None) -> None:
        self._waiting.append((list(windows), embeddings, bounds))
        if self.waiting >= self._tiles or self._clock() - self._since >= self._seconds:
            self.flush()

    def flush(self) -> None:
        if self._waiting:
            group, self._waiting = self._waiting, []
            windows = [w for ws, _, _ in group for w in ws]
            bounds = [b for _, _, b in group if b is not None]
            self._commit(windows, np.concatenate([e for _, e, _ in group]),
                         np.concatenate(bounds) if len(bounds) == len(group) else None)
            self.committed += len(windows)
            self.commits += 1
        self._since = self._clock()
