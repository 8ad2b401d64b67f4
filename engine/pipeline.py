"""Overlap reading with encoding: a background thread reads and preprocesses the next batches
while the model embeds the current one.

On a 2-core CPU the model uses most of the time; reading GDAL windows and resizing in the
same thread would add their time on top. The queue is bounded, so memory stays at a few
batches whatever the raster's size.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generator, Iterator

_DONE = object()


def prefetch_batches(tiles: Iterator[tuple[Any, Any]], batch_size: int, prepare: Callable[[list], Any],
                     depth: int = 2) -> Generator[tuple[list, Any], None, None]:
    """Yield ``(items, prepare(arrays))`` batches of the ``(item, array)`` pairs from ``tiles``.

    ``tiles`` is consumed in a background thread; its exceptions (including ``Cancelled``)
    are re-raised here, in the consumer, in order. Closing the generator stops the reader.
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
        items: list = []
        arrays: list = []
        try:
            for item, array in tiles:
                if stop.is_set():
                    return
                items.append(item)
                arrays.append(array)
                if len(items) >= batch_size:
                    if not put((items, prepare(arrays))):
                        return
                    items, arrays = [], []
            if items:
                put((items, prepare(arrays)))
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
