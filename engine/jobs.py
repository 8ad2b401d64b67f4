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
    #: (source, tiles, why) for remote sources whose tiles could not be downloaded; a re-run retries them.
    unavailable: list[tuple[str, int, str]] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{sum(n for _, n in self.added)} new tiles from {len(self.added)} raster(s)"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} unchanged raster(s) skipped")
        if self.skipped:
            parts.append(f"{len(self.skipped)} raster(s) not indexed")
        if self.unavailable:
            parts.append(f"{sum(n for _, n, _ in self.unavailable)} tiles skipped because their web map tiles could "
                         "not be downloaded (run again to retry them)")
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
    #: Tiles per scale (engine/scales.py); {1: tile_count} for a one-scale index.
    scales: dict = field(default_factory=dict)


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
    same_arch = Path(str(a.get("arch"))).name == Path(str(b.get("arch"))).name
    return a.get("checkpoint_sha256") == b.get("checkpoint_sha256") and same_arch


def index_rasters(index_dir: str | Path, rasters: Sequence[str | Path], model: dict | None = None,
                  tiling=None, batch_size: int = 32, runtime: Runtime = Runtime(),
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                  scales: Sequence[int] | None = None) -> IndexReport:
    """Tile, embed and add rasters to an index (created if needed), batch by batch.

    Unchanged rasters are skipped; a raster that was partly indexed resumes where it
    stopped; unreadable rasters are listed in the report and the others go on. If no raster
    is usable, nothing is created or changed and ``EngineError`` says why.

    ``scales`` (or ``tiling.scales``) adds tile sizes to the index (engine/scales.py): an existing
    index keeps its own scales and gains the new ones, whose tiles alone are embedded.
    """
    from .index import TileIndex, is_index
    from .scales import merged_scales, same_cut, with_scales
    from .sources import SourceUnavailable, canonical_path, check_request_cap
    from .tiling import TilingSpec, open_raster

    progress = progress or no_progress
    index_dir = Path(index_dir).expanduser().resolve()
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    if not rasters:
        raise EngineError("No rasters given to index.")
    existing = is_index(index_dir)
    model = model_for_index(index_dir, model)
    recorded_tiling = None
    if existing:
        with TileIndex.open(index_dir) as idx:
            recorded_tiling = TilingSpec.from_dict(idx.tiling)
        if tiling is not None and not same_cut(tiling, recorded_tiling):
            raise EngineError(f"The index at {index_dir} was built with other tile settings "
                              f"({_tiling_text(recorded_tiling)}); use a new index folder for {_tiling_text(tiling)}.")
        asked = [*(tiling.scales if tiling is not None and tiling.scales != (1,) else ()), *(scales or ())]
        tiling = merged_scales(recorded_tiling, asked)
    else:
        tiling = tiling or TilingSpec()
        if scales:
            tiling = merged_scales(tiling, scales) if tiling.scales != (1,) else with_scales(tiling, scales)
        tiling.validate()

    report = IndexReport(str(index_dir))
    usable = []
    for raster in dict.fromkeys(canonical_path(r) for r in rasters):
        try:
            info = open_raster(raster, tiling)
            check_request_cap(raster, tiling)  # a web map needing too many requests is refused before any
            usable.append(info)
        except EngineError as exc:
            report.skipped.append((raster, str(exc)))
    if not usable:
        raise EngineError(report.skipped[0][1] if len(report.skipped) == 1 else
                          "None of the rasters can be indexed: " + " ".join(r for _, r in report.skipped))

    encoder = get_encoder(model, runtime, scaled(progress, 0.0, 0.05), cancel)
    idx = TileIndex.open(index_dir) if existing else TileIndex.create(index_dir, model, tiling.to_dict(), encoder.dim)
    try:
        with idx.writing():
            if recorded_tiling is not None and tiling.scales != recorded_tiling.scales:
                idx.add_scales(tiling.to_dict())
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
                rec = idx.raster(info.path)
                before = rec.tiles if rec is not None and rec.fingerprint == info.fingerprint else 0
                try:
                    added, missing = _index_one(idx, info, tiling, encoder, batch_size, sub, cancel)
                except Cancelled:
                    report.cancelled = True
                    now = idx.raster(info.path)
                    if now is not None and now.tiles > before:
                        report.added.append((info.path, now.tiles - before))
                    break
                except SourceUnavailable as exc:  # the server, not the data: keep what came, resume later
                    report.skipped.append((info.path, str(exc)))
                    if (now := idx.raster(info.path)) is not None and now.tiles > before:
                        report.added.append((info.path, now.tiles - before))
                    continue
                except EngineError as exc:
                    if idx.raster(info.path) is not None:
                        idx.remove_raster(info.path)  # a damaged file must not half-appear in results
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
            idx.vector_store()
            report.total_tiles = idx.tile_count()
    finally:
        idx.close()
    progress(1.0, report.summary())
    return report


def _index_one(idx, info, tiling, encoder, batch_size: int, progress: ProgressFn,
               cancel: CancelFn | None) -> tuple[int, tuple[int, str] | None]:
    """Embed one raster's remaining tiles, committing each batch; returns tiles added and, for a
    remote source whose downloads failed, (tiles skipped, why): it then stays partial, to resume.

    Reading and preprocessing run in a background thread (``pipeline.prefetch_batches``)
    while this thread embeds and commits, so the model is rarely idle. An index with several
    scales cuts the raster once per scale (engine/scales.py), smallest first.
    """
    from .pipeline import prefetch_batches
    from .scales import scale_specs
    from .tiling import RasterTiler, plan_windows

    name = Path(info.path).name
    specs = scale_specs(tiling)
    planned = sum(len(plan_windows(info, spec)) for _, spec in specs)
    raster_id, done = idx.begin_raster(info.path, info.fingerprint, info.crs_wkt, info.width, info.height,
                                       info.bands, planned)
    idx.set_planned(raster_id, planned)
    added, unavailable, why = 0, 0, ""
    for n, (scale, spec) in enumerate(specs):
        label = name if len(specs) == 1 else f"{name} at ×{scale}"
        sub = scaled(progress, n / len(specs), (n + 1) / len(specs))
        with RasterTiler(info.path, spec) as tiler:

            def tick(fraction: float, message: str, label: str = label, sub: ProgressFn = sub) -> None:
                sub(fraction, f"{label}: {message}")

            batches = prefetch_batches(tiler.iter_tiles(progress=tick, cancel=cancel, skip=done), batch_size,
                                       lambda arrays: encoder.preprocess(np.stack(arrays)))
            for tiles, pixels in batches:
                idx.add_tiles(raster_id, tiles, encoder.encode_pixels(pixels))
                added += len(tiles)
                done |= {t.window.as_tuple() for t in tiles}  # a window two scales share is embedded once
                check_cancel(cancel)
            unavailable += tiler.unavailable
            why = tiler.unavailable_reason or why
    if unavailable:
        progress(1.0, f"{name}: {added} tiles embedded, {unavailable} could not be downloaded")
        return added, (unavailable, why)
    idx.finish_raster(raster_id)
    progress(1.0, f"{name}: {added} tiles embedded")
    return added, None


def _tiling_text(spec) -> str:
    unit = "px" if spec.units == "px" else "m"
    scales = f", scales {','.join(map(str, spec.scales))}" if tuple(spec.scales) != (1,) else ""
    return f"tile {spec.size:g} {unit}, overlap {spec.overlap:g}{scales}"


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
           progress: ProgressFn | None = None, cancel: CancelFn | None = None,
           scale: int | None = None, suppress: bool | None = None) -> list:
    """Top-k tiles of an index for a text query (see ``engine.search.Hit``).

    In an index with several scales, hits rank across scales and say their scale; ``scale``
    keeps one scale; ``suppress`` (default: on when several scales are searched) drops hits that
    a better hit covers (engine/scales.py states the rule).
    """
    from .search import candidate_ids, clean_query, embed_query, top_k as best

    clean_query(query)
    if top_k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    with open_for_query(index_dir) as idx:
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        vec = embed_query(encoder, query, templates)
        return _across_scales(idx, allowed, scale, suppress, top_k,
                              lambda n, ok: best(idx, vec, n, min_score, ok))


def similar(index_dir: str | Path, tile_ids: Sequence[int], top_k: int = 10, min_score: float | None = None,
            rasters: Sequence[str] | None = None, within_wgs84_wkt: str | None = None,
            scale: int | None = None, suppress: bool | None = None) -> list:
    """Tiles most like the given tiles of the same index; no model needed (scales as in ``search``)."""
    from .search import candidate_ids, search_similar

    if top_k < 1:
        raise EngineError("The number of results (top-k) must be at least 1.")
    with open_for_query(index_dir) as idx:
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        return _across_scales(idx, allowed, scale, suppress, top_k,
                              lambda n, ok: search_similar(idx, list(tile_ids), n, min_score, ok))


def _across_scales(idx, allowed, scale: int | None, suppress: bool | None, top_k: int, fetch) -> list:
    """Run ``fetch(n, allowed)`` for the best ``n`` hits, within one scale or across the index's scales."""
    from .scales import ScaleMap, hits_with_scales, ranked_across_scales, tiles_of_scale

    several = ScaleMap.of(idx).several
    if scale is not None:
        allowed = tiles_of_scale(idx, int(scale), allowed)
    do_suppress = several and scale is None if suppress is None else bool(suppress)
    total = idx.tile_count() if allowed is None else len(allowed)
    hits = ranked_across_scales(lambda n: fetch(n, allowed), top_k, do_suppress, total)
    return hits_with_scales(idx, hits)


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
    """Zero-shot label every tile of an index (see ``engine.labeling.TileLabel``)."""
    from .labeling import label_tiles
    from .prompts import REMOTE_SENSING_TEMPLATES
    from .search import candidate_ids

    with open_for_query(index_dir) as idx:
        encoder = get_encoder(idx.model, runtime, progress, cancel)
        allowed = candidate_ids(idx, _abs(rasters), within_wgs84_wkt)
        return label_tiles(idx, encoder, list(classes), templates or REMOTE_SENSING_TEMPLATES, allowed)


def tiles(index_dir: str | Path, rasters: Sequence[str] | None = None) -> list:
    """Every tile of an index (or of some of its rasters), for footprint layers."""
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
        return list(idx.iter_tiles(_abs(rasters)))


def info(index_dir: str | Path) -> IndexInfo:
    """What an index holds: model, tiling, rasters and tile count."""
    import json

    from .index import FAISS_META, TileIndex
    from .scales import tile_counts

    with TileIndex.open(index_dir) as idx:
        try:
            kind = json.loads((idx.folder / FAISS_META).read_text()).get("kind", "flat")
        except (OSError, ValueError):
            kind = "flat (not built yet)"
        return IndexInfo(str(idx.folder), idx.model, model_label(idx.model), idx.tiling, idx.dim,
                         idx.tile_count(), idx.rasters(), idx.created, idx.updated, kind, tile_counts(idx))


def remove_raster(index_dir: str | Path, raster: str | Path) -> int:
    """Remove one raster's tiles from an index; returns how many were removed."""
    from .index import TileIndex
    from .sources import canonical_path

    with TileIndex.open(index_dir) as idx, idx.writing():
        n = idx.remove_raster(canonical_path(raster))
        idx.vector_store()
        return n


def _abs(paths: Sequence[str] | None) -> list[str] | None:
    from .sources import canonical_path

    return [canonical_path(p) for p in paths] if paths else None


# -- concepts: find every X (see engine/concepts.py, scoring.py, areas.py, feedback.py) --------------
def _embed_phrase(idx, text: str, runtime: Runtime, progress: ProgressFn | None, cancel: CancelFn | None):
    """A phrase embedded through the remote-sensing templates by the index's model (None for no text)."""
    import logging

    from .prompts import REMOTE_SENSING_TEMPLATES
    from .search import clean_query

    if not (text or "").strip():
        return "", None
    text = clean_query(text)
    encoder = get_encoder(idx.model, runtime, progress, cancel)
    if any(encoder.is_truncated(t.format(text)) for t in REMOTE_SENSING_TEMPLATES):
        logging.getLogger("rsclip_search.engine").warning(
            "The text '%s…' is longer than the model reads; only its beginning is used.", text[:40])
    return text, encoder.encode_prompts([text], REMOTE_SENSING_TEMPLATES)[0]


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
    with open_for_query(index_dir) as idx:
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

    with open_for_query(index_dir) as idx:
        concept = get_concept(idx.conn, name, f"the index at {idx.folder}")
        q_text, q_vec = (concept.query, concept.query_vec) if query is None else \
            _embed_phrase(idx, query, runtime, progress, cancel)
        n_text, n_vec = (concept.negative, concept.negative_vec) if negative is None else \
            _embed_phrase(idx, negative, runtime, progress, cancel)
        return set_concept_text(idx.conn, concept, q_text, n_text, q_vec, n_vec)


def concept_rename(index_dir: str | Path, name: str, new_name: str):
    from .concepts import rename_concept
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
        return rename_concept(idx.conn, name, new_name)


def concept_delete(index_dir: str | Path, name: str):
    """Delete a concept and its marks (the tiles and their embeddings are untouched)."""
    from .concepts import delete_concept
    from .index import TileIndex

    with TileIndex.open(index_dir) as idx:
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
    with open_for_query(index_dir) as idx:
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
             names: Sequence[str] | None = None, runtime: Runtime = Runtime(), progress: ProgressFn | None = None,
             cancel: CancelFn | None = None) -> list:
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
        vec = embed_query(encoder, text)[0]
        return compute_heatmaps(idx, encoder, [records[int(t)] for t in tile_ids], vec, text, out_dir, names,
                                progress, cancel)


def check_heatmaps(index_dir: str | Path, runtime: Runtime = Runtime()) -> None:
    """Refuse, before any work, an index whose model has no patch tokens (heat maps need a ViT)."""
    from .heatmap import check_supported

    with open_for_query(index_dir) as idx:
        check_supported(get_encoder(idx.model, runtime), model_label(idx.model))
