"""Zero-shot classification of an ImageFolder through the engine's own labeller.

Class embeddings come from ``labeling.build_zero_shot_classifier`` and predictions from
``labeling.classify``/``top_two``, so the benchmark measures exactly what labelling does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import EngineError
from ..labeling import build_zero_shot_classifier, classify, top_two
from ..progress import CancelFn, ProgressFn, no_progress, scaled
from ..prompts import REMOTE_SENSING_TEMPLATES
from .datasets import ClassDataset
from .images import embed_image_files
from .metrics import accuracy, confusion_matrix, per_class_accuracy


@dataclass(frozen=True)
class ZeroShotResult:
    classes: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    confusion: np.ndarray
    top1: float
    per_class: list[float | None]

    @property
    def mean_per_class(self) -> float:
        present = [a for a in self.per_class if a is not None]
        return float(np.mean(present)) if present else 0.0


def logit_scale_of(encoder) -> float:
    """The model's learned logit scale, as labelling uses it (100 when unknown)."""
    return float(getattr(getattr(encoder, "loaded", None), "logit_scale", 100.0))


def evaluate_zeroshot(dataset: ClassDataset, encoder, templates: Sequence[str] = REMOTE_SENSING_TEMPLATES,
                      batch_size: int = 64, read_size: int | None = None, progress: ProgressFn | None = None,
                      cancel: CancelFn | None = None) -> ZeroShotResult:
    """Top-1 accuracy, per-class accuracy and confusion matrix of zero-shot labels."""
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    progress = progress or no_progress
    templates = tuple(templates or REMOTE_SENSING_TEMPLATES)
    classifier = build_zero_shot_classifier(encoder, list(dataset.classes), templates)
    progress(0.05, f"embedded {len(dataset.classes)} class names")
    paths = [p for p, _ in dataset.samples]
    emb = embed_image_files(paths, encoder, batch_size, read_size, scaled(progress, 0.05, 0.98), cancel)
    winners, _, _ = top_two(classify(emb, classifier, logit_scale_of(encoder)))
    y_true = np.asarray([c for _, c in dataset.samples], dtype=np.int64)
    y_pred = np.asarray(winners, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, len(dataset.classes))
    progress(1.0, f"zero-shot over {len(paths)} images done")
    return ZeroShotResult(dataset.classes, y_true, y_pred, cm, accuracy(y_true, y_pred), per_class_accuracy(cm))
