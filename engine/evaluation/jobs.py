"""The two benchmark jobs, one function each (called by ``python -m engine eval``): load the
dataset, load the model through the engine, measure, and write the JSON report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import EngineError
from ..jobs import Runtime
from ..progress import CancelFn, ProgressFn, no_progress, scaled
from ..prompts import model_templates
from .datasets import LAYOUTS, load_caption_dataset, load_image_folder
from .images import read_size_for
from .metrics import DEFAULT_KS
from .report import (dataset_fingerprint, new_report, prepare_out, sibling, summary_line, write_confusion_csv,
                     write_confusion_png, write_json)


@dataclass(frozen=True)
class EvalRun:
    """A finished benchmark: its report, where it was written, and any extra files."""

    report: dict
    path: Path
    extra_files: list[Path] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return summary_line(self.report)


def resolve_eval_model(name: str | None = None, arch: str | None = None, checkpoint: str | None = None) -> dict:
    """A registry model by name, or an architecture + local checkpoint; the default model otherwise."""
    from ..models import DEFAULT_MODEL, resolve_model_ref

    if checkpoint and not arch:
        raise EngineError("--checkpoint goes with --arch (the architecture the checkpoint belongs to).")
    if arch and not checkpoint:
        raise EngineError("--arch needs --checkpoint (a local weights file).")
    if not (name or arch):
        name = DEFAULT_MODEL
    return resolve_model_ref(name=name, arch=arch, checkpoint=checkpoint).to_dict()


def eval_retrieval(dataset_dir: str | Path, fmt: str, model: dict, split: str = "test", limit: int | None = None,
                   batch_size: int = 64, out: str | Path | None = None, precision: str = "fp32",
                   progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> EvalRun:
    """Image-text retrieval R@1/5/10 on a caption dataset's split; writes the report to ``out``.

    ``precision`` defaults to fp32, the precision the published numbers were measured in.
    """
    from ..jobs import get_encoder
    from .retrieval import evaluate_retrieval

    progress = progress or no_progress
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    data = load_caption_dataset(dataset_dir, fmt, split, limit)
    name = LAYOUTS[data.fmt].title
    path = prepare_out(out, "retrieval", f"{name}-{split}")
    encoder = get_encoder(model, Runtime(precision=precision), scaled(progress, 0.0, 0.05), cancel)
    result = evaluate_retrieval(data, encoder, batch_size, progress=scaled(progress, 0.05, 1.0), cancel=cancel)
    files = [im.path for im in data.images]
    dataset = {"name": name, "format": data.fmt, "path": str(data.root), "annotation": str(data.annotation),
               "image_dir": str(data.image_dir), "split": split, "images": result.n_images,
               "texts": result.n_texts, "split_images": data.split_size,
               "images_without_captions": data.without_captions,
               "fingerprint": dataset_fingerprint(data.root, files, data.annotation)}
    settings = {"split": split, "limit": limit, "batch_size": batch_size, "precision": precision,
                "read_size": read_size_for(encoder), "ks": list(DEFAULT_KS), "captions": "raw (no prompt templates)",
                "ties": "a relevant item tied with a non-relevant one ranks below it"}
    report = new_report("retrieval", model, encoder, dataset, settings, result.metrics)
    write_json(path, report)
    return EvalRun(report, path)


def eval_zeroshot(dataset_dir: str | Path, model: dict, classes_file: str | Path | None = None,
                  templates: Sequence[str] | None = None, limit: int | None = None, batch_size: int = 64,
                  out: str | Path | None = None, precision: str = "fp32", progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None) -> EvalRun:
    """Zero-shot top-1 and per-class accuracy on an ImageFolder; writes the report and confusion CSV/PNG.

    ``precision`` defaults to fp32, as for retrieval.
    """
    from ..jobs import get_encoder
    from .zeroshot import evaluate_zeroshot, logit_scale_of

    progress = progress or no_progress
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    templates = tuple(templates or model_templates(model))  # the model's own unless given
    data = load_image_folder(dataset_dir, classes_file, limit)
    path = prepare_out(out, "zeroshot", data.root.name)
    encoder = get_encoder(model, Runtime(precision=precision), scaled(progress, 0.0, 0.05), cancel)
    result = evaluate_zeroshot(data, encoder, templates, batch_size, progress=scaled(progress, 0.05, 1.0),
                               cancel=cancel)
    csv_path, png_path = sibling(path, ".confusion.csv"), sibling(path, ".confusion.png")
    write_confusion_csv(csv_path, data.classes, result.confusion)
    dataset = {"name": data.root.name, "path": str(data.root), "images": len(data.samples),
               "total_images": data.total, "classes": list(data.classes),
               "class_folders": dict(zip(data.folders, data.classes)),
               "fingerprint": dataset_fingerprint(data.root, [p for p, _ in data.samples])}
    settings = {"limit": limit, "limit_order": "round-robin over classes, files sorted within each class",
                "batch_size": batch_size, "precision": precision, "read_size": read_size_for(encoder),
                "templates": list(templates),
                "classes_file": str(classes_file) if classes_file else None, "logit_scale": logit_scale_of(encoder)}
    metrics = {"top1": result.top1, "mean_per_class": result.mean_per_class,
               "per_class": dict(zip(data.classes, result.per_class)),
               "confusion": result.confusion.tolist(), "confusion_csv": csv_path.name, "confusion_png": png_path.name}
    report = new_report("zeroshot", model, encoder, dataset, settings, metrics)
    write_confusion_png(png_path, data.classes, result.confusion,
                        f"{report['model']['label']}\non {data.root.name}: top-1 {result.top1:.2f}%")
    write_json(path, report)
    return EvalRun(report, path, [csv_path, png_path])
