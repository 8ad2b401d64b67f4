"""Overlap reading with encoding: a background thread reads and prepares the next batches
while the model embeds the current one.

On a 2-core CPU the model uses most of the time; reading GDAL windows in the same thread would
add their time on top. With a GPU the model is fast and the reading must keep up: the reader
thread only reads (a strip of tiles per GDAL call), converts to uint8 and stages the batch; the
scaling and normalising happen on the model's device (``Encoder.encode_pixels``). The queue is
bounded, so memory stays at a few batches whatever the raster's size.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generator, Iterable, Iterator

_DONE = object()


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
