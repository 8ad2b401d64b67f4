"""One function per job, called alike by the command line, the QGIS dock and the toolbox.

Each takes paths and dataclasses plus ``progress``/``cancel`` callbacks and returns a typed
result; problems the user can fix raise ``EngineError``.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .errors import Cancelled, EngineError
from .progress import CancelFn, ProgressFn, check_cancel, no_progress, scaled
from .storage import StorageError

_log = logging.getLogger("rsclip_search.engine")


@dataclass
class IndexReport:
    """What an ``index_rasters`` run did, raster by raster."""

    index_dir: str
    added: list[tuple[str, int]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total_tiles: int = 0
    cancelled: bool = False
    #: (source, tiles, why) for remote sources whose tiles could not be downloaded; a re-run retries them.
    unavailable: list[tuple[str, int, str]] = field(default_factory=list)
    #: (old path, new path) of rasters recognised at a new path and relinked, not re-embedded.
    relinked: list[tuple[str, str]] = field(default_factory=list)
    #: Rasters whose re-index stopped early: their previous tiles are still the searchable ones.
    interrupted: list[str] = field(default_factory=list)
    #: One sentence per raster whose tiles are not what was asked (``planning.tile_size_notice``).
    notices: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{sum(n for _, n in self.added)} new tiles from {len(self.added)} raster(s)"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} unchanged raster(s) skipped")
        if self.relinked:
            parts.append(f"{len(self.relinked)} moved raster(s) relinked to their new path")
        if self.skipped:
            parts.append(f"{len(self.skipped)} raster(s) not indexed")
        if self.unavailable:
            parts.append(f"{sum(n for _, n, _ in self.unavailable)} tiles skipped because their web map tiles could "
                         "not be downloaded (run again to retry them)")
        text = f"Index {self.index_dir}: " + ", ".join(parts) + f"; {self.total_tiles} tiles in total."
        if self.cancelled:
            text += " Cancelled; tiles indexed before the cancel were kept."
        if self.interrupted:
            text += (f" The re-index of {', '.join(Path(p).name for p in self.interrupted)} did not finish; its "
                     "previous tiles are still searchable and the same command resumes it.")
        return text


@dataclass(frozen=True)
class IndexInfo:
    index_dir: str
    model: dict
    model_label: str
    tiling: dict
    dim: int
    tile_count: int
    rasters: list
    created: float
    updated: float
    vector_kind: str
    readonly: bool = False
    activation: str | None = None  # QuickGELU / GELU of the recorded open_clip config
    templates: tuple[str, ...] = ()  # the model's own prompt templates (used unless others are given)
    notice: str | None = None  # e.g. "this index predates the fix of ...'s activation" (models.config_notice)
    #: recall@10 against exact search measured when the search index was built or updated, by query kind
    #: ("text": the model's own text embeddings, "image": image-like queries); empty when not built yet.
    search_recall: dict = field(default_factory=dict)
    #: query kind → (nprobe, candidates re-ranked exactly) of an approximate search index; empty when exact.
    search_settings: dict = field(default_factory=dict)
    #: Tiles per scale (engine/scales.py); {1: tile_count} for a one-scale index.
    scales: dict = field(default_factory=dict)
    #: raster path → ``planning.RasterGrid``: its CRS, pixel size and tile size in pixels, read from its tiles.
    grids: dict = field(default_factory=dict)
    #: What the vector archive of an index in the archive layout holds (engine/archive/); None for others.
    archive: str | None = None

    @property
    def missing(self) -> list:
        """Rasters whose file is no longer at the indexed path (moved, renamed or deleted)."""
        return [r for r in self.rasters if r.missing]


@dataclass(frozen=True)
class Runtime:
    """How to run the model; "auto" picks CUDA if present, else bf16 where the CPU does it natively.

    ``threads`` sets torch's CPU threads (None keeps torch's default: one per core).
    """

    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None


def model_label(model: dict) -> str:
    if model.get("kind") == "registry":
        return str(model.get("name"))
    checkpoint = Path(str(model.get("checkpoint") or "?")).name
    return f"{Path(str(model.get('arch'))).name} + {checkpoint}"


def get_encoder(model: dict, runtime: Runtime = Runtime(), progress: ProgressFn | None = None,
                cancel: CancelFn | None = None):
    """An Encoder for a recorded model, loaded once per process and shared by every thread (``models.cache``:
    a thread asking while another loads the same model waits for it)."""
    from .models.cache import ENCODERS

    key = (tuple(sorted((k, str(v)) for k, v in model.items())), runtime)

    def load():
        from .device import choose_device, choose_precision
        from .encoder import Encoder
        from .models import ModelRef, load_model

        if runtime.threads:
            import torch

            torch.set_num_threads(int(runtime.threads))
        device = choose_device(runtime.device)
        loaded = load_model(ModelRef.from_dict(model), device=device, progress=progress, cancel=cancel)
        precision, reason = choose_precision(loaded, device, runtime.precision)
        enc = Encoder(loaded, device=device, precision=precision)
        enc.reason = reason
        return enc

    return ENCODERS.get(key, load, cancel)


_NOTICED: set = set()
_NOTICED_LOCK = threading.Lock()


def notice_once(index_dir: str | Path, model: dict) -> str | None:
    """Log (once per process and index) that an index was built with a since-corrected model config."""
    import logging

    from .models import config_notice

    notice = config_notice(model)
    key = str(Path(index_dir).expanduser().resolve())
    with _NOTICED_LOCK:
        first = bool(notice) and key not in _NOTICED
        _NOTICED.add(key)
    if first:
        logging.getLogger("rsclip_search.engine").warning(notice)
    return notice


def resolve_model(index_dir: str | Path, name: str | None = None, arch: str | None = None,
                  checkpoint: str | None = None) -> dict:
    """The model to use for an index, from a registry name or an architecture + checkpoint."""
    from .models import resolve_model_ref

    asked = None
    if name or arch or checkpoint:
        asked = resolve_model_ref(name=name, arch=arch, checkpoint=checkpoint).to_dict()
    return model_for_index(index_dir, asked)


def model_for_index(index_dir: str | Path, asked: dict | None) -> dict:
    """The model an index was built with, else the one asked for, else the default.

    Asking for a different model than an existing index holds is refused (``planning.check_same_settings``,
    the rule of every indexing request): its vectors would not be comparable.
    """
    from .index import TileIndex, is_index
    from .models import DEFAULT_MODEL, resolve_model_ref
    from .planning import check_same_settings
    from .tiling import TilingSpec

    if is_index(index_dir):
        with TileIndex.open(index_dir) as idx:
            recorded, tiling = idx.model, TilingSpec.from_dict(idx.tiling)
        check_same_settings(Path(index_dir).expanduser().resolve(), recorded, tiling, asked, {})
        return recorded
    return asked or resolve_model_ref(name=DEFAULT_MODEL).to_dict()


def same_model(a: dict, b: dict) -> bool:
    if a.get("kind") != b.get("kind"):
        return False
    if a.get("kind") == "registry":
        return a.get("name") == b.get("name")
    same_arch = Path(str(a.get("arch"))).name == Path(str(b.get("arch"))).name
    return a.get("checkpoint_sha256") == b.get("checkpoint_sha256") and same_arch


VERIFY_MODES = ("sample", "full")


def _with_asked_scales(tiling, scales: Sequence[int]):
    """A tile request (``TilingSpec``, mapping or None) also asking for ``scales`` (a spec's default (1,) gives way)."""
    from .tiling import TilingSpec

    if isinstance(tiling, TilingSpec):
        own = tiling.scales if tuple(tiling.scales) != (1,) else ()
        return replace(tiling, scales=tuple(sorted({*own, *map(int, scales)})))
    asked = dict(tiling or {})
    asked["scales"] = tuple(sorted({*(asked.get("scales") or ()), *map(int, scales)}))
    return asked


def index_rasters(index_dir: str | Path, rasters: Sequence[str | Path], model: dict | None = None,
                  tiling=None, batch_size: int = 32, runtime: Runtime = Runtime(),
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                  verify: str = "sample", scales: Sequence[int] | None = None,
                  dask: str | None = None, archive: bool = False) -> IndexReport:
    """Tile, embed and add rasters to an index (created if needed), batch by batch.

    ``model`` and ``tiling`` are what was asked (None: not asked); ``planning.plan_index`` decides what
    is used, what is refused and what is said (its notices end up in the report).

    Unchanged rasters are skipped; a raster that was partly indexed resumes where it stopped; a
    changed raster is re-indexed while its old tiles stay searchable (see ``index.py``); the same
    file at a new path is relinked, never embedded twice; unreadable rasters are listed in the report
    and the others go on. ``verify="full"`` also compares every byte (SHA-256) of rasters that look
    unchanged. If no raster is usable, nothing is created or changed and ``EngineError`` says why. A
    full disk or read-only storage stops the run with ``StorageError``; committed batches are kept.

    ``scales`` (or ``tiling.scales``) adds tile sizes to the index (engine/scales.py): an existing
    index keeps its own scales and gains the new ones, whose tiles alone are embedded.

    ``dask`` (a scheduler address, a scheduler file or ``local:N``) embeds on a Dask cluster
    (engine/distributed.py); this process still plans the windows and commits every batch.

    ``archive`` moves the index to the archive layout (engine/archive/) at the end of the run; an
    index moves there by itself once it passes ``archive.layout.ARCHIVE_THRESHOLD_BYTES`` of vectors.
    """
    from .distributed import ClusterError
    from .index import DamagedIndexError, TileIndex
    from .planning import plan_index
    from .sources import SourceUnavailable

    progress = progress or no_progress
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    if verify not in VERIFY_MODES:
        raise EngineError(f"Verification must be 'sample' or 'full', not {verify!r}.")
    if not rasters:
        raise EngineError("No rasters given to index.")
    if scales:
        tiling = _with_asked_scales(tiling, scales)
    plan = plan_index(index_dir, model, tiling, rasters)
    index_dir, existing, model, tiling = Path(plan.index_dir), plan.existing, plan.model, plan.tiling
    if existing:
        notice_once(index_dir, model)
    report = IndexReport(str(index_dir), skipped=list(plan.skipped))
    usable = [raster.info for raster in plan.rasters]
    if not usable:
        raise EngineError(report.skipped[0][1] if len(report.skipped) == 1 else
                          "None of the rasters can be indexed: " + " ".join(r for _, r in report.skipped))

    encoder = _LazyEncoder(model, runtime, dask, scaled(progress, 0.0, 0.05), cancel)
    try:
        idx = TileIndex.open(index_dir, write=True) if existing else \
            TileIndex.create(index_dir, model, tiling.to_dict(), encoder.get().dim)
    except BaseException:
        encoder.release()
        raise
    try:
        with idx.writing():
            if plan.new_scales:
                idx.add_scales(tiling.to_dict())
            idx.space_hint = _space_needed(idx, usable, tiling)
            identities: dict[str, tuple[str, str | None, bool]] = {}
            todo = [info for info in usable if _needs_indexing(idx, info, verify, report, identities, cancel)]
            report.notices = [r.notice for r in plan.rasters if r.notice and r.info in todo]  # not for unchanged ones
            if todo:  # the model's problems (a missing checkpoint) stop the run here, not as each raster's
                encoder.get()
            for n, info in enumerate(todo):
                check_cancel(cancel)
                # the rasters up to 0.95, the search index from there (_keep_search_index)
                sub = scaled(progress, 0.05 + 0.9 * n / len(todo), 0.05 + 0.9 * (n + 1) / len(todo))
                rec = idx.raster(info.path)
                before = rec.tiles if rec is not None and rec.fingerprint == info.fingerprint else 0
                try:
                    added, missing = _index_one(idx, info, tiling, encoder.get(), batch_size, sub, cancel,
                                                identities.get(info.path))
                except Cancelled:
                    report.cancelled = True
                    now = idx.raster(info.path)
                    if now is not None and now.reindexing is not None:
                        report.interrupted.append(info.path)
                    elif now is not None and now.tiles > before:
                        report.added.append((info.path, now.tiles - before))
                    break
                except (StorageError, DamagedIndexError, ClusterError):
                    raise  # the index, its disk or the cluster, not this raster: stop here, committed work is kept
                except SourceUnavailable as exc:  # the server, not the data: keep what came, resume later
                    report.skipped.append((info.path, str(exc)))
                    if (now := idx.raster(info.path)) is not None and now.tiles > before:
                        report.added.append((info.path, now.tiles - before))
                    continue
                except EngineError as exc:
                    report.skipped.append((info.path, str(exc)))
                    continue
                if missing is not None:
                    report.unavailable.append((info.path, *missing))
                    if added:
                        report.added.append((info.path, added))
                    continue
                record = idx.raster(info.path)
                if added == 0 and (record is None or record.tiles == 0):
                    report.skipped.append((info.path, f"{Path(info.path).name} has no tiles with data (every tile is "
                                                      "nodata, or more than half nodata); nothing was indexed."))
                    continue
                report.added.append((info.path, added))
            _keep_search_index(idx, encoder, scaled(progress, 0.95, 1.0) if todo else progress, cancel,
                               archive and not report.cancelled)
            report.total_tiles = idx.tile_count()
    finally:
        idx.close()
        encoder.release()
    progress(1.0, report.summary())
    return report


class _LazyEncoder:
    """The indexing run's encoder, loaded (or its Dask cluster joined) the first time it is needed.

    A run whose rasters are all unchanged or relinked embeds nothing, so it neither loads the model (seconds
    and gigabytes for the large ones) nor needs its checkpoint to be where the index recorded it.
    """

    def __init__(self, model: dict, runtime: Runtime, dask: str | None, progress: ProgressFn,
                 cancel: CancelFn | None) -> None:
        self._args = (model, runtime, dask, progress, cancel)
        self._encoder = None

    def get(self):
        if self._encoder is None:
            model, runtime, dask, progress, cancel = self._args
            if dask is None:
                self._encoder = get_encoder(model, runtime, progress, cancel)
            else:
                from .distributed import DaskEmbedder

                self._encoder = DaskEmbedder.connect(dask, model, runtime, progress, cancel)
        return self._encoder

    def release(self) -> None:
        if self._encoder is not None:
            _release(self._encoder)


def _keep_search_index(idx, encoder: _LazyEncoder, progress: ProgressFn, cancel: CancelFn | None = None,
                       archive: bool = False) -> None:
    """Bring the index's vector store up to date, training (with progress) where it has outgrown its training.

    An index that needs approximate search gets the model's own text embeddings of the shipped class
    sets stored first (``querysample.text_queries``), so its search depth is measured on text queries.
    An index past the archive threshold (or ``archive``) moves to, or keeps up, the archive layout.
    """
    from .querysample import store_text_sample
    from .vectors import APPROX_THRESHOLD

    if (archive or idx.tile_count() >= APPROX_THRESHOLD) and idx.query_sample("text") is None:
        progress(0.0, "Embedding the text queries the search index is calibrated on")
        store_text_sample(idx, encoder.get())
    _refresh_vectors(idx, progress, cancel, archive)


def _release(encoder) -> None:
    """Let go of a Dask cluster (engine/distributed.py); a local encoder stays loaded for the next job."""
    if hasattr(encoder, "embedded_batches"):
        encoder.close()


def _embedded_batches(encoder, tiler, batch_size: int, progress: ProgressFn, cancel: CancelFn | None, skip):
    """(windows, embeddings, WGS84 bounds) batches of a raster's windows not in ``skip``: read in a background
    thread and embedded here (``pipeline.prefetch``), or on a Dask cluster when ``encoder`` is one
    (engine/distributed.py)."""
    if hasattr(encoder, "embedded_batches"):
        yield from encoder.embedded_batches(tiler, batch_size, progress, cancel, skip)
        return
    from contextlib import closing

    from .pipeline import prefetch

    with closing(prefetch(tiler.iter_batches(batch_size, progress=progress, cancel=cancel, skip=skip),
                          lambda batch: (batch, encoder.stage(batch.pixels)))) as batches:
        for batch, pixels in batches:
            yield batch.windows, encoder.encode_pixels(pixels), batch.wgs84_bounds


def _needs_indexing(idx, info, verify: str, report: IndexReport, identities: dict, cancel: CancelFn | None) -> bool:
    """Decide what a raster needs: nothing (unchanged), a relink (same file, new path), or (re-)indexing.

    Records the file's content sample and full SHA-256 in ``identities`` when it computed them, and
    whether the raster must be replaced although its fingerprint is the same (``--verify full``).
    """
    from .identity import content_fingerprint, full_sha256

    from .sources import is_remote

    path, name = info.path, Path(info.path).name
    rec = idx.raster(path)
    if is_remote(path):  # no file to sample: the source's own fingerprint decides, and URLs are never relinked
        if rec is not None and rec.fingerprint == info.fingerprint and tuple(rec.bands) == tuple(info.bands) \
                and rec.status == "complete":
            if rec.reindexing is not None:
                idx.drop_staging(path)
            report.unchanged.append(path)
            return False
        return True
    if rec is not None and tuple(rec.bands) == tuple(info.bands):
        if rec.fingerprint == info.fingerprint:
            if verify == "full":
                full = full_sha256(path, cancel=cancel)
                identities[path] = (content_fingerprint(path), full, rec.full_sha256 != full)
                if rec.full_sha256 != full:
                    _log.info("%s: its SHA-256 %s; re-indexing it.", name, "differs from the one recorded"
                              if rec.full_sha256 else "was not recorded (indexed by an older version)")
                    return True
            if rec.status == "complete":
                if rec.reindexing is not None:
                    idx.drop_staging(path)  # the file went back to what is indexed
                report.unchanged.append(path)
                return False
            return True
        content = content_fingerprint(path)
        identities[path] = (content, None, False)
        if rec.full_sha256 and rec.content in (None, content):
            full = full_sha256(path, cancel=cancel)
            identities[path] = (content, full, False)
            if full == rec.full_sha256:  # same bytes, new time (touched, copied back): nothing to embed
                idx.update_identity(rec.id, info.fingerprint, content, full)
                if rec.status == "complete":
                    report.unchanged.append(path)
                    return False
        return True
    if rec is not None:
        return True
    content = content_fingerprint(path)
    identities[path] = (content, None, False)
    twin = next((p for p, ident in identities.items() if p != path and ident[0] == content), None)
    if twin is not None and idx.raster(twin) is None:  # two copies given in the same run
        report.skipped.append((path, f"{name} has the same content as {twin}, which this run indexes; nothing was "
                                     "added for it."))
        del identities[path]
        return False
    for cand in idx.same_content(content, info.fingerprint):
        if cand.path == path or tuple(cand.bands) != tuple(info.bands):
            continue
        if verify == "full" and cand.full_sha256:
            full = identities[path][1] or full_sha256(path, cancel=cancel)
            identities[path] = (content, full, False)
            if full != cand.full_sha256:
                continue
        if not cand.missing:
            report.skipped.append((path, f"{name} has the same content as {cand.path}, which is already in the "
                                         f"index; nothing was added (to point the index at {name} instead, use "
                                         f"index --relink {cand.path} {path})."))
            return False
        idx.relink(cand.path, path, info.fingerprint, content, identities[path][1])
        report.relinked.append((cand.path, path))
        if cand.status == "complete":
            return False
        return True
    return True


def _space_needed(idx, usable, tiling) -> int:
    """Rough bytes the run may still write: its tiles (embedding + footprints + SQLite) and the cache."""
    from .scales import scale_specs
    from .tiling import plan_windows

    planned = 0
    for info in usable:
        try:
            planned += sum(len(plan_windows(info, spec)) for _, spec in scale_specs(tiling))
        except EngineError:
            continue
    per_tile = 4 * idx.dim + 200  # embedding, window, R*Tree entry, indexes
    return planned * per_tile + (idx.tile_count() + planned) * 80 + (4 << 20)  # + the cache's codes, a WAL's worth


def _index_one(idx, info, tiling, encoder, batch_size: int, progress: ProgressFn, cancel: CancelFn | None,
               identity: tuple[str, str | None, bool] | None = None) -> tuple[int, tuple[int, str] | None]:
    """Embed one raster's remaining tiles, committing as it goes; returns tiles added and, for a
    remote source whose downloads failed, (tiles skipped, why): it then stays partial, to resume.

    Reading runs in a background thread (``pipeline.prefetch``: one GDAL read per window straight
    into the batch, uint8 batches staged for the model's device) while this thread embeds and
    commits, so the model is rarely idle. Each batch is committed, or, when the model embeds them
    faster than every half second, a few batches together (``pipeline.GroupedCommits``); a cancelled
    run commits what it embedded before it stops. Whatever stops the
    loop (a full disk, a damaged window, cancel), the reader thread is stopped and joined
    before the raster is closed. A raster that fails half-way leaves nothing of this run
    behind; a re-index that fails keeps the raster's previous tiles. An index with several
    scales cuts the raster once per scale (engine/scales.py), smallest first.
    """
    from contextlib import closing

    from .archive.layout import after_batch as archive_after_batch
    from .distributed import ClusterError
    from .identity import FullHashInBackground, content_fingerprint, full_sha256
    from .index import DamagedIndexError
    from .pipeline import GroupedCommits
    from .scales import scale_specs
    from .sources import SourceUnavailable, is_remote
    from .tiling import RasterTiler, plan_windows

    name = Path(info.path).name
    content, full, changed = identity or (None, None, False)
    hash_while_tiling = False
    if not is_remote(info.path):  # a remote source is known by its source fingerprint alone
        content = content or content_fingerprint(info.path)
        hash_while_tiling = full is None and not idx.holds_path(info.path)  # a new path: nothing to compare it with
        if not hash_while_tiling:
            full = full or full_sha256(info.path, cancel=cancel)  # a resume or re-index decides by it first
    specs = scale_specs(tiling)
    planned = sum(len(plan_windows(info, spec)) for _, spec in specs)
    raster_id, done = idx.begin_raster(info.path, info.fingerprint, info.crs_wkt, info.width, info.height,
                                       info.bands, planned, content, full, changed, info.transform)
    idx.set_planned(raster_id, planned)
    unavailable, why = 0, ""

    def commit(windows: list, embeddings, wgs84_bounds) -> None:
        idx.add_tiles(raster_id, windows, embeddings, wgs84_bounds)
        archive_after_batch(idx, cancel=cancel)  # keeps SQLite's float32 tail below a shard

    commits = GroupedCommits(commit)  # a fast model's batches are committed a few at a time
    hashing = FullHashInBackground(info.path) if hash_while_tiling else None  # stopped in the finally below
    try:
        for n, (scale, spec) in enumerate(specs):
            label = name if len(specs) == 1 else f"{name} at ×{scale}"
            sub = scaled(progress, n / len(specs), (n + 1) / len(specs))
            with RasterTiler(info.path, spec) as tiler:

                def tick(fraction: float, message: str, label: str = label, sub: ProgressFn = sub) -> None:
                    sub(fraction, f"{label}: {message}")

                with closing(_embedded_batches(encoder, tiler, batch_size, tick, cancel, done)) as batches:
                    for windows, embeddings, wgs84_bounds in batches:
                        commits.add(windows, embeddings, wgs84_bounds)
                        done |= {w.as_tuple() for w in windows}  # a window two scales share is embedded once
                        check_cancel(cancel)
                commits.flush()
                unavailable += tiler.unavailable
                why = tiler.unavailable_reason or why
        if hashing is not None:
            full = hashing.result(cancel)
    except (Cancelled, KeyboardInterrupt, SourceUnavailable, ClusterError):
        commits.flush()  # cancelled, or the server or cluster (not the data) failed: keep what was embedded
        raise
    except (StorageError, DamagedIndexError):
        raise
    except EngineError as exc:
        kept = idx.abandon_raster(raster_id)
        raise EngineError(f"{exc} Its previously indexed tiles were kept." if kept else str(exc)) from None
    finally:
        if hashing is not None:
            hashing.stop()
    added = commits.committed
    if unavailable:
        progress(1.0, f"{name}: {added} tiles embedded, {unavailable} could not be downloaded")
        return added, (unavailable, why)
    idx.finish_raster(raster_id, full)
    progress(1.0, f"{name}: {added} tiles embedded")
    return added, None


def relink_raster(index_dir: str | Path, old: str | Path, new: str | Path, verify: str = "sample") -> int:
    """Point an indexed raster at its new path (moved or renamed); returns its tile count.

    The new file must be the same raster: same size in pixels, CRS and bands, and the same content
    sample (``verify="full"``: the same SHA-256) when those were recorded. Nothing is re-embedded.
    """
    from .identity import content_fingerprint, full_sha256
    from .index import TileIndex
    from .tiling import TilingSpec, open_raster

    if verify not in VERIFY_MODES:
        raise EngineError(f"Verification must be 'sample' or 'full', not {verify!r}.")
    old_path = str(Path(old).expanduser().resolve())
    new_path = str(Path(new).expanduser().resolve())
    with TileIndex.open(index_dir, write=True) as idx, idx.writing():
        rec = idx.raster(old_path) or idx.raster(str(old))
        if rec is None:
            raise EngineError(f"{old} is not in the index at {idx.folder}.")
        info = open_raster(new_path, TilingSpec.from_dict(idx.tiling))
        name = Path(new_path).name
        if (info.width, info.height, tuple(info.bands)) != (rec.width, rec.height, tuple(rec.bands)) \
                or info.crs_wkt != rec.crs_wkt:
            raise EngineError(f"{name} is not the raster indexed as {rec.path}: it is {info.width}×{info.height} px "
                              f"in another CRS or with other bands (the indexed one is {rec.width}×{rec.height} px).")
        content = content_fingerprint(new_path)
        if rec.content and rec.content != content:
            raise EngineError(f"{name} does not have the same content as the raster indexed as {rec.path} (their "
                              "fingerprints differ); index it as a new raster instead.")
        full = None
        if verify == "full":
            full = full_sha256(new_path)
            if rec.full_sha256 and rec.full_sha256 != full:
                raise EngineError(f"{name} does not have the same content as the raster indexed as {rec.path} (their "
                                  "SHA-256 differ); index it as a new raster instead.")
        n = idx.relink(rec.path, new_path, info.fingerprint, content, full)
        _refresh_vectors(idx)
    return n


def _refresh_vectors(idx, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                     archive: bool = False) -> None:
    """After a job changed an index (writer lock held): its archive brought up to date, or the index moved to the
    archive layout (past the threshold, or ``archive``), then its vector store made ready for searches."""
    from .archive.layout import maintain

    maintain(idx, scaled(progress or no_progress, 0.0, 0.9), cancel, force=archive)
    idx.vector_store(maintain=True, progress=scaled(progress or no_progress, 0.9, 1.0))


@dataclass(frozen=True)
class ArchiveReport:
    """What ``archive_index`` found or made: the index in the archive layout."""

    index_dir: str
    tiles: int
    description: str
    archive_bytes: int
    database_bytes: int
    verified_bytes: int = 0

    def summary(self) -> str:
        per_tile = (self.archive_bytes + self.database_bytes) / max(self.tiles, 1)
        text = (f"Index {self.index_dir}: {self.tiles:,} tiles in the archive layout ({self.description}); "
                f"{self.archive_bytes / 1e9:.2f} GB of vectors and search lists, {self.database_bytes / 1e9:.2f} GB of "
                f"database, {per_tile:,.0f} bytes per tile.")
        if self.verified_bytes:
            text += f" Every archive file was read back and checks out ({self.verified_bytes / 1e9:.2f} GB)."
        return text


def archive_index(index_dir: str | Path, verify: bool = False, progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None) -> ArchiveReport:
    """Move an index's vectors to the archive layout (engine/archive/), or bring its archive up to date.

    ``verify`` only reads every file of an archived index back (shards' SHA-256 and check numbers,
    search segments); it works on read-only media too.
    """
    from .archive import layout
    from .index import TileIndex

    if verify:
        with TileIndex.open(index_dir) as idx, idx.snapshot():
            checked = layout.verify(idx, progress, cancel)
            return _archive_report(idx, layout, checked)
    with TileIndex.open(index_dir, write=True) as idx, idx.writing():
        _refresh_vectors(idx, progress, cancel, archive=True)
        report = _archive_report(idx, layout, 0)
    (progress or no_progress)(1.0, report.summary())
    return report


def _archive_report(idx, layout, verified: int) -> ArchiveReport:
    from .index import DB_NAME

    pointer = layout.read_pointer(idx)
    archive = layout.open_archive(idx, pointer) if pointer is not None else None
    if archive is None:
        raise EngineError(f"The index at {idx.folder} is not in the archive layout.")
    database = sum(p.stat().st_size for p in idx.folder.glob(DB_NAME + "*") if p.is_file())
    return ArchiveReport(str(idx.folder), idx.tile_count(), layout.describe(archive), archive.disk_bytes(), database,
                         verified)


def open_for_query(index_dir: str | Path, write: bool = False):
    """Open an index for search or labelling (``write``: to store concepts); an empty index is refused."""
    from .index import TileIndex

    idx = TileIndex.open(index_dir, write=write)
    try:
        empty = not idx.has_tiles()
    except BaseException:
        idx.close()
        raise
    if empty:
        idx.close()
        raise EngineError(f"The index at {index_dir} has no tiles yet; index some rasters first.")
    return idx


def search(index_dir: str | Path, query: str, top_k: int = 10, min_score: float | None = None,
           rasters: Sequence[str] | None = None, within_wgs84_wkt: str | None = None,
           templates: Sequence[str] | None = None, runtime: Runtime = Runtime(),
           progress: ProgressFn | None = None, cancel: CancelFn | None = None,
           scale: int | None = None, suppress: bool | None = None) -> list:
    """Top-k tiles of an index for a text query (see ``engine.search.Hit``), through the model's own
    prompt templates unless ``templates`` are given.

    In an index with several scales, hits rank across scales and say their scale; ``scale``
    keeps one scale; ``suppress`` (default: on when several scales are searched) drops hits that
    a better hit covers (engine/scales.py states the rule).
    """
    from .search import candidate_ids, clean_query, embed_query, top_k as best

    clean_query(query)
    if top_k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    with open_for_query(index_dir) as idx:
        notice_once(index_dir, idx.model)
        with idx.snapshot():  # a restriction that cannot be met is refused before the model loads
            allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        idx.text_queries = _text_queries_of(encoder, idx.model)
        with idx.snapshot():
            vec = embed_query(encoder, query, templates)
            hits = _across_scales(idx, allowed, scale, suppress, top_k,
                                  lambda n, ok: best(idx, vec, n, min_score, ok, kind="text"))
    note_missing_rasters([h.tile.raster for h in hits])
    return hits


def _text_queries_of(encoder, model: dict):
    """The model's text sample, for a search that must build the vector store of an index storing none."""
    def provide():
        from .querysample import text_query_vectors

        return text_query_vectors(encoder, model)[1]

    return provide


def similar(index_dir: str | Path, tile_ids: Sequence[int], top_k: int = 10, min_score: float | None = None,
            rasters: Sequence[str] | None = None, within_wgs84_wkt: str | None = None,
            scale: int | None = None, suppress: bool | None = None) -> list:
    """Tiles most like the given tiles of the same index; no model needed (scales as in ``search``)."""
    from .search import candidate_ids, search_similar

    if top_k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    with open_for_query(index_dir) as idx, idx.snapshot():
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        hits = _across_scales(idx, allowed, scale, suppress, top_k,
                              lambda n, ok: search_similar(idx, list(tile_ids), n, min_score, ok))
    note_missing_rasters([h.tile.raster for h in hits])
    return hits


def _across_scales(idx, allowed, scale: int | None, suppress: bool | None, top_k: int, fetch) -> list:
    """Run ``fetch(n, allowed)`` for the best ``n`` hits, within one scale or across the index's scales."""
    from .scales import ScaleMap, hits_with_scales, ranked_across_scales, tiles_of_scale

    several = ScaleMap.of(idx).several
    if scale is not None:
        allowed = tiles_of_scale(idx, int(scale), allowed)
    do_suppress = several and scale is None if suppress is None else bool(suppress)
    total = 0 if not do_suppress else idx.tile_count() if allowed is None else len(allowed)  # counted only if used
    hits = ranked_across_scales(lambda n: fetch(n, allowed), top_k, do_suppress, total)
    return hits_with_scales(idx, hits)


def tiles_at(index_dir: str | Path, lon: float, lat: float) -> list[int]:
    """Ids of the tiles whose footprint contains a WGS84 point (for 'similar to here')."""
    from .search import tiles_at as tiles_covering

    with open_for_query(index_dir) as idx:
        return tiles_covering(idx, lon, lat)


def label(index_dir: str | Path, classes: Sequence[str], templates: Sequence[str] | None = None,
          rasters: Sequence[str] | None = None, within_wgs84_wkt: str | None = None,
          runtime: Runtime = Runtime(), progress: ProgressFn | None = None,
          cancel: CancelFn | None = None) -> list:
    """Zero-shot label every tile of an index (see ``engine.labeling.TileLabel``), through the model's own
    prompt templates unless ``templates`` are given."""
    from .labeling import label_tiles
    from .prompts import model_templates
    from .search import candidate_ids

    with open_for_query(index_dir) as idx:
        notice_once(index_dir, idx.model)
        with idx.snapshot():  # a restriction that cannot be met is refused before the model loads
            candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        with idx.snapshot():
            allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
            labels = label_tiles(idx, encoder, list(classes), tuple(templates or model_templates(idx.model)),
                                 allowed)
    note_missing_rasters([lab.tile.raster for lab in labels])
    return labels


def note_missing_rasters(paths: Sequence[str]) -> list[str]:
    """Say (as a notice) when results point at raster files that are no longer where they were indexed."""
    from .identity import exists

    missing = [p for p in dict.fromkeys(paths) if not exists(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        _log.warning("%d raster(s) of these results are missing at their indexed path (%s): moved or deleted? "
                     "Index them at their new path (or use index --relink OLD NEW) to relink them.",
                     len(missing), shown)
    return missing


def model_of(index_dir: str | Path) -> dict:
    """The model an index was built with (as recorded), e.g. to say in results which model made them."""
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
        return idx.model


def tiles(index_dir: str | Path, rasters: Sequence[str] | None = None) -> list:
    """Every tile of an index (or of some of its rasters), for footprint layers."""
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
        return list(idx.iter_tiles(_abs(rasters)))


def info(index_dir: str | Path) -> IndexInfo:
    """What an index holds: model, tiling, rasters (missing ones marked) and tile count."""
    from .index import TileIndex
    from .models import activation_of, config_notice
    from .planning import raster_grids
    from .prompts import model_templates
    from .scales import tile_counts

    from .archive.layout import describe_index

    with TileIndex.open(index_dir) as idx, idx.snapshot():
        archive = describe_index(idx)
        kind, recall, settings = archive[:3] if archive else _search_kind(idx.cache_meta())
        model = idx.model
        return IndexInfo(str(idx.folder), model, model_label(model), idx.tiling, idx.dim, idx.tile_count(),
                         idx.rasters(), idx.created, idx.updated, kind, readonly=idx.readonly,
                         activation=activation_of(str(model.get("arch") or "")), templates=model_templates(model),
                         notice=config_notice(model), search_recall=recall, scales=tile_counts(idx),
                         search_settings=settings, grids=raster_grids(idx), archive=archive[3] if archive else None)


def _search_kind(meta: dict | None) -> tuple[str, dict, dict]:
    """How the index is searched ("flat (exact)", "ivf1000,pq256x4fs"), its recall@10 measured per query kind and
    the search settings per query kind ({"text": (nprobe, candidates re-ranked)})."""
    if meta is None or not isinstance(meta.get("kind"), str):
        return "flat (not built yet)", {}, {}
    given = meta.get("recall")
    recall = {k: float(v) for k, v in given.items() if isinstance(k, str) and isinstance(v, (int, float))} \
        if isinstance(given, dict) else {}
    if meta["kind"] == "flat":
        return "flat (exact)", recall, {}
    given = meta.get("settings")
    settings = {k: (int(v[0]), int(v[1])) for k, v in given.items() if isinstance(v, list) and len(v) == 2
                and all(isinstance(n, int) for n in v)} if isinstance(given, dict) else {}
    return str(meta["kind"]), recall, settings


def remove_raster(index_dir: str | Path, raster: str | Path) -> int:
    """Remove one raster's tiles from an index (a missing file too); returns how many were removed."""
    from .index import TileIndex
    from .sources import canonical_path

    with TileIndex.open(index_dir, write=True) as idx, idx.writing():
        path = canonical_path(raster)
        if idx.raster(path) is None and idx.raster(str(raster)) is not None:
            path = str(raster)  # the path exactly as stored (a file that is gone)
        n = idx.remove_raster(path)
        _refresh_vectors(idx)
        return n


def _abs(paths: Sequence[str] | None) -> list[str] | None:
    from .sources import canonical_path

    return [canonical_path(p) for p in paths] if paths else None


# -- concepts: find every X (see engine/concepts.py, scoring.py, areas.py, feedback.py) --------------
def _embed_phrase(idx, text: str, runtime: Runtime, progress: ProgressFn | None, cancel: CancelFn | None):
    """A phrase embedded through the model's own prompt templates, as search does (None for no text)."""
    import logging

    from .prompts import model_templates
    from .search import clean_query

    if not (text or "").strip():
        return "", None
    text = clean_query(text)
    encoder = get_encoder(idx.model, runtime, progress, cancel)
    templates = tuple(model_templates(idx.model))
    if any(encoder.is_truncated(t.format(text)) for t in templates):
        logging.getLogger("rsclip_search.engine").warning(
            "The text '%s…' is longer than the model reads; only its beginning is used.", text[:40])
    return text, encoder.encode_prompts([text], templates)[0]


def concept_list(index_dir: str | Path) -> list:
    """The concepts stored in an index (``engine.concepts.Concept``), by name."""
    from .concepts import list_concepts
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
        return list_concepts(idx.conn)


def concept_create(index_dir: str | Path, name: str, query: str = "", negative: str = "",
                   examples: Sequence[int] = (), runtime: Runtime = Runtime(), progress: ProgressFn | None = None,
                   cancel: CancelFn | None = None):
    """Store a new concept: a name, an optional text query and negative text, optional example tiles."""
    from .concepts import clean_name, create_concept, get_concept, list_concepts, mark_tiles
    from .feedback import tiles_of

    name = clean_name(name)
    with open_for_query(index_dir, write=True) as idx:
        if any(c.name.lower() == name.lower() for c in list_concepts(idx.conn)):
            raise EngineError(f"There is already a concept called '{name}'; choose another name.")
        example_tiles = tiles_of(idx, examples) if examples else []
        if not (query or "").strip() and not example_tiles and (negative or "").strip():
            raise EngineError(f"The concept '{name}' has only a negative text; give it a text query or example "
                              "tiles too.")
        query, qvec = _embed_phrase(idx, query, runtime, progress, cancel)
        negative, nvec = _embed_phrase(idx, negative, runtime, progress, cancel)
        concept = create_concept(idx.conn, name, query, negative, qvec, nvec)
        if example_tiles:
            mark_tiles(idx.conn, concept, "example", example_tiles)
        return get_concept(idx.conn, name)


def concept_set_text(index_dir: str | Path, name: str, query: str | None = None, negative: str | None = None,
                     runtime: Runtime = Runtime(), progress: ProgressFn | None = None, cancel: CancelFn | None = None):
    """Change a concept's text query and/or negative text (None keeps it; "" removes it); marks stay."""
    from .concepts import get_concept, set_concept_text

    with open_for_query(index_dir, write=True) as idx:
        concept = get_concept(idx.conn, name, f"the index at {idx.folder}")
        q_text, q_vec = (concept.query, concept.query_vec) if query is None else \
            _embed_phrase(idx, query, runtime, progress, cancel)
        n_text, n_vec = (concept.negative, concept.negative_vec) if negative is None else \
            _embed_phrase(idx, negative, runtime, progress, cancel)
        return set_concept_text(idx.conn, concept, q_text, n_text, q_vec, n_vec)


def concept_rename(index_dir: str | Path, name: str, new_name: str):
    from .concepts import rename_concept
    from .index import TileIndex

    with TileIndex.open(index_dir, write=True) as idx:
        return rename_concept(idx.conn, name, new_name)


def concept_delete(index_dir: str | Path, name: str):
    """Delete a concept and its marks (the tiles and their embeddings are untouched)."""
    from .concepts import delete_concept
    from .index import TileIndex

    with TileIndex.open(index_dir, write=True) as idx:
        return delete_concept(idx.conn, name)


def concept_mark(index_dir: str | Path, name: str, accept: Sequence[int] = (), reject: Sequence[int] = (),
                 example: Sequence[int] = (), unmark: Sequence[int] = ()):
    """Accept, reject, use as example or unmark tiles of an index for a concept; returns the concept."""
    from .concepts import get_concept, mark_tiles, unmark_tiles
    from .feedback import tiles_of

    groups = {"accepted": [int(i) for i in accept], "rejected": [int(i) for i in reject],
              "example": [int(i) for i in example], "unmark": [int(i) for i in unmark]}
    seen: dict[int, str] = {}
    for kind, ids in groups.items():
        for i in ids:
            if seen.get(i, kind) != kind:
                raise EngineError(f"Tile {i} cannot be both {seen[i]} and {kind} in one go.")
            seen[i] = kind
    if not seen:
        raise EngineError("Give the tiles to mark (their tile_id numbers).")
    with open_for_query(index_dir, write=True) as idx:
        concept = get_concept(idx.conn, name, f"the index at {idx.folder}")
        for kind, ids in groups.items():
            if not ids:
                continue
            tiles = tiles_of(idx, ids)
            if kind == "unmark":
                unmark_tiles(idx.conn, concept, tiles)
            else:
                mark_tiles(idx.conn, concept, kind, tiles)
        return get_concept(idx.conn, concept.name)


def concept_score(index_dir: str | Path, name: str, top_k: int = 20, next_k: int = 10,
                  use_marks: bool | None = None, hide_marked: bool = True, progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None):
    """Score every tile for a concept (``engine.feedback.ConceptRound``): text only, Rocchio or the
    classifier as the marks allow; ``use_marks=True`` is "refine" (refused without marks)."""
    from .feedback import play_round

    if top_k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    with open_for_query(index_dir) as idx:
        return play_round(idx, name, top_k, next_k, use_marks, hide_marked, progress, cancel)


def concept_areas(index_dir: str | Path, name: str | None = None, threshold: float | None = None,
                  out: str | Path | None = None, query: str | None = None, negative: str | None = None,
                  use_marks: bool | None = None, runtime: Runtime = Runtime(), progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None):
    """Areas where a concept's tiles (score ≥ threshold) touch or overlap (``engine.feedback.ConceptAreas``).

    Give a stored concept by ``name``, or a ``query`` (and ``negative``) for a text-only search that
    is not stored. ``out`` writes the areas and tiles to a GeoPackage recording the concept.
    """
    from .areas import check_gpkg_path
    from .concepts import Concept
    from .feedback import areas_of_round, play_round, text_round

    if (name is None) == (query is None):
        raise EngineError("Give either a concept name or a text query to find areas of.")
    if out:
        check_gpkg_path(out)
    with open_for_query(index_dir) as idx:
        if name is not None:
            rnd = play_round(idx, name, 1, 0, use_marks, True, progress, cancel)
        else:
            assert query is not None  # exactly one of name and query was given
            q_text, q_vec = _embed_phrase(idx, query, runtime, progress, cancel)
            if q_vec is None:
                raise EngineError("The search text is empty; type what to look for, e.g. 'airport runway'.")
            n_text, n_vec = _embed_phrase(idx, negative or "", runtime, progress, cancel)
            rnd = text_round(idx, Concept(0, q_text, q_text, n_text, q_vec, n_vec, 0.0, 0.0), progress, cancel)
        return areas_of_round(idx, rnd, threshold, out)


def concept_export(index_dir: str | Path, name: str, out: str | Path, chips: str | Path | None = None,
                   progress: ProgressFn | None = None, cancel: CancelFn | None = None):
    """A concept's marked tiles as a training GeoPackage, optionally with GeoTIFF chips (``engine.training``)."""
    from .areas import check_gpkg_path
    from .concepts import get_concept
    from .index import TileIndex
    from .training import export_training

    check_gpkg_path(out)
    with TileIndex.open(index_dir) as idx:
        concept = get_concept(idx.conn, name, f"the index at {idx.folder}")
        return export_training(idx.conn, concept, out, chips, progress, cancel)


# -- beyond one tile: change between dates, heat maps (engine/change.py, heatmap.py, scales.py) -------
def change(index_dir: str | Path, before: Sequence[str], after: Sequence[str], query: str | None = None,
           direction: str = "appeared", top_k: int = 20, scale: int | None = None, min_iou: float = 0.5,
           out: str | Path | None = None, runtime: Runtime = Runtime(), progress: ProgressFn | None = None,
           cancel: CancelFn | None = None, suppress: bool | None = None):
    """The places that changed most between two sets of an index's rasters (``engine.change.ChangeResult``).

    With ``query``: where it appeared (or disappeared, or either); without: the largest change of any kind.
    ``out`` also writes the places to a GeoPackage.
    """
    from .areas import check_gpkg_path
    from .change import check_direction, find_changes, write_change_gpkg
    from .search import clean_query, embed_query

    text = clean_query(query) if query is not None and query.strip() else ""
    if text:
        check_direction(direction)
    if out:
        check_gpkg_path(out)
    with open_for_query(index_dir) as idx:
        vec = None
        if text:
            vec = embed_query(get_encoder(idx.model, runtime, progress, cancel), text)[0]
        result = find_changes(idx, _abs(before) or [], _abs(after) or [], vec, text, direction, top_k, scale,
                              min_iou, progress, cancel, suppress)
    if out:
        write_change_gpkg(out, result)
    return result


def heatmaps(index_dir: str | Path, query: str, tile_ids: Sequence[int], out_dir: str | Path | None = None,
             names: Sequence[str] | None = None, templates: Sequence[str] | None = None,
             runtime: Runtime = Runtime(), progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list:
    """Where in each tile the query matches (``engine.heatmap.HeatMap``), as GeoTIFFs in ``out_dir`` when given.

    Needs a model with patch tokens (a ViT); for others ``EngineError`` says heat maps are not available.
    """
    from .heatmap import check_supported, compute_heatmaps
    from .search import clean_query, embed_query

    text = clean_query(query)
    if not tile_ids:
        raise EngineError("Choose at least one tile to show a heat map of.")
    with open_for_query(index_dir) as idx:
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        check_supported(encoder, model_label(idx.model))
        records = idx.tiles(tile_ids)
        missing = [int(t) for t in tile_ids if int(t) not in records]
        if missing:
            raise EngineError(f"Tile {missing[0]} is not in the index at {idx.folder}.")
        vec = embed_query(encoder, text, templates)[0]
        return compute_heatmaps(idx, encoder, [records[int(t)] for t in tile_ids], vec, text, out_dir, names,
                                progress, cancel)


def check_heatmaps(index_dir: str | Path, runtime: Runtime = Runtime()) -> None:
    """Refuse, before any work, an index whose model has no patch tokens (heat maps need a ViT)."""
    from .heatmap import check_supported

    with open_for_query(index_dir) as idx:
        check_supported(get_encoder(idx.model, runtime), model_label(idx.model))
