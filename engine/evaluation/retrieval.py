"""Image-text retrieval on a caption dataset: embed its split, then R@1/5/10 both ways.

Captions are embedded raw, without prompt templates, as the published protocol does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import EngineError
from ..progress import CancelFn, ProgressFn, no_progress, scaled
from .datasets import CaptionDataset
from .images import embed_image_files, embed_texts
from .metrics import DEFAULT_KS, retrieval_metrics


@dataclass(frozen=True)
class RetrievalResult:
    metrics: dict[str, float]
    n_images: int
    n_texts: int


def evaluate_retrieval(dataset: CaptionDataset, encoder, batch_size: int = 64, read_size: int | None = None,
                       ks: Sequence[int] = DEFAULT_KS, progress: ProgressFn | None = None,
                       cancel: CancelFn | None = None) -> RetrievalResult:
    """R@k image→text and text→image, and their mean, for every image and caption of ``dataset``."""
    if batch_size < 1:
        raise EngineError("The batch size must be at least 1.")
    progress = progress or no_progress
    paths = [im.path for im in dataset.images]
    texts = dataset.texts
    image_emb = embed_image_files(paths, encoder, batch_size, read_size, scaled(progress, 0.0, 0.75), cancel)
    text_emb = embed_texts(texts, encoder, batch_size, scaled(progress, 0.75, 0.98), cancel)
    metrics = retrieval_metrics(image_emb, text_emb, dataset.text_to_image, ks)
    progress(1.0, f"retrieval over {len(paths)} images and {len(texts)} captions done")
    return RetrievalResult(metrics, len(paths), len(texts))

