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
    p.add_argument("rasters", nargs="*", metavar="RASTER", help="rasters to index (any format GDAL reads)")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder (created if missing)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="NAME", help="registry model (see 'models'); default remoteclip-vit-b-32")
    model.add_argument("--arch", metavar="ARCH", help="open_clip config name (e.g. ViT-B-32, or ViT-B-32-quickgelu "
                       "for checkpoints trained from OpenAI weights) or model-config JSON path")
    p.add_argument("--checkpoint", metavar="FILE", help="local checkpoint for --arch")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tile-size", type=float, metavar="PX", help="tile size in pixels (default 224)")
    size.add_argument("--tile-m", type=float, metavar="METRES", help="tile size in ground metres")
    p.add_argument("--overlap", type=float, default=0.0, metavar="F", help="overlap fraction between tiles, 0-0.9")
    p.add_argument("--bands", metavar="1,2,3", help="bands to use as R,G,B (1-based), or one band for grey")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="tiles per model batch")
    p.add_argument("--remove", action="append", default=[], metavar="RASTER", help="remove a raster's tiles")

    p = sub.add_parser("search", help="find the tiles that best match a text")
    p.add_argument("query", metavar="TEXT")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--top-k", type=int, default=10, metavar="K")
    p.add_argument("--min-score", type=float, default=None, metavar="S")
    p.add_argument("--templates", metavar="T", help="prompt templates with {} (';'-separated); default: the "
                   "model's own")
    p.add_argument("--out", metavar="FILE.gpkg", help="write the result tiles to a GeoPackage")
    p.add_argument("--json", action="store_true", help="print results as JSON")

    p = sub.add_parser("label", help="label every tile zero-shot with land-cover classes")
    p.add_argument("--index", required=True, metavar="DIR")
    classes = p.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", metavar="LIST", help="comma-separated classes, or a shipped set name")
    classes.add_argument("--classes-file", metavar="FILE", help="one class per line")
    p.add_argument("--templates", metavar="T", help="prompt templates with {} (';'-separated); default: the "
                   "model's own")
    p.add_argument("--out", metavar="FILE.gpkg")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("info", help="what an index holds")
    p.add_argument("--index", required=True, metavar="DIR")
    add_eval_parser(sub)
    add_deps_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    info = jobs.info(index)
    return describe_templates(info.model, info.model_label)


def cmd_index(args) -> int:
    from . import jobs
    from .tiling import TilingSpec, parse_bands

    if args.checkpoint and not args.arch:
        raise EngineError("--checkpoint goes with --arch (the architecture the checkpoint belongs to).")
    if args.arch and not args.checkpoint:
        raise EngineError("--arch needs --checkpoint (a local weights file).")
    for raster in args.remove:
        n = jobs.remove_raster(args.index, raster)
        print(f"Removed {raster} ({n} tiles) from {args.index}.")
    if not args.rasters:
        if args.remove:
            return 0
        raise EngineError("Give at least one raster to index.")
    model = None
    if args.model or args.arch:
        model = jobs.resolve_model(args.index, args.model, args.arch, args.checkpoint)
    tiling = None
    if args.tile_size or args.tile_m or args.overlap or args.bands:
        tiling = TilingSpec(size=args.tile_m or args.tile_size or 224.0, units="m" if args.tile_m else "px",
                            overlap=args.overlap, bands=parse_bands(args.bands))
        tiling.validate()
    report = jobs.index_rasters(args.index, args.rasters, model=model, tiling=tiling,
                                batch_size=args.batch_size, progress=ProgressBar())
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(report.summary())
    return 1 if report.skipped else 0


def cmd_search(args) -> int:
    from . import jobs
    from .export import hit_row, write_hits_gpkg
    from .prompts import parse_templates

    if args.top_k < 1:
        raise EngineError("--top-k must be at least 1.")
    templates = parse_templates(args.templates)
    print(f"rsclip: {_templates_note(args.index, templates)}", file=sys.stderr)
    hits = jobs.search(args.index, args.query, top_k=args.top_k, min_score=args.min_score, templates=templates,
                       progress=ProgressBar())
    if args.out:
        write_hits_gpkg(args.out, hits)
    if args.json:
        print(json.dumps({"query": args.query, "results": [hit_row(h) for h in hits]}, indent=2))
    else:
        for h in hits:
            print(f"{h.rank:4d}  {h.score:.4f}  {Path(h.tile.raster).name}  tile {h.tile.id}  "
                  f"window {h.tile.window}")
        if args.out:
            print(f"Wrote {len(hits)} tiles to {args.out}")
    return 0


def cmd_label(args) -> int:
    from collections import Counter

    from . import jobs
    from .classsets import available_class_sets, load_class_set, parse_classes, read_classes_file
    from .export import label_row, write_labels_gpkg
    from .prompts import parse_templates

    if args.classes_file:
        classes = read_classes_file(args.classes_file)
    elif args.classes.strip() in available_class_sets():
        classes = load_class_set(args.classes.strip())
    else:
        classes = parse_classes(args.classes)
    templates = parse_templates(args.templates)
    print(f"rsclip: {_templates_note(args.index, templates)}", file=sys.stderr)
    labels = jobs.label(args.index, classes, templates, progress=ProgressBar())
    if args.out:
        write_labels_gpkg(args.out, labels)
    if args.json:
        print(json.dumps({"classes": classes, "results": [label_row(lab) for lab in labels]}, indent=2))
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
    print(f"Index:    {info.index_dir}")
    print(f"Model:    {info.model_label} ({info.dim}-d embeddings)")
    config = str(info.model.get("arch"))
    print(f"Config:   {Path(config).name if config.endswith('.json') else config} "
          f"({info.activation or 'unknown'} activation)")
    print(f"Prompts:  {templates_text(info.templates)}")
    print(f"Tiles:    {info.tile_count} ({info.vector_kind} search)")
    print(f"Tiling:   {tiling.get('size')} {tiling.get('units')}, overlap {tiling.get('overlap')}, "
          f"bands {tiling.get('bands') or 'auto'}")
    print(f"Created:  {_when(info.created)}; updated {_when(info.updated)}")
    print(f"Rasters:  {len(info.rasters)}")
    for r in info.rasters:
        state = "" if r.status == "complete" else f" ({r.status}: {r.tiles} of {r.planned} tiles)"
        print(f"  {r.tiles:7d} tiles  {r.path}{state}")
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


COMMANDS = {"models": cmd_models, "index": cmd_index, "search": cmd_search, "label": cmd_label, "info": cmd_info,
            "eval": cmd_eval, "deps": cmd_deps}
