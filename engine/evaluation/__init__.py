"""Retrieval and zero-shot benchmarks behind the published numbers (``python -m engine eval``).

Metric functions in ``metrics`` are plain numpy, for reuse by search and labelling code.
"""
from .datasets import CaptionDataset, ClassDataset, load_caption_dataset, load_image_folder
from .jobs import EvalRun, eval_retrieval, eval_zeroshot, resolve_eval_model
from .metrics import (accuracy, confusion_matrix, first_relevant_rank, per_class_accuracy, recall_at_k,
                      retrieval_metrics)
from .retrieval import RetrievalResult, evaluate_retrieval
from .zeroshot import ZeroShotResult, evaluate_zeroshot

__all__ = ["CaptionDataset", "ClassDataset", "EvalRun", "RetrievalResult", "ZeroShotResult", "accuracy",
           "confusion_matrix", "eval_retrieval", "eval_zeroshot", "evaluate_retrieval", "evaluate_zeroshot",
           "first_relevant_rank", "load_caption_dataset", "load_image_folder", "per_class_accuracy", "recall_at_k",
           "resolve_eval_model", "retrieval_metrics"]
