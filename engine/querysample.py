"""The text queries an index's approximate search is calibrated on: the model's own text embeddings.

Text embeddings sit apart from image embeddings in a CLIP space (the "modality gap"), so an
IVF index tuned on image-like queries finds less of the true top-k for text queries at the same
``nprobe`` (OOD-DiskANN, arXiv 2211.12850, measured an order of magnitude more work at equal
recall). The sample is every class of the shipped class sets (``resources/classsets``) embedded
through the model's own prompt templates, exactly as a search embeds what a user types, and
through each of its first templates alone; it is
stored in the index (``query_samples``) once, by the indexing job that has the model loaded, so
any later rebuild calibrates on it without the model.
"""
from __future__ import annotations

import numpy as np


def text_phrases() -> list[str]:
    """The class names of every shipped class set, once each (case-insensitive), sorted."""
    from .classsets import available_class_sets, load_class_set

    seen: dict[str, str] = {}
    for name in available_class_sets():
        for phrase in load_class_set(name):
            seen.setdefault(phrase.lower(), phrase)
    return sorted(seen.values(), key=str.lower)


#: Templates used one at a time as well (a single filled template is a text query too).
SINGLE_TEMPLATES = 5


def text_query_vectors(encoder, model: dict) -> tuple[list[str], np.ndarray]:
    """(phrases, unit vectors) of the text sample.

    Each class name through all of the model's templates averaged, as ``search_text`` embeds a
    query, and through each of its first ``SINGLE_TEMPLATES`` templates alone (named by the filled
    prompt): about 240 text-tower embeddings for the shipped class sets.
    """
    from .prompts import model_templates

    templates = tuple(model_templates(model))
    phrases = text_phrases()
    names, parts = list(phrases), [encoder.encode_prompts(phrases, templates)]
    if len(templates) > 1:
        for template in templates[:SINGLE_TEMPLATES]:
            names += [template.format(p) for p in phrases]
            parts.append(encoder.encode_prompts(phrases, (template,)))
    vectors = np.concatenate(parts).astype(np.float32)
    first = {name: i for i, name in reversed(list(enumerate(names)))}  # a prompt equal to a phrase counts once
    keep = sorted(first.values())
    return [names[i] for i in keep], vectors[keep]


def store_text_sample(idx, encoder) -> None:
    """Embed the text sample with the index's model and store it in the index."""
    phrases, vectors = text_query_vectors(encoder, idx.model)
    idx.store_query_sample("text", phrases, vectors)
