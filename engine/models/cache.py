"""The models loaded in this process: one cache, safe to use from several threads at once.

In QGIS, dock tasks and Processing algorithms run in threads of their own, possibly at the same
time. A model costs seconds to load (a download the first time) and up to gigabytes of memory,
so each is loaded once: a thread asking for a model that another thread is loading waits for it
(still answering its cancel callback) and gets the same object; threads loading different models
do not wait for each other. Only the most recently used ``size`` models are kept (one by default,
as memory is what limits a desktop); one still in use elsewhere lives on until its user lets go.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from ..progress import CancelFn, check_cancel


class ModelCache:
    """Values (encoders) by key, each built once even when several threads ask at the same moment."""

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._lock = threading.Lock()  # guards the two dicts; never held while building
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._gates: dict[Hashable, threading.Lock] = {}  # one per key: held by the thread building it

    def get(self, key: Hashable, build: Callable[[], Any], cancel: CancelFn | None = None) -> Any:
        """The value for ``key``, built by ``build()`` in this thread unless it is cached or another thread
        is building it (then this one waits for that, checking ``cancel``)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._gates.setdefault(key, threading.Lock())
        while not gate.acquire(timeout=0.1):
            check_cancel(cancel)
        try:
            with self._lock:
                if key in self._items:  # built by the thread we waited for
                    self._items.move_to_end(key)
                    return self._items[key]
            value = build()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value
        finally:
            gate.release()

    def clear(self) -> None:
        """Forget every cached value (their memory is freed once no one else holds them)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: The encoders of this process (``jobs.get_encoder``), keyed by recorded model and runtime.
ENCODERS = ModelCache()
