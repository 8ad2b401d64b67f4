"""One function per job, called alike by the command line, the QGIS dock and the toolbox.

Each takes paths and dataclasses plus ``progress``/``cancel`` callbacks and returns a typed
result; problems the user can fix raise ``EngineError``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import Cancelled, EngineError
from .progress import CancelFn, ProgressFn, check_cancel, no_progress, scaled


@dataclass
class IndexReport:
    """What an ``index_rasters`` run did, raster by raster."""

    index_dir: str
    added: list[tuple[str, int]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total_tiles: int = 0
    cancelled: bool = False

    def summary(self) -> str:
        parts = [f"{sum(n for _, n in self.added)} new tiles from {len(self.added)} raster(s)"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} unchanged raster(s) skipped")
        if self.skipped:
            parts.append(f"{len(self.skipped)} raster(s) not indexed")
        text = f"Index {self.index_dir}: " + ", ".join(parts) + f"; {self.total_tiles} tiles in total."
        if self.cancelled:
            text += " Cancelled; tiles indexed before the cancel were kept."
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
    activation: str | None = None  # QuickGELU / GELU of the recorded open_clip config
    templates: tuple[str, ...] = ()  # the model's own prompt templates (used unless others are given)
    notice: str | None = None  # e.g. "this index predates the fix of ...'s activation" (models.config_notice)


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
    """An Encoder for a recorded model, loaded once per process and reused."""
    from .encoder import Encoder
    from .models import ModelRef, load_model

    key = (tuple(sorted((k, str(v)) for k, v in model.items())), runtime)
    enc = _ENCODERS.get(key)
    if enc is None:
        from .device import choose_device, choose_precision

        if runtime.threads:
            import torch

            torch.set_num_threads(int(runtime.threads))
        device = choose_device(runtime.device)
        loaded = load_model(ModelRef.from_dict(model), device=device, progress=progress, cancel=cancel)
        precision, reason = choose_precision(loaded, device, runtime.precision)
        enc = Encoder(loaded, device=device, precision=precision)
        enc.reason = reason
        _ENCODERS.clear()
        _ENCODERS[key] = enc
    return enc


_ENCODERS: dict = {}
_NOTICED: set = set()


def notice_once(index_dir: str | Path, model: dict) -> str | None:
    """Log (once per process and index) that an index was built with a since-corrected model config."""
    import logging

    from .models import config_notice

    notice = config_notice(model)
    key = str(Path(index_dir).expanduser().resolve())
    if notice and key not in _NOTICED:
        _NOTICED.add(key)
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

    Asking for a different model than an existing index holds is refused: its vectors
    would not be comparable.
    """
    from .index import TileIndex, is_index
    from .models import DEFAULT_MODEL, resolve_model_ref

    if is_index(index_dir):
        with TileIndex.open(index_dir) as idx:
            recorded = idx.model
        if asked is not None and not same_model(asked, recorded):
            raise EngineError(f"The index at {index_dir} was built with {model_label(recorded)}, not "
                              f"{model_label(asked)}; use a new index folder for another model.")
        return recorded
    return asked or resolve_model_ref(name=DEFAULT_MODEL).to_dict()


def same_model(a: dict, b: dict) -> bool:
    if a.get("kind") != b.get("kind"):
        return False
    if a.get("kind") == "registry":
        return a.get("name") == b.get("name")
    return a.get("checkpoint_sha256") == b.get("checkpoint_sha256") and Path(str(a.get("arch"))).name == Path(str(b.get("arch"))).name


def index_rasters(index_dir: str | Path, rasters: Sequence[str | Path], model: dict | None = None,
                  tiling=None, batch_size: int = 32, runtime: Runtime = Runtime(),
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> IndexReport:
    """Tile, embed and add rasters to an index (created if needed), batch by batch.

    Unchanged rasters are skipped; a raster that was partly indexed resumes where it
    stopped; unreadable rasters are listed in the report and the others go on. If no raster
    is usable, nothing is created or changed and ``EngineError`` says why.
    """
    from .index import TileIndex, is_index
    from .tiling import TilingSpec, open_raster

    progress = progress or no_progress
    index_dir = Path(index_dir).expanduser().resolve()
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    if not rasters:
        raise EngineError("No rasters given to index.")
    existing = is_index(index_dir)
    model = model_for_index(index_dir, model)
    if existing:
        notice_once(index_dir, model)
        with TileIndex.open(index_dir) as idx:
            recorded_tiling = TilingSpec.from_dict(idx.tiling)
        if tiling is not None and tiling.to_dict() != recorded_tiling.to_dict():
            raise EngineError(f"The index at {index_dir} was built with other tile settings "
                              f"({_tiling_text(recorded_tiling)}); use a new index folder for {_tiling_text(tiling)}.")
        tiling = recorded_tiling
    else:
        tiling = tiling or TilingSpec()
        tiling.validate()

    report = IndexReport(str(index_dir))
    usable = []
    for raster in dict.fromkeys(str(Path(r).expanduser().resolve()) for r in rasters):
        try:
            usable.append(open_raster(raster, tiling))
        except EngineError as exc:
            report.skipped.append((raster, str(exc)))
    if not usable:
        raise EngineError(report.skipped[0][1] if len(report.skipped) == 1 else
                          "None of the rasters can be indexed: " + " ".join(r for _, r in report.skipped))

    encoder = get_encoder(model, runtime, scaled(progress, 0.0, 0.05), cancel)
    idx = TileIndex.open(index_dir) if existing else TileIndex.create(index_dir, model, tiling.to_dict(), encoder.dim)
    try:
        with idx.writing():
            todo = []
            for info in usable:
                rec = idx.raster(info.path)
                if rec is not None and rec.status == "complete" and rec.fingerprint == info.fingerprint \
                        and tuple(rec.bands) == tuple(info.bands):
                    report.unchanged.append(info.path)
                else:
                    todo.append(info)
            for n, info in enumerate(todo):
                check_cancel(cancel)
                sub = scaled(progress, 0.05 + 0.95 * n / len(todo), 0.05 + 0.95 * (n + 1) / len(todo))
                before = rec.tiles if (rec := idx.raster(info.path)) is not None and rec.fingerprint == info.fingerprint else 0
                try:
                    added = _index_one(idx, info, tiling, encoder, batch_size, sub, cancel)
                except Cancelled:
                    report.cancelled = True
                    now = idx.raster(info.path)
                    if now is not None and now.tiles > before:
                        report.added.append((info.path, now.tiles - before))
                    break
                except EngineError as exc:
                    if idx.raster(info.path) is not None:
                        idx.remove_raster(info.path)  # a damaged file must not half-appear in results
                    report.skipped.append((info.path, str(exc)))
                    continue
                if added == 0 and idx.raster(info.path).tiles == 0:
                    report.skipped.append((info.path, f"{Path(info.path).name} has no tiles with data (every tile is "
                                                      "nodata, or more than half nodata); nothing was indexed."))
                    continue
                report.added.append((info.path, added))
            idx.vector_store()
            report.total_tiles = idx.tile_count()
    finally:
        idx.close()
    progress(1.0, report.summary())
    return report


def _index_one(idx, info, tiling, encoder, batch_size: int, progress: ProgressFn, cancel: CancelFn | None) -> int:
    """Embed one raster's remaining tiles, committing each batch; returns tiles added.

    Reading and preprocessing run in a background thread (``pipeline.prefetch_batches``)
    while this thread embeds and commits, so the model is rarely idle.
    """
    from .pipeline import prefetch_batches
    from .tiling import RasterTiler

    name = Path(info.path).name
    with RasterTiler(info.path, tiling) as tiler:
        raster_id, done = idx.begin_raster(info.path, info.fingerprint, info.crs_wkt, info.width, info.height,
                                           info.bands, len(tiler.windows))

        def tick(fraction: float, message: str) -> None:
            progress(fraction, f"{name}: {message}")

        added = 0
        batches = prefetch_batches(tiler.iter_tiles(progress=tick, cancel=cancel, skip=done), batch_size,
                                   lambda arrays: encoder.preprocess(np.stack(arrays)))
        for tiles, pixels in batches:
            idx.add_tiles(raster_id, tiles, encoder.encode_pixels(pixels))
            added += len(tiles)
            check_cancel(cancel)
    idx.finish_raster(raster_id)
    progress(1.0, f"{name}: {added} tiles embedded")
    return added


def _tiling_text(spec) -> str:
    unit = "px" if spec.units == "px" else "m"
    return f"tile {spec.size:g} {unit}, overlap {spec.overlap:g}"


def open_for_query(index_dir: str | Path):
    """Open an index for search or labelling; an empty index is refused."""
    from .index import TileIndex

    idx = TileIndex.open(index_dir)
    if idx.tile_count() == 0:
        idx.close()
        raise EngineError(f"The index at {index_dir} has no tiles yet; index some rasters first.")
    return idx


def search(index_dir: str | Path, query: str, top_k: int = 10, min_score: float | None = None,
           rasters: Sequence[str] | None = None, within_wgs84_wkt: str | None = None,
           templates: Sequence[str] | None = None, runtime: Runtime = Runtime(),
           progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list:
    """Top-k tiles of an index for a text query (see ``engine.search.Hit``), through the model's own
    prompt templates unless ``templates`` are given."""
    from .prompts import model_templates
    from .search import candidate_ids, clean_query, search_text

    clean_query(query)
    with open_for_query(index_dir) as idx:
        notice_once(index_dir, idx.model)
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        return search_text(idx, encoder, query, top_k, min_score, tuple(templates or model_templates(idx.model)),
                           allowed)


def similar(index_dir: str | Path, tile_ids: Sequence[int], top_k: int = 10, min_score: float | None = None,
            rasters: Sequence[str] | None = None, within_wgs84_wkt: str | None = None) -> list:
    """Tiles most like the given tiles of the same index; no model needed."""
    from .search import candidate_ids, search_similar

    with open_for_query(index_dir) as idx:
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        return search_similar(idx, list(tile_ids), top_k, min_score, allowed)


def tiles_at(index_dir: str | Path, lon: float, lat: float) -> list[int]:
    """Ids of the tiles whose footprint contains a WGS84 point (for 'similar to here')."""
    from shapely import wkt as shapely_wkt
    from shapely.geometry import Point

    point = Point(lon, lat)
    with open_for_query(index_dir) as idx:
        return [t.id for t in idx.iter_tiles() if shapely_wkt.loads(t.footprint_wgs84_wkt).covers(point)]


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
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        return label_tiles(idx, encoder, list(classes), tuple(templates or model_templates(idx.model)), allowed)


def tiles(index_dir: str | Path, rasters: Sequence[str] | None = None) -> list:
    """Every tile of an index (or of some of its rasters), for footprint layers."""
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
        return list(idx.iter_tiles(_abs(rasters)))


def info(index_dir: str | Path) -> IndexInfo:
    """What an index holds: model, tiling, rasters and tile count."""
    import json

    from .index import FAISS_META, TileIndex
    from .models import activation_of, config_notice
    from .prompts import model_templates

    with TileIndex.open(index_dir) as idx:
        try:
            kind = json.loads((idx.folder / FAISS_META).read_text()).get("kind", "flat")
        except (OSError, ValueError):
            kind = "flat (not built yet)"
        model = idx.model
        return IndexInfo(str(idx.folder), model, model_label(model), idx.tiling, idx.dim,
                         idx.tile_count(), idx.rasters(), idx.created, idx.updated, kind,
                         activation_of(str(model.get("arch") or "")), model_templates(model), config_notice(model))


def remove_raster(index_dir: str | Path, raster: str | Path) -> int:
    """Remove one raster's tiles from an index; returns how many were removed."""
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx, idx.writing():
        n = idx.remove_raster(str(Path(raster).expanduser().resolve()))
        idx.vector_store()
        return n


def _abs(paths: Sequence[str] | None) -> list[str] | None:
    return [str(Path(p).expanduser().resolve()) for p in paths] if paths else None
