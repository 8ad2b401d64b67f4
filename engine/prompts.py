"""Prompt templates for remote-sensing text queries and class names.

Text is embedded through several templates and the embeddings averaged, as open_clip's
zero-shot code does: a bare phrase like "runway" matches tiles worse than the average of
"a satellite image of a runway", "an aerial photograph of a runway", ...
"""

#: Templates used for search queries and class names unless the caller gives others.
REMOTE_SENSING_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "an aerial photograph of {}.",
    "a remote sensing image of {}.",
    "a satellite photo of {}.",
    "{} seen from above.",
)


def parse_templates(text: str | None) -> tuple[str, ...]:
    """Templates from a user string (one per line or ';'-separated), each with '{}'."""
    from .errors import EngineError

    if text is None or not text.strip():
        return REMOTE_SENSING_TEMPLATES
    parts = [p.strip() for chunk in text.splitlines() for p in chunk.split(";")]
    templates = tuple(p for p in parts if p)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise EngineError(f"Prompt template {bad[0]!r} has no '{{}}' where the class name goes.")
    return templates
