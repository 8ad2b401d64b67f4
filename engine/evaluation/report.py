"""Benchmark reports: a JSON file per run that says exactly what was measured on what, so two
runs can be compared (same dataset fingerprint, same checkpoint hash) or told apart.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import EngineError

REPORT_VERSION = 1


def dataset_fingerprint(root: Path, files: Iterable[Path], annotation: Path | None = None) -> str:
    """SHA-256 over the evaluated files' relative paths and sizes, plus the annotation file's hash."""
    from ..models import file_sha256

    digest = hashlib.sha256()
    rows = sorted((Path(os.path.relpath(f, root)).as_posix(), Path(f).stat().st_size) for f in files)
    for rel, size in rows:
        digest.update(f"{rel}\0{size}\n".encode())
    if annotation is not None:
        digest.update(f"annotation\0{file_sha256(Path(annotation))}\n".encode())
    return digest.hexdigest()


def checkpoint_sha256(model: dict) -> str | None:
    """SHA-256 of the weights file the model was loaded from (None if it is not on disk)."""
    from ..models import cached_weights_path, file_sha256, get_spec

    if model.get("kind") != "registry":
        return model.get("checkpoint_sha256")
    path = cached_weights_path(get_spec(str(model.get("name"))))
    return file_sha256(path) if path.is_file() else model.get("checkpoint_sha256")


def model_section(model: dict, encoder) -> dict:
    """Which model ran and how: label, recorded model, weights hash, input size, device, precision."""
    from ..jobs import model_label

    return {"label": model_label(model), "model": model, "checkpoint_sha256": checkpoint_sha256(model),
            "image_size": int(getattr(encoder, "image_size", 0)), "embed_dim": int(getattr(encoder, "dim", 0)),
            "device": str(getattr(encoder, "device", "")), "precision": str(getattr(encoder, "precision", ""))}


def software_versions() -> dict:
    import sys

    from .. import __version__

    out = {"engine": __version__, "python": sys.version.split()[0], "numpy": np.__version__}
    for name in ("torch", "open_clip"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "?"))
    return out


def new_report(kind: str, model: dict, encoder, dataset: dict, settings: dict, metrics: dict) -> dict:
    now = time.time()
    return {"report_version": REPORT_VERSION, "kind": kind,
            "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "timestamp": now, "model": model_section(model, encoder), "dataset": dataset, "settings": settings,
            "metrics": metrics, "software": software_versions()}


def write_json(path: Path, report: dict) -> None:
    atomic_write_bytes(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())


def default_report_path(kind: str, dataset_name: str) -> Path:
    """eval_<kind>_<dataset>_<UTC time>.json in the current folder."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset_name) or "dataset"
    return Path.cwd() / f"eval_{kind}_{safe}_{stamp}.json"


def prepare_out(out: str | Path | None, kind: str, dataset_name: str) -> Path:
    """Where the report goes; its folder must exist so a long run does not fail at the end."""
    path = Path(out).expanduser().resolve() if out else default_report_path(kind, dataset_name)
    if not path.parent.is_dir():
        raise EngineError(f"The folder {path.parent} for the report does not exist.")
    return path


def sibling(path: Path, suffix: str) -> Path:
    """REPORT.json → REPORT<suffix> (e.g. REPORT.confusion.csv)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + suffix)


def write_confusion_csv(path: Path, classes: Sequence[str], cm: np.ndarray) -> None:
    """Rows are true classes, columns predicted classes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, cm):
        writer.writerow([name, *(int(v) for v in row)])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def write_confusion_png(path: Path, classes: Sequence[str], cm: np.ndarray, title: str) -> None:
    """Confusion matrix picture: cells coloured by row share, labelled with counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(classes)
    side = max(4.0, 0.45 * n + 2.5)
    fig = Figure(figsize=(side, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(classes), rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels=list(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def summary_line(report: dict) -> str:
    """One line per run, for comparing runs side by side."""
    m, d = report["metrics"], report["dataset"]
    head = f"{report['kind']} {d['name']}"
    model = report["model"]["label"]
    tail = f"data {d['fingerprint'][:12]}"
    if report["kind"] == "retrieval":
        ks = report["settings"]["ks"]
        i2t = " ".join(f"R@{k} {m[f'i2t_R@{k}']:.2f}" for k in ks)
        t2i = " ".join(f"R@{k} {m[f't2i_R@{k}']:.2f}" for k in ks)
        return (f"{head}/{d['split']} ({d['images']} images, {d['texts']} captions) | {model} | "
                f"i2t {i2t} | t2i {t2i} | mR {m['mR']:.2f} | {tail}")
    return (f"{head} ({d['images']} images, {len(d['classes'])} classes) | {model} | top-1 {m['top1']:.2f} | "
            f"mean per-class {m['mean_per_class']:.2f} | {tail}")
