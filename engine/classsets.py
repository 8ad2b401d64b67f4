"""Land-cover class sets shipped in ``resources/classsets`` and user-typed class lists."""
from __future__ import annotations

from pathlib import Path

from .errors import EngineError

CLASSSET_DIR = Path(__file__).resolve().parent.parent / "resources" / "classsets"


def available_class_sets() -> dict[str, Path]:
    """Shipped class sets by name (file stem)."""
    return {p.stem: p for p in sorted(CLASSSET_DIR.glob("*.txt"))}


def read_classes_file(path: str | Path) -> list[str]:
    """One class per line; blank lines and '#' comments ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise EngineError(f"Cannot read the class list {path}: {reason}.") from None
    return _checked([line.split("#", 1)[0].strip() for line in text.splitlines()], str(path))


def parse_classes(text: str) -> list[str]:
    """Classes from a comma- or newline-separated string."""
    return _checked([c.strip() for line in (text or "").splitlines() for c in line.split(",")], "the class list")


def load_class_set(name: str) -> list[str]:
    """A shipped class set by name, e.g. 'eurosat'."""
    sets = available_class_sets()
    if name not in sets:
        raise EngineError(f"Unknown class set {name!r}; shipped sets are: {', '.join(sets)}.")
    return read_classes_file(sets[name])


def _checked(classes: list[str], where: str) -> list[str]:
    classes = [c for c in classes if c]
    seen: set[str] = set()
    unique = []
    for c in classes:
        if c.lower() not in seen:
            seen.add(c.lower())
            unique.append(c)
    if len(unique) < 2:
        raise EngineError(f"{where[0].upper()}{where[1:]} needs at least two different classes.")
    return unique
