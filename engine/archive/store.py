"""An archive folder: float16 shards, the trained IVF-PQ, its segments and calibration, bound by a manifest.

``manifest.json`` is the only file ever replaced; every other file is written once under a new
name (atomically) before the manifest that names it, and files no manifest names are removed only
after the manifest that stopped naming them is in place. A reader therefore sees one complete
state, and a build interrupted at any moment resumes from the last manifest.

The manifest names the shards and two search structures: ``live`` (what searches use) and
``building`` (a first build, or a re-training, in progress: trained, its segments filled shard by
shard, merged, calibrated, then made live in one manifest write). Shards added while a structure
is live get a segment each in it; past ``MAX_SEGMENTS`` segments they are merged into one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..atomic import atomic_write, atomic_write_bytes
from ..models.download import file_sha256
from ..progress import check_cancel, no_progress
from ..vectors import Calibration
from . import calibrate, ivfpq
from .shards import (SHARD_SIZE, Shard, ShardInfo, ShardSet, archive_damaged, remove_quietly, shard_name,
                     write_shard)

MANIFEST = "manifest.json"
FORMAT = 1
#: Largest manifest read (about 150 bytes per shard: 100,000 shards).
MAX_MANIFEST = 16 << 20
#: Merge the segments once more than this many wait beside the merged one.
MAX_SEGMENTS = 8
#: Re-train once the archive holds this many times the vectors it was trained on.
RETRAIN_GROWTH = 4

_log = logging.getLogger("rsclip_search.engine")
Progress = Callable[[float, str], None]
#: The model's text embeddings to calibrate on, or a function giving them (called only when needed).
TextQueries = np.ndarray | Callable[[], "np.ndarray | None"] | None


class Archive:
    """One archive folder, opened for searching and for adding to (by the index's single writer)."""

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder = folder
        self.manifest = manifest
        self.dim = int(manifest["dim"])
        self._shards: ShardSet | None = None
        self._searchers: dict[str, ivfpq.Searcher] = {}
        self._removed: np.ndarray | None = None
        self._axis: np.ndarray | None = None

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, dim: int, index_id: str, shard_size: int = SHARD_SIZE) -> "Archive":
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, "archive_id": secrets.token_hex(16), "index_id": index_id, "dim": int(dim),
                    "shard_size": int(shard_size), "next_file": 0, "shards": [], "removed": None,
                    "calibration": None, "live": None, "building": None}
        archive = cls(folder, manifest)
        archive.save()
        return archive

    @classmethod
    def open(cls, folder: Path) -> "Archive":
        """Open and check the manifest; damage gives the damaged sentence."""
        path = folder / MANIFEST
        try:
            if path.stat().st_size > MAX_MANIFEST:
                raise archive_damaged(folder.parent, "its vector archive manifest is too large to be one")
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise archive_damaged(folder.parent, "its vector archive has no manifest") from None
        except (OSError, ValueError) as exc:
            raise archive_damaged(folder.parent, f"its vector archive manifest cannot be read: {exc}") from None
        try:
            _check_manifest(manifest)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise archive_damaged(folder.parent, f"its vector archive manifest is not as written: {exc}") from None
        return cls(folder, manifest)

    def save(self) -> None:
        atomic_write_bytes(self.folder / MANIFEST, json.dumps(self.manifest, indent=1).encode())

    @property
    def archive_id(self) -> str:
        return str(self.manifest["archive_id"])

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    @property
    def count(self) -> int:
        return sum(int(s["count"]) for s in self.manifest["shards"])

    @property
    def max_id(self) -> int:
        shards = self.manifest["shards"]
        return int(shards[-1]["last_id"]) if shards else 0

    @property
    def live(self) -> dict | None:
        return self.manifest["live"]

    def covered(self, which: str = "live") -> set[str]:
        structure = self.manifest[which]
        return {name for seg in structure["segments"] for name in seg["shards"]} if structure else set()

    @property
    def ready(self) -> bool:
        """A live search structure exists (shards beyond it are found by the index in SQLite until sealed)."""
        live = self.manifest["live"]
        return live is not None and live.get("search") is not None

    @property
    def shards(self) -> ShardSet:
        if self._shards is None:
            infos = [ShardInfo.from_dict(s, self.dim) for s in self.manifest["shards"]]
            self._shards = ShardSet([Shard(self.folder, info, self.dim) for info in infos], self.dim)
        return self._shards

    @property
    def removed(self) -> np.ndarray:
        """Sorted ids of tiles that left the index after their vectors were archived."""
        if self._removed is None:
            entry = self.manifest["removed"]
            if entry is None:
                self._removed = np.zeros(0, np.int64)
            else:
                path = self.folder / entry["file"]
                removed = np.fromfile(path, dtype=np.int64) if path.is_file() else None
                if removed is None or len(removed) != entry["count"] or (
                        len(removed) > 1 and bool(np.any(np.diff(removed) <= 0))):
                    raise archive_damaged(self.folder.parent, f"its list of removed tiles {entry['file']} is not as "
                                                              "written")
                self._removed = removed
        return self._removed

    def searcher(self, which: str = "live") -> ivfpq.Searcher:
        if which not in self._searchers:
            structure = self.manifest[which]
            if structure is None:
                raise archive_damaged(self.folder.parent, "its vector archive has no search index")
            segments = []
            for seg in structure["segments"]:
                path = self.folder / seg["file"]
                try:
                    size = path.stat().st_size
                except OSError:
                    raise archive_damaged(self.folder.parent, f"its search segment {seg['file']} is missing") from None
                if size != seg["size"]:
                    raise archive_damaged(self.folder.parent, f"its search segment {seg['file']} has {size} bytes, "
                                                              f"not {seg['size']}")
                try:
                    segments.append(ivfpq.open_segment(path))
                except RuntimeError as exc:
                    raise archive_damaged(self.folder.parent, f"its search segment {seg['file']} cannot be read: "
                                                              f"{str(exc).splitlines()[0][:120]}") from None
            searcher = ivfpq.Searcher(self._trained(which), segments)
            if searcher.ntotal != sum(int(s["count"]) for s in structure["segments"]):
                raise archive_damaged(self.folder.parent, "its search segments hold another number of vectors than "
                                                          "recorded")
            self._searchers[which] = searcher
        return self._searchers[which]

    def _trained(self, which: str):
        import faiss

        entry = self.manifest[which]["trained"]
        path = self.folder / entry["file"]
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise archive_damaged(self.folder.parent, f"its trained search index {entry['file']} does not match its "
                                                      "recorded SHA-256")
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))

    # -- searching --------------------------------------------------------------------------
    def settings(self, which: str = "live") -> dict:
        structure = self.manifest[which]
        if structure is None or structure.get("search") is None:
            raise archive_damaged(self.folder.parent, "its vector archive was never calibrated")
        return structure["search"]

    def setting_for(self, query: np.ndarray, kind: str | None = None) -> tuple[int, int]:
        """(nprobe, re-rank depth) for one query: its kind's (given, or told by the side of the modality gap the
        query is on), else the widest."""
        settings = self.settings()
        kinds = settings.get("by_kind")
        if kinds and kind in kinds:
            return int(kinds[kind]["nprobe"]), int(kinds[kind]["rerank"])
        if kinds and "threshold" in settings:
            if self._axis is None:
                self._axis = self._load_axis()
            if self._axis is not None:
                kind = "image" if float(query @ self._axis) > float(settings["threshold"]) else "text"
                if kind in kinds:
                    return int(kinds[kind]["nprobe"]), int(kinds[kind]["rerank"])
        return int(settings["nprobe"]), int(settings["rerank"])

    def _load_axis(self) -> np.ndarray | None:
        entry = self.manifest["calibration"]
        try:
            with np.load(self.folder / entry["file"], allow_pickle=False) as data:
                axis = np.asarray(data["axis"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # the widest setting then serves every query
        if axis.dtype != np.float32 or axis.shape != (self.dim,) or not np.isfinite(axis).all():
            return None
        return axis

    def candidates(self, queries: np.ndarray, nprobe: int, depth: int, allowed: np.ndarray | None = None,
                   below: int | None = None, which: str = "live") -> list[np.ndarray]:
        """Per query, the ids of the best ``depth`` PQ candidates still in the index.

        ``allowed`` (ascending ids) restricts them; ``below`` drops ids above it (vectors the index
        does not read from the archive yet).
        """
        selector = None
        if allowed is not None:
            import faiss

            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        _, ids = self.searcher(which).candidates(queries, nprobe, depth, selector)
        removed = self.removed
        out = []
        for row in ids:
            row = row[row >= 0]
            if len(removed):
                row = row[~np.isin(row, removed)]
            if below is not None:
                row = row[row <= below]
            out.append(row)
        return out

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, below: int | None = None,
               hidden: np.ndarray | None = None, nprobe: int | None = None, depth: int | None = None,
               kind: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (ids, exact scores) of its best ``k``, best first, re-ranked from the float16 vectors.

        ``hidden`` (ascending) are ids never to return (tiles of a re-index not yet finished).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        out = []
        for query in q:
            own_nprobe, own_depth = self.setting_for(query, kind)
            use_nprobe, use_depth = int(nprobe or own_nprobe), max(int(depth or own_depth), k)
            if allowed is not None:  # the wanted few are rarer among each list's vectors
                use_nprobe = min(self.searcher().nlist, 4 * use_nprobe)
            cand = self.candidates(query[None], use_nprobe, use_depth, allowed, below)[0]
            if hidden is not None and len(hidden):
                cand = cand[~np.isin(cand, hidden)]
            found, vecs = self.shards.vectors(cand)
            cand = cand[found]
            scores = vecs @ query
            order = np.argsort(-scores, kind="stable")[:k]
            out.append((cand[order], scores[order]))
        return out

    def exact(self, query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, exact scores) of the given ids that the archive holds and has not removed."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.removed):
            ids = ids[~np.isin(ids, self.removed)]
        found, vecs = self.shards.vectors(ids)
        return ids[found], vecs @ np.asarray(query, dtype=np.float32).reshape(-1)

    # -- building ----------------------------------------------------------------------------
    def _new_name(self, stem: str, suffix: str) -> str:
        n = int(self.manifest["next_file"])
        self.manifest["next_file"] = n + 1
        return shard_name(n) if stem == "shard" else f"{stem}-{n:06d}{suffix}"

    def add_shards(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]], cancel=None,
                   full_only: bool = False) -> int:
        """Write (ascending ids, vectors) chunks as shards of up to ``shard_size``; returns vectors added.

        Ids must all be above the archive's largest; each shard is in the manifest once written.
        ``full_only`` keeps a last partial shard back (the caller adds it later).
        """
        added, held = 0, 0
        buf_ids: list[np.ndarray] = []
        buf_vecs: list[np.ndarray] = []

        def flush(n: int) -> None:
            nonlocal held, buf_ids, buf_vecs, added
            ids, vecs = np.concatenate(buf_ids), np.concatenate(buf_vecs)
            if ids[0] <= self.max_id:
                raise ValueError(f"tile {ids[0]} is not above the archive's largest id {self.max_id}")
            info = write_shard(self.folder, self._new_name("shard", ""), ids[:n], vecs[:n])
            self.manifest["shards"].append(info.to_dict())
            self.save()
            self._shards = None
            buf_ids, buf_vecs, held = [ids[n:]], [vecs[n:]], len(ids) - n
            added += n

        for ids, vecs in chunks:
            check_cancel(cancel)
            if not len(ids):
                continue
            buf_ids.append(np.asarray(ids, dtype=np.int64))
            buf_vecs.append(np.asarray(vecs, dtype=np.float16))
            held += len(ids)
            while held >= self.shard_size:
                flush(self.shard_size)
        if held and not full_only:
            flush(held)
        return added

    def needs_training(self) -> bool:
        """No structure yet, or the live one was trained on less than 1/``RETRAIN_GROWTH`` of the vectors."""
        if self.manifest["building"] is not None:
            return False
        live = self.manifest["live"]
        return live is None or self.count >= RETRAIN_GROWTH * int(live["trained"]["trained_on"])

    def train(self, progress: Progress = no_progress, seed: int = 0) -> None:
        """Start a new search structure (``building``), trained on a sample of the shards."""
        count = self.count
        nlist = ivfpq.nlist_for(RETRAIN_GROWTH * count)
        size = min(count, max(40 * nlist, 16384))
        progress(0.0, f"Training the archive's search index ({nlist:,} lists) on {size:,} of {count:,} tiles")
        if self.manifest["live"] is not None:
            _log.info("Re-training the search index of the archive in %s for its %s tiles (4 times what it was trained "
                      "on); searches keep using the current one until the new one is ready.", self.folder, f"{count:,}")
        sample = self.shards.sample(size, np.random.default_rng(seed))
        index = ivfpq.train(sample, nlist, seed)
        del sample
        name = self._new_name("trained", ".faiss")
        sha = ivfpq.write_index(index, self.folder / name)
        self.manifest["building"] = {"trained": {"file": name, "sha256": sha, "nlist": nlist, "trained_on": count},
                                     "segments": [], "search": None}
        self.save()
        self._searchers.pop("building", None)
        self.collect_garbage()

    def _target(self) -> str:
        return "building" if self.manifest["building"] is not None else "live"

    def _structures(self) -> list[str]:
        return [w for w in ("live", "building") if self.manifest[w] is not None]

    def fill(self, progress: Progress = no_progress, cancel=None) -> int:
        """Give every shard that a search structure lacks a segment of its own there; returns segments written.

        While a re-training is being built, new shards go into both the live structure and the new one.
        """
        work = [(w, s) for w in self._structures() for s in self.shards.shards if s.info.file not in self.covered(w)]
        trained = {w: self._trained(w) for w in {w for w, _ in work}}
        for n, (which, shard) in enumerate(work):
            check_cancel(cancel)
            progress(n / len(work), f"Adding tiles to the archive's search index (shard {n + 1} of {len(work)})")
            name = self._new_name("segment", ".ivf")
            sha = ivfpq.fill_segment(trained[which], shard.ids, shard.chunks, self.folder / name)
            self.manifest[which]["segments"].append(
                {"file": name, "shards": [shard.info.file], "count": shard.info.count, "sha256": sha,
                 "size": (self.folder / name).stat().st_size})
            self.save()
            self._searchers.pop(which, None)
        return len(work)

    def merge(self, progress: Progress = no_progress, force: bool = False) -> None:
        """Merge a structure's segments into one when there are more than ``MAX_SEGMENTS`` (or ``force``: those
        of a structure being built)."""
        for which in self._structures():
            segments = self.manifest[which]["segments"]
            if len(segments) <= 1 or (len(segments) <= MAX_SEGMENTS and not (force and which == "building")):
                continue
            progress(0.0, f"Merging {len(segments)} segments of the archive's search index")
            name = self._new_name("segment", ".ivf")
            total, sha = ivfpq.merge_segments(self._trained(which), [self.folder / s["file"] for s in segments],
                                              self.folder / name, lambda f: progress(f, "Merging the segments"))
            self.manifest[which]["segments"] = [
                {"file": name, "shards": [n for s in segments for n in s["shards"]], "count": total, "sha256": sha,
                 "size": (self.folder / name).stat().st_size}]
            self.save()
            self._searchers.pop(which, None)
            self.collect_garbage()

    def set_removed(self, removed: np.ndarray) -> None:
        """Record the archived ids that are no longer tiles of the index (searches skip them)."""
        removed = np.unique(np.asarray(removed, dtype=np.int64))
        if np.array_equal(removed, self.removed):
            return
        if len(removed):
            name = self._new_name("removed", ".ids")
            atomic_write(self.folder / name, lambda tmp: removed.tofile(tmp))
            self.manifest["removed"] = {"file": name, "count": int(len(removed))}
        else:
            self.manifest["removed"] = None
        self.save()
        self._removed = None
        self.collect_garbage()

    # -- calibration ----------------------------------------------------------------------------
    def truth(self) -> Calibration | None:
        entry = self.manifest["calibration"]
        if entry is None:
            return None
        try:
            with np.load(self.folder / entry["file"], allow_pickle=False) as data:
                return Calibration.from_arrays(data, self.dim)
        except (OSError, ValueError, KeyError) as exc:
            _log.info("Recomputing the calibration of the archive in %s: %s", self.folder, exc)
            return None

    def _save_truth(self, truth: Calibration, covers: int, axis: np.ndarray | None = None) -> None:
        name = self._new_name("calibration", ".npz")
        arrays = truth.arrays()
        if axis is not None:
            arrays["axis"] = axis

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(self.folder / name, write)
        self.manifest["calibration"] = {"file": name, "covers": covers}

    def calibrate(self, text_queries: TextQueries = None, progress: Progress = no_progress, seed: int = 0,
                  cancel=None) -> dict:
        """Bring the query samples' exact answers up to date, choose nprobe and the re-rank depth of the
        target structure, and make a structure being built live.

        ``text_queries`` (unit rows, or a function giving them, called only when the samples are drawn
        anew) are the model's text embeddings; without them only image queries calibrate.
        """
        from ..vectors import perturbed_queries

        which = self._target()
        truth = self.truth()
        covers = int(self.manifest["calibration"]["covers"]) if truth is not None else 0
        texts = None
        if truth is None or "text" not in truth.queries:
            texts = text_queries() if callable(text_queries) else text_queries
            if truth is not None and texts is not None and len(texts):
                truth = None  # a text sample arrived: start again with it
        if truth is not None and len(self.removed) and not truth.removed(self.removed):
            truth = None
        if truth is None:
            rng = np.random.default_rng(seed)
            n = min(calibrate.IMAGE_QUERIES, self.count)
            queries = {"image": perturbed_queries(self.shards.sample(n, rng), rng, n, calibrate.IMAGE_COSINE)}
            if texts is None:
                texts = text_queries() if callable(text_queries) else text_queries
            if texts is not None and len(texts):
                queries["text"] = texts
            truth, covers = calibrate.empty_truth(queries), 0
        shards = [s for s in self.shards.shards if s.info.last_id > covers]
        for n, shard in enumerate(shards):
            check_cancel(cancel)
            progress(n / max(len(shards), 1), f"Finding the exact answers of the calibration queries (shard {n + 1} "
                                              f"of {len(shards)})")
            for ids, vecs in shard.chunks():
                truth.added(ids, vecs)

        def search(q: np.ndarray, nprobe: int, depth: int) -> list[np.ndarray]:
            return self.candidates(q, nprobe, depth, which=which)

        progress(0.95, "Choosing how widely the archive searches")
        before = self.manifest[which].get("search") or {}
        nlist = self.searcher(which).nlist
        split = calibrate.sides(truth)
        entry: dict = {"target": calibrate.TARGET_RECALL, "count": self.count}
        if split is None:
            start = max(1, int(before.get("nprobe", 2)) // 2)
            nprobe, depth, recall = calibrate.choose(truth, search, nlist, self.count, start)
            entry.update(nprobe=nprobe, rerank=depth, recall=recall)
        else:  # text and image queries each get their own setting (the modality gap tells them apart)
            kinds = {}
            for kind in truth.queries:
                start = max(1, int((before.get("by_kind") or {}).get(kind, {}).get("nprobe", 2)) // 2)
                nprobe, depth, recall = calibrate.choose(calibrate.only(truth, kind), search, nlist, self.count, start)
                kinds[kind] = {"nprobe": nprobe, "rerank": depth, "recall": recall[kind]}
            entry.update(nprobe=max(k["nprobe"] for k in kinds.values()),
                         rerank=max(k["rerank"] for k in kinds.values()),
                         recall={k: v["recall"] for k, v in kinds.items()}, by_kind=kinds, threshold=split[1])
        self._save_truth(truth, self.max_id, None if split is None else split[0])
        self.manifest[which]["search"] = entry
        self._axis = None
        if which == "building":
            self.manifest["live"], self.manifest["building"] = self.manifest["building"], None
            self._searchers = {"live": self._searchers["building"]} if "building" in self._searchers else {}
        self.save()
        self.collect_garbage()
        return self.manifest["live"]["search"]

    def calibrated_count(self) -> int:
        live = self.manifest["live"]
        return int(live["search"]["count"]) if live and live.get("search") else -1

    # -- upkeep -----------------------------------------------------------------------------------
    def referenced(self) -> set[str]:
        m = self.manifest
        names = {MANIFEST, *(s["file"] for s in m["shards"])}
        for key in ("removed", "calibration"):
            if m[key] is not None:
                names.add(m[key]["file"])
        for key in ("live", "building"):
            if m[key] is not None:
                names.add(m[key]["trained"]["file"])
                names.update(s["file"] for s in m[key]["segments"])
        return names

    def collect_garbage(self) -> None:
        """Remove files the manifest no longer names (and temporary files of interrupted writes)."""
        keep = self.referenced()
        for entry in os.scandir(self.folder):
            if entry.is_file() and entry.name not in keep:
                remove_quietly(Path(entry.path))

    def verify(self, progress: Progress = no_progress, cancel=None) -> int:
        """Read every file back: shards' SHA-256 and check numbers, segments' and training's SHA-256; returns
        the bytes checked."""
        shards = self.shards.shards
        for n, shard in enumerate(shards):
            progress(n / max(len(shards) + 1, 1), f"Checking vector shard {n + 1} of {len(shards)}")
            shard.verify(cancel)
            check_cancel(cancel)
        for which in ("live", "building"):
            structure = self.manifest[which]
            if structure is None:
                continue
            for seg in structure["segments"]:
                path = self.folder / seg["file"]
                if not path.is_file() or file_sha256(path) != seg["sha256"]:
                    raise archive_damaged(self.folder.parent, f"its search segment {seg['file']} does not match its "
                                                              "recorded SHA-256")
            self._searchers.pop(which, None)
            self.searcher(which)
        return self.disk_bytes()

    def disk_bytes(self) -> int:
        return sum((self.folder / n).stat().st_size for n in self.referenced() if (self.folder / n).is_file())


def _check_manifest(m: dict) -> None:
    """Raise ValueError (or TypeError, KeyError) unless ``m`` is a manifest as this code writes them."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"format {m.get('format') if isinstance(m, dict) else m!r} is not {FORMAT}")
    dim = m["dim"]
    if not isinstance(dim, int) or not 0 < dim <= 16384 or not isinstance(m["archive_id"], str) \
            or not isinstance(m["index_id"], str) or not isinstance(m["next_file"], int) \
            or not isinstance(m["shard_size"], int) or m["shard_size"] < 1:
        raise ValueError("its identity entries are not as written")
    last = 0
    names = []
    for raw in m["shards"]:
        info = ShardInfo.from_dict(raw, dim)
        if info.first_id <= last:
            raise ValueError(f"shard {info.file} overlaps the one before")
        last = info.last_id
        names.append(info.file)
    for key in ("removed", "calibration"):
        if m[key] is not None:
            names.append(m[key]["file"])
    for key in ("live", "building"):
        structure = m[key]
        if structure is None:
            continue
        trained = structure["trained"]
        if not (isinstance(trained["sha256"], str) and isinstance(trained["nlist"], int)
                and isinstance(trained["trained_on"], int)):
            raise ValueError(f"its {key} training entry is not as written")
        names.append(trained["file"])
        for seg in structure["segments"]:
            if not (isinstance(seg["count"], int) and isinstance(seg["size"], int) and isinstance(seg["sha256"], str)
                    and isinstance(seg["shards"], list) and all(isinstance(s, str) for s in seg["shards"])):
                raise ValueError("a segment entry is not as written")
            names.append(seg["file"])
        search = structure["search"]
        if search is not None:
            settings = [search, *(search.get("by_kind") or {}).values()]
            if not all(isinstance(e, dict) and isinstance(e.get("nprobe"), int) and e["nprobe"] > 0
                       and isinstance(e.get("rerank"), int) and e["rerank"] > 0 for e in settings) \
                    or not isinstance(search.get("threshold", 0.0), (int, float)):
                raise ValueError(f"its {key} search entry is not as written")
    if not all(isinstance(n, str) and n and "/" not in n and "\\" not in n and n not in (".", "..") for n in names):
        raise ValueError("it names a file outside the archive folder")


def build(archive: Archive, chunks: Iterable[tuple[np.ndarray, np.ndarray]] = (),
          text_queries: TextQueries = None, progress: Progress = no_progress, cancel=None,
          seed: int = 0, recalibrate_at: float = 1.0) -> Archive:
    """Add ``chunks`` as shards, then (re-)train, fill, merge and calibrate as needed; resumable at every step.

    The live structure is calibrated again once the archive holds ``recalibrate_at`` times the vectors it
    was calibrated on (1.0: any change); a new structure always is, before it goes live.
    """
    from ..progress import scaled

    archive.add_shards(chunks, cancel)
    if not archive.count:
        return archive
    if archive.needs_training():
        archive.train(scaled(progress, 0.0, 0.2), seed)
    archive.fill(scaled(progress, 0.2, 0.75), cancel)
    building = archive.manifest["building"] is not None
    archive.merge(scaled(progress, 0.75, 0.85), force=True)
    calibrated = archive.calibrated_count()
    grown = archive.count != calibrated and archive.count >= recalibrate_at * calibrated
    if building or calibrated < 0 or grown:
        archive.calibrate(text_queries, scaled(progress, 0.85, 1.0), seed, cancel)
    progress(1.0, "The archive's search index is ready")
    return archive


__all__ = ["Archive", "MANIFEST", "RETRAIN_GROWTH", "SHARD_SIZE", "build"]
