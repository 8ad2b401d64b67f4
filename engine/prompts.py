"""Prompt templates for remote-sensing text queries and class names.

Text is embedded through several templates and the embeddings averaged, as open_clip's
zero-shot code does: a bare phrase like "runway" matches tiles worse than the average of
"a satellite image of a runway", "an aerial photograph of a runway", ...

Each registry model carries the templates its authors used (``ModelSpec.templates``);
a model's own templates are used unless the user gives others. Custom checkpoints, whose
training nobody here knows, use ``REMOTE_SENSING_TEMPLATES``.
"""
from __future__ import annotations

#: Templates for custom checkpoints (and the fallback when nothing else is known).
REMOTE_SENSING_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "an aerial photograph of {}.",
    "a remote sensing image of {}.",
    "a satellite photo of {}.",
    "{} seen from above.",
)

#: RemoteCLIP's zero-shot prompt (issue #12, quoting the RemoteCLIP authors).
REMOTECLIP_TEMPLATES: tuple[str, ...] = ("a satellite photo of {}.",)

#: SkyCLIP's scene-classification prompts: github.com/wangzhecheng/SkyScript, prompt_templates.py
#: (the same two for every scene benchmark; the second has no full stop there either).
SKYCLIP_TEMPLATES: tuple[str, ...] = ("a satellite photo of {}.", "a satellite image of {}")

# GeoRSCLIP's zero-shot ensemble: github.com/om-ai-lab/RS5M, inference/classname_and_prompt/
# RSAID.py, RSEuroSAT.py, RSRESISC45.py (identical lists): 35 phrasings for each of
# "remote sensing image", "aerial image" and "satellite image", 105 templates in all.
_GEORSCLIP_PHRASES = (
    "{a} {img} of many {{}}.", "{a} {img} of a {{}}.", "{a} {img} of the {{}}.",
    "{a} {img} of the hard to see {{}}.", "{a} {img} of a hard to see {{}}.",
    "a low resolution {img} of the {{}}.", "a low resolution {img} of a {{}}.",
    "a bad {img} of the {{}}.", "a bad {img} of a {{}}.",
    "a cropped {img} of the {{}}.", "a cropped {img} of a {{}}.",
    "a bright {img} of the {{}}.", "a bright {img} of a {{}}.",
    "a dark {img} of the {{}}.", "a dark {img} of a {{}}.",
    "a close-up {img} of the {{}}.", "a close-up {img} of a {{}}.",
    "a black and white {img} of the {{}}.", "a black and white {img} of a {{}}.",
    "a jpeg corrupted {img} of the {{}}.", "a jpeg corrupted {img} of a {{}}.",
    "a blurry {img} of the {{}}.", "a blurry {img} of a {{}}.",
    "a good {img} of the {{}}.", "a good {img} of a {{}}.",
    "{a} {img} of the large {{}}.", "{a} {img} of a large {{}}.",
    "{a} {img} of the nice {{}}.", "{a} {img} of a nice {{}}.",
    "{a} {img} of the small {{}}.", "{a} {img} of a small {{}}.",
    "{a} {img} of the weird {{}}.", "{a} {img} of a weird {{}}.",
    "{a} {img} of the cool {{}}.", "{a} {img} of a cool {{}}.",
)
GEORSCLIP_TEMPLATES: tuple[str, ...] = tuple(
    phrase.format(a="an" if img.startswith("a") else "a", img=img)
    for img in ("remote sensing image", "aerial image", "satellite image") for phrase in _GEORSCLIP_PHRASES)

#: OpenAI CLIP's own RESISC45 (remote-sensing scene) prompts: github.com/openai/CLIP, data/prompts.md.
OPENAI_RESISC45_TEMPLATES: tuple[str, ...] = tuple(
    f"{view} of {article}{{}}."
    for article in ("", "a ", "the ")
    for view in ("satellite imagery", "aerial imagery", "satellite photo", "aerial photo", "satellite view",
                 "aerial view"))


def parse_templates(text: str | None) -> tuple[str, ...] | None:
    """Templates from a user string (one per line or ';'-separated), each with '{}'.

    An empty or missing string gives None: "use the model's own templates".
    """
    from .errors import EngineError

    if text is None or not text.strip():
        return None
    parts = [p.strip() for chunk in text.splitlines() for p in chunk.split(";")]
    templates = tuple(p for p in parts if p)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise EngineError(f"Prompt template {bad[0]!r} has no '{{}}' where the class name goes.")
    return templates


def model_templates(model: dict) -> tuple[str, ...]:
    """The prompt templates of the model an index records: a registry model's own, else the default."""
    if model.get("kind") == "registry":
        from .models.registry import REGISTRY

        spec = REGISTRY.get(str(model.get("name")))
        if spec is not None and spec.templates:
            return tuple(spec.templates)
    return REMOTE_SENSING_TEMPLATES


def templates_text(templates, limit: int = 3) -> str:
    """A short human description of a template list, e.g. for the dock and ``info``."""
    templates = tuple(templates)
    shown = "; ".join(templates[:limit])
    more = f"; … ({len(templates)} in all)" if len(templates) > limit else ""
    return shown + more


def describe_templates(model: dict, label: str, limit: int = 3) -> str:
    """Which templates a search or labelling of this model's index uses when the user gives none."""
    whose = (f"{label}'s own prompt templates" if model.get("kind") == "registry"
             else "the general remote-sensing prompt templates")
    return f"{whose}: {templates_text(model_templates(model), limit)}"
