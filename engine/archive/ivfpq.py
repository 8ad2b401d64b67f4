"""The archive's search structure: one trained IVF-PQ, its inverted lists in memory-mapped segment files.

Training draws a sample from the shards once. Each shard is then added to its own copy of the
trained (empty) index and written as a *segment* file; segments are merged, list by list, into one
file written in FAISS's own format for array inverted lists, which FAISS maps into memory
(``IO_FLAG_MMAP``) instead of reading: the lists stay on disk and the page cache holds what searches
touch. Every segment shares the trained quantizer, so a search assigns a query to its lists once and
scans each segment with ``search_preassigned``; results merge by their PQ scores, and the caller
re-ranks the best of them exactly.

FAISS's own on-disk lists (``OnDiskInvertedLists``) were not used: their index file records the
path of their data file, and the flag that relocates it prints to standard output on every open.
"""
from __future__ import annotations

import hashlib
import math
import struct
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..atomic import atomic_write

_FULL = b"full"


def nlist_for(n: int) -> int:
    """Inverted lists for an archive designed to hold ``n`` vectors: the power of two at or below 1.3·√n
    (64–65,536): 4,096 for 16.8 million.

    Each list then holds about √n vectors; the coarse search costs nlist × d per query, and both
    training and adding cost nlist × d per vector, which sets the pace of a build on 2 cores.
    """
    target = 1.3 * math.sqrt(max(n, 1))
    return int(min(max(2 ** math.floor(math.log2(max(target, 1))), 64), 65536))


def pq_subquantizers(dim: int) -> int:
    """Bytes per PQ code: one per 8 dimensions (64 for 512-d), dividing ``dim``."""
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


def train(sample: np.ndarray, nlist: int, seed: int = 0):
    """An empty IVF-PQ (inner product, residual codes) trained on ``sample`` (float32 unit rows)."""
    import faiss

    dim = sample.shape[1]
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_subquantizers(dim), 8,
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = 10
    index.pq.cp.seed = seed
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def write_index(index, path: Path) -> str:
    """Write a FAISS index atomically; returns its SHA-256."""
    import faiss

    data = faiss.serialize_index(index).tobytes()

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(data)

    atomic_write(path, write)
    return hashlib.sha256(data).hexdigest()


def read_trained(path: Path):
    import faiss

    return faiss.read_index(str(path))


def fill_segment(trained, ids: np.ndarray, vectors: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                 path: Path) -> str:
    """Add (ids, vectors) chunks to a copy of ``trained`` and write it as a segment; returns its SHA-256."""
    import faiss

    index = faiss.clone_index(trained)
    for chunk_ids, chunk in vectors():
        index.add_with_ids(np.ascontiguousarray(chunk, dtype=np.float32), np.ascontiguousarray(chunk_ids))
    if index.ntotal != len(ids):
        raise ValueError(f"a segment holds {index.ntotal} vectors, not {len(ids)}")
    return write_index(index, path)


def open_segment(path: Path):
    """A segment with its lists memory-mapped (read-only), not read into memory."""
    import faiss

    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)


def _empty_lists_block(nlist: int, code_size: int) -> bytes:
    """How FAISS writes the inverted lists of an index that holds nothing (the end of its file)."""
    return b"ilar" + struct.pack("<QQ", nlist, code_size) + b"sprs" + struct.pack("<Q", 0)


def merge_segments(trained, segments: Sequence[Path], out: Path,
                   progress: Callable[[float], None] | None = None) -> tuple[int, str]:
    """Write the lists of ``segments`` as one segment file, list by list; returns (vectors, SHA-256).

    The file is the trained index's own serialization with its (empty) lists replaced by the
    merged ones in FAISS's "full" array layout, and its vector count set; memory stays at one list.
    """
    import faiss

    ivf = faiss.extract_index_ivf(trained)
    nlist, code_size = int(ivf.nlist), int(ivf.code_size)
    head = faiss.serialize_index(trained).tobytes()
    empty = _empty_lists_block(nlist, code_size)
    if trained.ntotal != 0 or not head.endswith(empty) or head[:4] != b"IwPQ":
        raise RuntimeError("this FAISS version writes IVF-PQ indexes in a layout the archive does not know")
    head = head[:-len(empty)]
    opened = [open_segment(p) for p in segments]
    lists = [_lists(s) for s in opened]
    sizes = np.zeros(nlist, dtype=np.uint64)
    for inv in lists:
        sizes += np.array([inv.list_size(i) for i in range(nlist)], dtype=np.uint64)
    total = int(sizes.sum())
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            def put(data: bytes) -> None:
                fh.write(data)
                digest.update(data)

            put(head[:8] + struct.pack("<q", total) + head[16:])
            put(b"ilar" + struct.pack("<QQ", nlist, code_size) + _FULL + struct.pack("<Q", nlist) + sizes.tobytes())
            for i in range(nlist):
                if progress is not None and i % 256 == 0:
                    progress(i / nlist)
                if not sizes[i]:
                    continue
                codes, ids = [], []
                for inv in lists:
                    n = inv.list_size(i)
                    if n:
                        codes.append(_copy(inv.get_codes(i), n * code_size, np.uint8))
                        ids.append(_copy(inv.get_ids(i), n, np.int64))
                put(np.concatenate(codes).tobytes())
                put(np.concatenate(ids).tobytes())

    atomic_write(out, write)
    check = open_segment(out)
    if check.ntotal != total:
        raise RuntimeError(f"the merged segment reads back {check.ntotal} vectors, not {total}")
    return total, digest.hexdigest()


def _lists(index):
    import faiss

    lists = faiss.extract_index_ivf(index).invlists
    if lists is None:
        raise RuntimeError("a segment has no inverted lists")
    return lists


def _copy(ptr, n: int, dtype) -> np.ndarray:
    import faiss

    out = np.empty(n, dtype=dtype)
    faiss.memcpy(faiss.swig_ptr(out), ptr, out.nbytes)
    return out


class Searcher:
    """Candidates from every segment of an archive for a batch of queries (PQ scores, not exact)."""

    def __init__(self, trained, segments: Sequence) -> None:
        import faiss

        self.trained = trained  # owns the quantizer
        self.quantizer = faiss.downcast_index(faiss.extract_index_ivf(trained).quantizer)
        self.nlist = int(faiss.extract_index_ivf(trained).nlist)
        self.segments = list(segments)
        self.ntotal = sum(int(s.ntotal) for s in self.segments)
        self._lock = threading.Lock()  # nprobe is set on the segments before each search (tasks search in threads)

    def candidates(self, queries: np.ndarray, nprobe: int, depth: int, selector=None) -> tuple[np.ndarray, np.ndarray]:
        """(PQ scores, ids) of the ``depth`` best candidates per query, best first; missing places hold id -1."""
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32)
        nprobe = int(min(max(nprobe, 1), self.nlist))
        coarse_d, coarse_i = self.quantizer.search(q, nprobe)
        params = None
        if selector is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe, params.sel = nprobe, selector
        scores, ids = [], []
        with self._lock:
            for seg in self.segments:
                seg.nprobe = nprobe
                d, i = seg.search_preassigned(q, depth, coarse_i, coarse_d, params=params)
                scores.append(d)
                ids.append(i)
        if len(self.segments) == 1:
            return scores[0], ids[0]
        if not self.segments:
            return np.full((len(q), depth), -np.inf, np.float32), np.full((len(q), depth), -1, np.int64)
        all_s, all_i = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        part = np.argpartition(-all_s, depth - 1, axis=1)[:, :depth]
        top_s, top_i = np.take_along_axis(all_s, part, 1), np.take_along_axis(all_i, part, 1)
        # best first, as one segment's search returns them: calibration reads the first d of a deep search as the
        # search of depth d (an unsorted merge made its shallow depths look worse than they are, and chose deeper)
        order = np.argsort(-top_s, axis=1, kind="stable")
        return np.take_along_axis(top_s, order, 1), np.take_along_axis(top_i, order, 1)
