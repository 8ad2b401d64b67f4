"""What the Concepts tab asks for: plain parameter dataclasses, run by plugin/concepts.py."""
from __future__ import annotations

from dataclasses import dataclass

#: What a scoring round shows in the list: the best tiles, or the least certain ones.
VIEW_BEST = "best"
VIEW_NEXT = "next"


@dataclass(frozen=True)
class ConceptSearchParams:
    """Score every tile for a concept. ``use_marks``: False = text and examples only ("Search"),
    True = learn from the marks ("Refine"), None = whatever the marks allow ("What to label next").
    A concept that does not exist yet is created from ``query`` and ``negative``; one whose text
    changed gets the new text first."""

    index_dir: str
    concept: str
    query: str = ""
    negative: str = ""
    use_marks: bool | None = False
    view: str = VIEW_BEST
    top_k: int = 20


@dataclass(frozen=True)
class ConceptMarkParams:
    index_dir: str
    concept: str
    tile_ids: list[int]
    kind: str  # "accepted", "rejected", "example" or "unmark"


@dataclass(frozen=True)
class ConceptAreasParams:
    index_dir: str
    concept: str
    threshold: float
    path: str


@dataclass(frozen=True)
class ConceptExportParams:
    index_dir: str
    concept: str
    path: str
    chips_dir: str = ""
