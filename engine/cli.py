"""``python -m engine``: index rasters, search them in words, label them, inspect an index.

User errors print one line to stderr and exit 2; tracebacks are left for bugs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

from .errors import Cancelled, EngineError
from .sources.cliargs import add_remote_arguments, join_negative_values


class ProgressBar:
    """A text progress bar on stderr; plain lines every 10% when stderr is not a terminal."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.last_step = -1
        self.last_draw = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            now = time.monotonic()
            if fraction < 1.0 and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            filled = int(self.width * fraction)
            line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}% {message[:60]:<60}"
            self.stream.write(line)
            if fraction >= 1.0:
                self.stream.write("\n")
        else:
            step = int(fraction * 10)
            if step == self.last_step:
                return
            self.last_step = step
            self.stream.write(f"{fraction * 100:5.1f}% {message}\n")
        self.stream.flush()


class _StderrHandler(logging.StreamHandler):
    """Notices go to ``sys.stderr`` as it is when they are written (not as it was when the CLI first ran)."""

    rsclip_cli = True

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=(
        "RS-CLIP Search: natural-language search and zero-shot labelling of satellite and aerial imagery."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("models", help="list the model registry (config, activation, licence, attribution) and what "
                                  "is downloaded")

    p = sub.add_parser("index", help="tile rasters, embed the tiles and add them to an index")
    p.add_argument("rasters", nargs="*", metavar="RASTER",
                   help="rasters to index: files GDAL reads, or URLs (https://…, /vsicurl/…) of COGs")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder (created if missing)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="NAME", help="registry model (see 'models'); default remoteclip-vit-b-32")
    model.add_argument("--arch", metavar="ARCH", help="open_clip config name (e.g. ViT-B-32, or ViT-B-32-quickgelu "
                       "for checkpoints trained from OpenAI weights) or model-config JSON path")
    p.add_argument("--checkpoint", metavar="FILE", help="local checkpoint for --arch")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tile-size", type=float, metavar="PX", help="tile size in pixels (default 224)")
    size.add_argument("--tile-m", type=float, metavar="METRES", help="tile size in ground metres (at least 32 px a "
                      "side on each raster: coarser rasters get larger tiles, and a notice)")
    p.add_argument("--overlap", type=float, metavar="F", help="overlap fraction between tiles, 0-0.9 (default 0)")
    p.add_argument("--scales", metavar="1,2,4", help="also cut tiles this many times the tile size (all embedded at "
                   "the model's input size); added to an existing index, only the new scales are embedded, and "
                   "without rasters every raster of the index gets them")
    p.add_argument("--bands", metavar="1,2,3", help="bands to use as R,G,B (1-based), or one band for grey")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="tiles per model batch")
    p.add_argument("--dask", metavar="ADDRESS", help="embed on a Dask cluster: a scheduler address (tcp://host:8786), "
                   "its scheduler file (.json), or local:N for N worker processes here; needs dask and distributed "
                   "(docs/cluster.md)")
    p.add_argument("--remove", action="append", default=[], metavar="RASTER", help="remove a raster's tiles")
    add_remote_arguments(p)
    p.add_argument("--relink", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                   help="point an indexed raster at its new path (moved or renamed); nothing is re-embedded")
    p.add_argument("--verify", choices=("sample", "full"), default="sample",
                   help="how to recognise unchanged and moved rasters: size, time and samples of the file "
                        "(default), or also the SHA-256 of every byte (full)")
    p.add_argument("--archive", action="store_true", help="move the index to the archive layout at the end (float16 "
                   "shards + on-disk IVF-PQ; see 'archive'), even below the size where it moves by itself")

    p = sub.add_parser("search", help="find the tiles that best match a text")
    p.add_argument("query", metavar="TEXT")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--top-k", type=int, default=10, metavar="K")
    p.add_argument("--min-score", type=float, default=None, metavar="S")
    p.add_argument("--templates", metavar="T", help="prompt templates with {} (';'-separated); default: the "
                   "model's own")
    p.add_argument("--out", metavar="FILE.gpkg", help="write the result tiles to a GeoPackage (a new layer in an "
                   "existing one)")
    p.add_argument("--layer", default="search_results", metavar="NAME", help="layer name in --out (default "
                   "search_results)")
    p.add_argument("--overwrite", action="store_true", help="replace the layer of that name in --out")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--scale", type=int, metavar="S", help="only tiles of this scale (an index with --scales)")
    p.add_argument("--keep-overlaps", action="store_true", help="keep hits that a better hit covers (suppressed "
                   "by default when several scales are searched)")
    p.add_argument("--heatmap", metavar="DIR", help="also write where in each result tile the text matches, as "
                   "GeoTIFFs over the tiles (ViT models)")
    add_restriction_arguments(p)

    p = sub.add_parser("label", help="label every tile zero-shot with land-cover classes")
    p.add_argument("--index", required=True, metavar="DIR")
    classes = p.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", metavar="LIST", help="comma-separated classes, or a shipped set name")
    classes.add_argument("--classes-file", metavar="FILE", help="one class per line")
    p.add_argument("--templates", metavar="T", help="prompt templates with {} (';'-separated); default: the "
                   "model's own")
    p.add_argument("--out", metavar="FILE.gpkg")
    p.add_argument("--layer", default="tile_labels", metavar="NAME", help="layer name in --out (default tile_labels)")
    p.add_argument("--overwrite", action="store_true", help="replace the layer of that name in --out")
    p.add_argument("--json", action="store_true")
    add_restriction_arguments(p)

    p = sub.add_parser("info", help="what an index holds")
    p.add_argument("--index", required=True, metavar="DIR")
    add_eval_parser(sub)
    add_deps_parser(sub)
    add_concept_parser(sub)
    from .changecli import add_change_parser

    add_change_parser(sub)
    from .archive.cli import add_archive_parser

    add_archive_parser(sub)
    return parser


def add_restriction_arguments(p) -> None:
    """``--raster`` (repeatable) and ``--within``: search or label only some rasters, or only an area."""
    p.add_argument("--raster", action="append", default=[], metavar="PATH",
                   help="only tiles of this indexed raster (repeat for several)")
    p.add_argument("--within", metavar="FILE|WKT",
                   help="only tiles whose footprint meets this area: a vector file (FILE or FILE:LAYER, all its "
                        "features) or a WKT polygon in longitude/latitude")


def _restriction(args) -> dict:
    from .search import area_from_text

    return {"rasters": list(args.raster) or None,
            "within_wgs84_wkt": area_from_text(args.within) if args.within else None}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    notices = logging.getLogger("rsclip_search")
    if not any(getattr(h, "rsclip_cli", False) for h in notices.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("rsclip: %(message)s"))
        notices.addHandler(handler)
        notices.setLevel(logging.INFO)
        notices.propagate = False
    try:
        return COMMANDS[args.command](args)
    except Cancelled as exc:
        print(f"rsclip: {exc}", file=sys.stderr)
        return 130
    except EngineError as exc:
        print(f"rsclip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rsclip: interrupted; committed work was kept.", file=sys.stderr)
        return 130


def cmd_models(args) -> int:
    from .models import REGISTRY, DEFAULT_MODEL, cached_weights_path, is_cached
    from .prompts import templates_text

    for name, spec in REGISTRY.items():
        status = f"cached at {cached_weights_path(spec)}" if is_cached(spec) else "not downloaded"
        default = " (default)" if name == DEFAULT_MODEL else ""
        size = f", {spec.size / 1e6:,.1f} MB" if spec.size else ""
        check = {"pinned": "size and SHA-256 pinned from the publisher"}.get(spec.verification, spec.unchecked)
        print(f"{name}{default}: {spec.description}\n"
              f"    config:      {spec.arch} ({spec.activation} activation)\n"
              f"    weights:     {spec.source}{size}\n"
              f"    verified:    {check}\n"
              f"    licence:     {spec.licence}" + (f", see {spec.licence_url}" if spec.licence_url else "") + "\n"
              f"    attribution: {spec.citation}\n"
              + (f"    notice:      {spec.notice}\n" if spec.notice else "")
              + f"    prompts:     {templates_text(spec.templates, 2)}\n"
              f"    status:      {status}")
    print("Your own checkpoint: index --arch CONFIG --checkpoint FILE, where CONFIG is any open_clip config; use the "
          "-quickgelu config (e.g. ViT-B-32-quickgelu) for checkpoints trained from OpenAI's CLIP weights.")
    return 0


def _templates_note(index: str, given) -> str:
    """Which prompt templates a search or labelling uses, for one line on stderr."""
    from . import jobs
    from .prompts import describe_templates, templates_text

    if given:
        return f"your {len(given)} prompt template(s): {templates_text(given)}"
    model = jobs.model_of(index)  # the model alone: no pass over the tiles (as info makes) before a search
    return describe_templates(model, jobs.model_label(model))


def cmd_index(args) -> int:
    from . import jobs
    from .sources import display_name, using
    from .planning import plan_index, tile_request
    from .sources.cliargs import print_estimates, remote_options, web_source
    from .tiling import parse_bands

    if args.checkpoint and not args.arch:
        raise EngineError("--checkpoint goes with --arch (the architecture the checkpoint belongs to).")
    if args.arch and not args.checkpoint:
        raise EngineError("--arch needs --checkpoint (a local weights file).")
    from .index import is_index
    from .scales import parse_scales

    if args.dask:  # before any work: a missing Dask or a mistyped address is said at once
        from .distributed import parse_address, require_dask

        parse_address(args.dask)
        require_dask()
        logging.getLogger("distributed").setLevel(logging.WARNING)  # this process's own: no INFO chatter of Dask's,
        logging.getLogger("distributed.client").setLevel(logging.CRITICAL)  # nor its traceback of a lost scheduler
    for raster in args.remove:
        n = jobs.remove_raster(args.index, raster)
        print(f"Removed {raster} ({n} tiles) from {args.index}.")
    options = remote_options(args)
    web = web_source(args)
    rasters = list(args.rasters) + ([web] if web else [])
    scales = parse_scales(args.scales)
    if scales and not rasters and not args.stac and is_index(args.index):
        rasters = [r.path for r in jobs.info(args.index).rasters]  # new scales for every raster of the index
    if args.stac and rasters:
        raise EngineError("--stac indexes what the catalogue holds; give rasters or a web map in another run.")
    for old, new in args.relink:
        n = jobs.relink_raster(args.index, old, new, verify=args.verify)
        print(f"Relinked {old} to {new} ({n} tiles, nothing re-embedded) in {args.index}.")
    if not rasters and not args.stac:
        if args.remove or args.relink:
            return 0
        raise EngineError("Give at least one raster to index (a file, a COG URL, --xyz, --wms or --stac).")
    model = None
    if args.model or args.arch:
        from .models import resolve_model_ref

        model = resolve_model_ref(args.model, args.arch, args.checkpoint).to_dict()
    size = args.tile_m if args.tile_m is not None else args.tile_size
    tiling = tile_request(size, None if size is None else "m" if args.tile_m is not None else "px", args.overlap,
                          parse_bands(args.bands), scales)
    plan = plan_index(args.index, model, tiling)  # the index's own model and tiles, or one sentence why not
    if any(r.startswith("webmap:") for r in rasters) or args.estimate:
        print_estimates(rasters, plan.tiling, options)
        if args.estimate:
            return 0
    if args.stac:
        from .sources.stac import index_stac

        report, found = index_stac(args.index, args.stac, args.collection, args.bbox, args.datetime, args.asset,
                                   args.max_items, model=model, tiling=tiling, batch_size=args.batch_size,
                                   options=options, progress=ProgressBar(), dask=args.dask)
        more = (f", indexing the first {len(found.rasters)} (raise --max-items)"
                if found.matched > args.max_items else "")
        print(f"rsclip: STAC: {found.matched} item(s) matched{more}; dates kept in the index.", file=sys.stderr)
        for item, reason in found.skipped:
            print(f"skipped item {item}: {reason}", file=sys.stderr)
    else:
        with using(options):
            report = jobs.index_rasters(args.index, rasters, model=model, tiling=tiling,
                                        batch_size=args.batch_size, progress=ProgressBar(), verify=args.verify,
                                        dask=args.dask, archive=args.archive)
    for old, new in report.relinked:
        print(f"relinked {old} to {new} (the same file, moved; nothing re-embedded)", file=sys.stderr)
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for notice in report.notices:
        print(f"rsclip: {notice}", file=sys.stderr)
    for path, count, why in report.unavailable:
        print(f"rsclip: {count} tiles of {display_name(path)} were skipped, their web map tiles could not be "
              f"downloaded (last: {why}); run the same command again to retry them.", file=sys.stderr)
    print(report.summary())
    return 1 if report.skipped or report.unavailable else 0


def cmd_search(args) -> int:
    from . import jobs
    from .export import gpkg_plan, hit_row, write_hits_gpkg
    from .prompts import parse_templates
    from .search import clean_query

    clean_query(args.query)  # an empty query is refused before anything else is looked at
    if args.top_k < 1:
        raise EngineError("--top-k must be at least 1.")
    if args.out:
        gpkg_plan(args.out, args.layer, args.overwrite)  # refuse before the work, not after
    if args.heatmap:
        jobs.check_heatmaps(args.index)  # before searching: a model without patch tokens is refused at once
    templates = parse_templates(args.templates)
    restriction = _restriction(args)
    print(f"rsclip: {_templates_note(args.index, templates)}", file=sys.stderr)
    hits = jobs.search(args.index, args.query, top_k=args.top_k, min_score=args.min_score, templates=templates,
                       progress=ProgressBar(), scale=args.scale, suppress=False if args.keep_overlaps else None,
                       **restriction)
    model = jobs.model_label(jobs.model_of(args.index))
    if args.out:
        write_hits_gpkg(args.out, hits, args.layer, args.overwrite, query=args.query, model=model)
    maps = []
    if args.heatmap and hits:
        maps = jobs.heatmaps(args.index, args.query, [h.tile.id for h in hits], args.heatmap,
                             names=[f"rank{h.rank:03d}_tile{h.tile.id}.tif" for h in hits], templates=templates,
                             progress=ProgressBar())
    if args.json:
        rows = [{**hit_row(h), **({"heatmap": m.path, "hottest_cell": list(m.hottest)} if m else {})}
                for h, m in zip(hits, maps or [None] * len(hits))]
        print(json.dumps({"query": args.query, "model": model, "results": rows}, indent=2))
    else:
        for h in hits:
            scale = f"  ×{h.scale}" if h.scale is not None else ""
            print(f"{h.rank:4d}  {h.score:.4f}  {Path(h.tile.raster).name}  tile {h.tile.id}  "
                  f"window {h.tile.window}{scale}")
        if args.out:
            print(f"Wrote {len(hits)} tiles to {args.out}")
        if maps:
            print(f"Wrote {len(maps)} heat maps to {args.heatmap}")
    return 0


def cmd_label(args) -> int:
    from collections import Counter

    from . import jobs
    from .classsets import available_class_sets, load_class_set, parse_classes, read_classes_file
    from .export import gpkg_plan, label_row, write_labels_gpkg
    from .prompts import parse_templates

    if args.classes_file:
        classes = read_classes_file(args.classes_file)
    elif args.classes.strip() in available_class_sets():
        classes = load_class_set(args.classes.strip())
    else:
        classes = parse_classes(args.classes)
    if args.out:
        gpkg_plan(args.out, args.layer, args.overwrite)
    templates = parse_templates(args.templates)
    restriction = _restriction(args)
    print(f"rsclip: {_templates_note(args.index, templates)}", file=sys.stderr)
    labels = jobs.label(args.index, classes, templates, progress=ProgressBar(), **restriction)
    model = jobs.model_label(jobs.model_of(args.index))
    class_set = args.classes.strip() if not args.classes_file and args.classes.strip() in available_class_sets() else ""
    if args.out:
        write_labels_gpkg(args.out, labels, args.layer, args.overwrite, classes, model, class_set)
    if args.json:
        print(json.dumps({"classes": classes, "model": model, "results": [label_row(lab) for lab in labels]},
                         indent=2))
    else:
        counts = Counter(lab.label for lab in labels)
        for cls in classes:
            print(f"{counts.get(cls, 0):7d}  {cls}")
        if args.out:
            print(f"Wrote {len(labels)} labelled tiles to {args.out}")
    return 0


def cmd_info(args) -> int:
    from . import jobs
    from .prompts import templates_text

    info = jobs.info(args.index)
    tiling = info.tiling
    print(f"Index:    {info.index_dir}" + (" (read-only)" if info.readonly else ""))
    print(f"Model:    {info.model_label} ({info.dim}-d embeddings)")
    config = str(info.model.get("arch"))
    print(f"Config:   {Path(config).name if config.endswith('.json') else config} "
          f"({info.activation or 'unknown'} activation)")
    print(f"Prompts:  {templates_text(info.templates)}")
    print(f"Tiles:    {info.tile_count} ({info.vector_kind} search)")
    if info.search_settings:
        print("Search:   " + "; ".join(f"{kind} queries probe {n} lists, {d} candidates re-ranked exactly"
                                       for kind, (n, d) in sorted(info.search_settings.items())))
    if info.vector_kind.startswith("flat (exact)"):
        print("Recall:   1.000 for every query (exact search)")
    elif info.search_recall:
        measured = ", ".join(f"{info.search_recall[kind]:.3f} on {kind} queries"
                             for kind in ("text", "image") if kind in info.search_recall)
        if "text" not in info.search_recall:
            measured += " (not measured on text queries yet: the next 'index' run measures it)"
        print(f"Recall:   recall@10 against exact search {measured}")
    if info.archive:
        print(f"Archive:  {info.archive}")
    if len(info.scales) > 1:
        print("Scales:   " + ", ".join(f"×{s}: {n} tiles" for s, n in info.scales.items()))
    print(f"Tiling:   {tiling.get('size')} {tiling.get('units')}, overlap {tiling.get('overlap')}, "
          f"bands {tiling.get('bands') or 'auto'}")
    print(f"Created:  {_when(info.created)}; updated {_when(info.updated)}")
    print(f"Rasters:  {len(info.rasters)}")
    for r in info.rasters:
        state = "" if r.status == "complete" else f" ({r.status}: {r.tiles} of {r.planned} tiles)"
        if r.reindexing is not None:
            state += f" (changed; re-indexing: {r.reindexing[0]} of {r.reindexing[1]} new tiles, old tiles still used)"
        if r.missing:
            state += " (MISSING: no file at this path; index it at its new path to relink it)"
        print(f"  {r.tiles:7d} tiles  {r.path}{state}")
        if r.path in info.grids:
            print(f"                 {info.grids[r.path].text()}")
    if info.missing:
        print(f"Missing:  {len(info.missing)} raster(s) are not at their indexed path; their tiles are still "
              "searchable but cannot be shown.")
    if info.notice:
        print(f"Notice:   {info.notice}")
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "?"


def add_eval_parser(sub) -> None:
    """``eval retrieval`` and ``eval zeroshot``: the benchmarks behind the published numbers."""
    p = sub.add_parser("eval", help="measure retrieval or zero-shot quality on a benchmark dataset")
    kinds = p.add_subparsers(dest="eval_kind", required=True, metavar="BENCHMARK")
    r = kinds.add_parser("retrieval", help="image-text retrieval R@1/5/10 on RSICD, RSITMD or UCM-captions")
    r.add_argument("--dataset", required=True, metavar="DIR", help="dataset folder (caption JSON + image folder)")
    r.add_argument("--format", required=True, choices=("rsicd", "rsitmd", "ucm"))
    r.add_argument("--split", default="test", help="split to evaluate (default test)")
    z = kinds.add_parser("zeroshot", help="zero-shot classification accuracy on an ImageFolder (a folder per class)")
    z.add_argument("--dataset", required=True, metavar="DIR", help="folder with one sub-folder of images per class")
    z.add_argument("--classes-file", metavar="FILE", help="'folder: class name' lines, one class per folder in "
                   "sorted folder order, or a shipped class set name (e.g. ucmerced)")
    z.add_argument("--templates", metavar="T", help="prompt templates with {} (';'-separated)")
    for q in (r, z):
        model = q.add_mutually_exclusive_group()
        model.add_argument("--model", metavar="NAME", help="registry model (see 'models'); default remoteclip-vit-b-32")
        model.add_argument("--arch", metavar="ARCH", help="open_clip architecture name or model-config JSON path")
        q.add_argument("--checkpoint", metavar="FILE", help="local checkpoint for --arch")
        q.add_argument("--limit", type=int, metavar="N", help="only the first N images (quick, deterministic runs)")
        q.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per model batch")
        q.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                       help="fp32 (default, as the published numbers), or bf16/auto as indexing would run")
        q.add_argument("--out", metavar="REPORT.json", help="report file (default eval_<kind>_<dataset>_<time>.json)")


def cmd_eval(args) -> int:
    from .evaluation import eval_retrieval, eval_zeroshot, resolve_eval_model
    from .prompts import parse_templates

    model = resolve_eval_model(args.model, args.arch, args.checkpoint)
    common = dict(limit=args.limit, batch_size=args.batch_size, out=args.out, precision=args.precision,
                  progress=ProgressBar())
    if args.eval_kind == "retrieval":
        run = eval_retrieval(args.dataset, args.format, model, split=args.split, **common)
    else:
        run = eval_zeroshot(args.dataset, model, classes_file=args.classes_file,
                            templates=parse_templates(args.templates), **common)
    print(run.summary)
    for path in (run.path, *run.extra_files):
        print(f"rsclip: wrote {path}", file=sys.stderr)
    return 0


def add_deps_parser(sub) -> None:
    """``deps check|install|bundle|diagnostics``: get the engine's packages into a QGIS's own Python."""
    p = sub.add_parser("deps", help="check, install or bundle the Python packages the engine needs")
    kinds = p.add_subparsers(dest="deps_command", required=True, metavar="ACTION")
    check = kinds.add_parser("check", help="what the Python has, what is missing, and what would be installed")
    install = kinds.add_parser("install", help="install the packages into a QGIS profile's private folder")
    bundle = kinds.add_parser("bundle", help="write an offline bundle: wheels + model weights + SHA-256 manifest")
    diag = kinds.add_parser("diagnostics", help="print the diagnostics report")
    for q in (check, install, bundle):
        q.add_argument("--python", metavar="EXE", help="the QGIS Python to install for (default: this Python)")
        q.add_argument("--variant", default="auto", choices=("auto", "cpu", "cuda"),
                       help="torch build: cpu, cuda, or auto (cuda where an NVIDIA driver answers)")
        q.add_argument("--index-url", metavar="URL", help="package index to use instead of PyPI (e.g. a mirror)")
    for q in (check, install, diag):
        q.add_argument("--profile", metavar="DIR", help="QGIS profile folder (e.g. ~/.local/share/QGIS/QGIS3/"
                       "profiles/default)")
    install.add_argument("--bundle", metavar="PATH", help="install from this offline bundle (folder or .zip)")
    install.add_argument("--proxy", metavar="URL", help="HTTP(S) proxy for pip, e.g. http://user:pw@host:3128")
    install.add_argument("--yes", action="store_true", help="do not ask before installing")
    bundle.add_argument("--out", required=True, metavar="PATH", help="bundle folder to create")
    bundle.add_argument("--zip", action="store_true", help="write PATH.zip instead of a folder")
    bundle.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="also carry this registry model's weights (repeatable)")
    diag.add_argument("--index", metavar="DIR", help="index folder to describe")


def cmd_deps(args) -> int:
    from .deps import build_bundle, deps_dir, install, plan_install, probe_host
    from .deps.diagnostics import engine_report

    if args.deps_command == "diagnostics":
        host = probe_host()
        folder = deps_dir(args.profile, host) if args.profile else None
        if folder is not None:
            from .deps import activate

            activate(folder)
        print(engine_report(args.profile, folder, args.index), end="")
        return 0
    host = probe_host(args.python)
    if args.deps_command == "bundle":
        path = build_bundle(Path(args.out), host, args.variant, args.model, args.zip, args.index_url,
                            progress=ProgressBar())
        print(f"rsclip: wrote the bundle {path}", file=sys.stderr)
        return 0
    if not args.profile:
        raise EngineError("Give the QGIS profile folder with --profile.")
    plan = plan_install(host, args.profile, args.variant, getattr(args, "bundle", None), args.index_url,
                        getattr(args, "proxy", None))
    print(plan.describe())
    if args.deps_command == "check":
        return 0
    if not args.yes and input("Install? [y/N] ").strip().lower() not in ("y", "yes"):
        print("rsclip: nothing installed.", file=sys.stderr)
        return 1
    result = install(plan, on_line=lambda line: print(line, file=sys.stderr), progress=ProgressBar())
    print(f"rsclip: installed {len(result.installed)} packages into {result.target} in {result.seconds:.0f} s"
          + (f"; model weights: {', '.join(result.models)}" if result.models else ""), file=sys.stderr)
    return 0


def add_concept_parser(sub) -> None:
    """``concept …``: find every X — a named search that learns from accepted and rejected tiles."""
    p = sub.add_parser("concept", help="map every place of a concept: create, mark, score, areas, export")
    kinds = p.add_subparsers(dest="concept_command", required=True, metavar="ACTION")
    listing = kinds.add_parser("list", help="the concepts stored in an index")
    create = kinds.add_parser("create", help="a new concept from a text and/or example tiles")
    edit = kinds.add_parser("edit", help="change a concept's text or negative text (marks stay)")
    rename = kinds.add_parser("rename", help="rename a concept")
    delete = kinds.add_parser("delete", help="delete a concept and its marks")
    mark = kinds.add_parser("mark", help="accept, reject or unmark tiles (tile_id numbers) for a concept")
    score = kinds.add_parser("score", help="score every tile; print the best tiles and the ones to label next")
    refine = kinds.add_parser("refine", help="like score, but require marks (learn from them)")
    areas = kinds.add_parser("areas", help="dissolve the tiles above a threshold into areas (GeoPackage)")
    export = kinds.add_parser("export", help="the marked tiles as training data (GeoPackage, GeoTIFF chips)")
    for q in (listing, create, edit, rename, delete, mark, score, refine, areas, export):
        q.add_argument("--index", required=True, metavar="DIR")
    for q in (create, edit, rename, delete, mark, score, refine, areas, export):
        q.add_argument("name", metavar="NAME", help="the concept's name, e.g. 'solar farms'")
    for q in (create, edit):
        q.add_argument("--query", metavar="TEXT", help="what to look for, e.g. 'solar farm'")
        q.add_argument("--not", dest="negative", metavar="TEXT", help="what it is not, e.g. 'greenhouses'")
    create.add_argument("--example", action="append", default=[], metavar="IDS", help="example tile ids (1,2 3)")
    rename.add_argument("new_name", metavar="NEW_NAME")
    for flag, what in (("accept", "accepted"), ("reject", "rejected"), ("example", "examples"),
                       ("unmark", "forgotten (marks removed)")):
        mark.add_argument(f"--{flag}", action="append", default=[], metavar="IDS", help=f"tile ids to mark {what}")
    for q in (score, refine):
        q.add_argument("--top-k", type=int, default=20, metavar="K", help="best tiles to list (default 20)")
        q.add_argument("--next", type=int, default=10, metavar="N", help="least certain tiles to list (default 10)")
        q.add_argument("--show-marked", action="store_true", help="list marked tiles among the best too")
        q.add_argument("--out", metavar="FILE.gpkg", help="write the best tiles to a GeoPackage")
        q.add_argument("--json", action="store_true")
    score.add_argument("--text-only", action="store_true", help="ignore the marks (text and examples only)")
    areas.add_argument("--threshold", type=float, metavar="T",
                       help="keep tiles scoring at least T (default: the method's starting threshold)")
    areas.add_argument("--out", metavar="FILE.gpkg", help="write areas and tiles to this GeoPackage")
    areas.add_argument("--json", action="store_true")
    export.add_argument("--out", required=True, metavar="FILE.gpkg")
    export.add_argument("--chips", metavar="DIR", help="also write each marked tile as a GeoTIFF chip here")


def cmd_concept(args) -> int:
    from . import jobs
    from .concepts import parse_tile_ids

    action = args.concept_command
    if action == "list":
        concepts = jobs.concept_list(args.index)
        for c in concepts:
            print(c.describe())
        if not concepts:
            print(f"No concepts in {args.index} yet; create one with 'concept create NAME --query TEXT'.")
        return 0
    if action == "create":
        concept = jobs.concept_create(args.index, args.name, args.query or "", args.negative or "",
                                      parse_tile_ids(args.example), progress=ProgressBar())
        print(f"Created concept {concept.describe()}.")
        return 0
    if action == "edit":
        concept = jobs.concept_set_text(args.index, args.name, args.query, args.negative, progress=ProgressBar())
        print(f"Concept {concept.describe()}.")
        return 0
    if action == "rename":
        print(f"Renamed to {jobs.concept_rename(args.index, args.name, args.new_name).describe()}.")
        return 0
    if action == "delete":
        concept = jobs.concept_delete(args.index, args.name)
        print(f"Deleted concept '{concept.name}' and its {concept.marks} mark(s).")
        return 0
    if action == "mark":
        concept = jobs.concept_mark(args.index, args.name, parse_tile_ids(args.accept), parse_tile_ids(args.reject),
                                    parse_tile_ids(args.example), parse_tile_ids(args.unmark))
        print(f"Concept {concept.describe()}.")
        return 0
    if action in ("score", "refine"):
        return _concept_score(args, jobs)
    if action == "areas":
        return _concept_areas(args, jobs)
    out = jobs.concept_export(args.index, args.name, args.out, args.chips, progress=ProgressBar())
    print(out.summary())
    return 0


def _concept_score(args, jobs) -> int:
    from .export import hit_row, write_tiles_gpkg
    from .results import concept_table

    if args.top_k < 1:
        raise EngineError("--top-k must be at least 1.")
    if args.next < 0:
        raise EngineError("--next must be 0 or more.")
    use = True if args.concept_command == "refine" else (False if getattr(args, "text_only", False) else None)
    rnd = jobs.concept_score(args.index, args.name, args.top_k, args.next, use, not args.show_marked,
                             progress=ProgressBar())
    if args.out:
        write_tiles_gpkg(args.out, concept_table(rnd.best, rnd.marks, rnd.concept.name, rnd.model), "search_results")
    counts, edges = rnd.histogram
    if args.json:
        def rows(hits):
            return [{**hit_row(h), "mark": rnd.marks.get(h.tile.id, "")} for h in hits]

        print(json.dumps({"concept": rnd.concept.name, "method": rnd.method, "description": rnd.scores.description,
                          "threshold": rnd.threshold, "above_threshold": rnd.count_above(rnd.threshold),
                          "tiles": rnd.tile_count, "accepted": rnd.concept.accepted, "rejected": rnd.concept.rejected,
                          "examples": rnd.concept.examples, "dropped_marks": rnd.dropped_marks,
                          "results": rows(rnd.best), "next": rows(rnd.next),
                          "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}, indent=2))
        return 0
    print(rnd.summary())
    print(f"Starting threshold {rnd.threshold:.4f}: {rnd.count_above(rnd.threshold)} of {rnd.tile_count} tiles above.")
    _print_histogram(counts, edges)
    for title, hits in (("Best tiles", rnd.best), ("Least certain (label these next)", rnd.next)):
        if hits:
            print(f"{title}:")
        for h in hits:
            mark = rnd.marks.get(h.tile.id, "")
            print(f"{h.rank:4d}  {h.score:.4f}  tile {h.tile.id:<7d} {Path(h.tile.raster).name}  window {h.tile.window}"
                  + (f"  [{mark}]" if mark else ""))
    if args.out:
        print(f"Wrote {len(rnd.best)} tiles to {args.out}")
    return 0


def _print_histogram(counts, edges, rows: int = 10, width: int = 40) -> None:
    """The score histogram folded into ``rows`` lines of #, for choosing a threshold."""
    step = max(1, len(counts) // rows)
    folded = [int(sum(counts[i:i + step])) for i in range(0, len(counts), step)]
    top = max(folded) or 1
    for n, value in enumerate(folded):
        lo = edges[n * step]
        print(f"  {lo:8.4f} | {'#' * max(int(width * value / top), 1 if value else 0):<{width}} {value}")


def _concept_areas(args, jobs) -> int:
    out = jobs.concept_areas(args.index, args.name, args.threshold, args.out, progress=ProgressBar())
    r = out.result
    if args.json:
        print(json.dumps({"concept": out.round.concept.name, "method": out.round.method, "threshold": r.threshold,
                          "tiles": int(len(r.tile_rows)), "output": str(out.path) if out.path else None,
                          "areas": [{"area_id": a.id, "tiles": a.tiles, "best_score": a.best_score,
                                     "mean_score": a.mean_score, "area_m2": a.area_m2, "area_ha": a.area_ha,
                                     "rasters": list(a.rasters)} for a in r.areas]}, indent=2))
        return 0
    print(out.round.summary())
    print(out.summary())
    for a in r.areas[:20]:
        print(f"  area {a.id:4d}: {a.tiles:5d} tiles, {a.area_ha:10.2f} ha, best {a.best_score:.4f}, "
              f"mean {a.mean_score:.4f}")
    if len(r.areas) > 20:
        print(f"  … and {len(r.areas) - 20} more")
    return 0


def cmd_change(args) -> int:
    from .changecli import run_change

    return run_change(args, ProgressBar())


def cmd_archive(args) -> int:
    from .archive.cli import run_archive

    return run_archive(args, ProgressBar())


COMMANDS = {"models": cmd_models, "index": cmd_index, "search": cmd_search, "label": cmd_label, "info": cmd_info,
            "eval": cmd_eval, "deps": cmd_deps, "concept": cmd_concept, "change": cmd_change,
            "archive": cmd_archive}
