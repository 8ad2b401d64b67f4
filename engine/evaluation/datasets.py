"""Benchmark datasets on disk: caption retrieval sets (RSICD, RSITMD, UCM-captions) and
ImageFolder classification sets, found robustly in the layouts people actually unpack.

Caption sets use the Karpathy-style JSON (``{"images": [{"filename", "split",
"sentences": [{"raw"}, ...]}]}``); GeoRSCLIP's ``<name>_test.csv`` (filename,title rows) is
read too. The JSON and the image folder are searched for, not assumed at one path, and a
filename whose extension differs from the file on disk (``1.tif`` vs ``1.jpg``) still resolves.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import EngineError

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_SEARCH_DEPTH = 3


@dataclass(frozen=True)
class CaptionLayout:
    """Where a caption dataset usually keeps its annotation file and images."""

    json_names: tuple[str, ...]
    image_dirs: tuple[str, ...]
    title: str


LAYOUTS: dict[str, CaptionLayout] = {
    "rsicd": CaptionLayout(("dataset_rsicd.json",), ("RSICD_images", "images", "imgs"), "RSICD"),
    "rsitmd": CaptionLayout(("dataset_RSITMD.json",), ("images", "RSITMD_images", "imgs"), "RSITMD"),
    "ucm": CaptionLayout(("dataset.json", "dataset_ucm.json"), ("imgs", "images", "UCM_images"), "UCM-captions"),
}


@dataclass(frozen=True)
class CaptionImage:
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class CaptionDataset:
    """The images of one split with their captions, in annotation order."""

    fmt: str
    root: Path
    annotation: Path
    image_dir: Path
    split: str
    images: tuple[CaptionImage, ...]
    split_size: int
    without_captions: int

    @property
    def texts(self) -> list[str]:
        return [c for im in self.images for c in im.captions]

    @property
    def text_to_image(self) -> np.ndarray:
        """For each text (in ``texts`` order) the index of its image."""
        return np.asarray([i for i, im in enumerate(self.images) for _ in im.captions], dtype=np.int64)


@dataclass(frozen=True)
class ClassDataset:
    """An ImageFolder: one folder per class; samples are (path, class index)."""

    root: Path
    folders: tuple[str, ...]
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]
    total: int


def load_caption_dataset(root: str | Path, fmt: str, split: str = "test", limit: int | None = None) -> CaptionDataset:
    """The ``split`` images of a caption dataset (the first ``limit`` of them, if given)."""
    fmt = fmt.lower()
    if fmt not in LAYOUTS:
        raise EngineError(f"Unknown caption dataset format {fmt!r}; use one of {', '.join(LAYOUTS)}.")
    _check_limit(limit)
    root = Path(root).expanduser().resolve()
    layout = LAYOUTS[fmt]
    annotation = root if root.is_file() else find_annotation(root, layout, split)
    if annotation.suffix.lower() == ".csv":
        entries = _read_csv(annotation, split)
    else:
        entries = _read_json(annotation)
    grouped: dict[str, list[str]] = {}
    splits: dict[str, int] = {}
    for filename, entry_split, captions in entries:
        splits[entry_split] = splits.get(entry_split, 0) + 1
        if entry_split == split:
            grouped.setdefault(filename, []).extend(captions)
    if not grouped:
        present = ", ".join(f"{s} ({n})" for s, n in sorted(splits.items())) or "none"
        raise EngineError(f"{annotation.name} has no images in the {split!r} split (splits present: {present}).")
    named = [(f, tuple(c)) for f, c in grouped.items() if c]
    if not named:
        raise EngineError(f"None of the {split!r} images in {annotation.name} has a caption.")
    chosen = named[:limit] if limit else named
    search_root = root if root.is_dir() else annotation.parent
    image_dir, files = find_image_dir(search_root, annotation, layout, [f for f, _ in chosen])
    found = {f: files.resolve(f) for f, _ in chosen}
    missing = [f for f, path in found.items() if path is None]
    if missing:
        raise EngineError(f"{len(missing)} of the {len(chosen)} {split!r} images listed in {annotation.name} are "
                          f"missing from {image_dir} (first: {missing[0]}).")
    images = tuple(CaptionImage(path, caps) for (_, caps), path in zip(chosen, found.values()) if path is not None)
    return CaptionDataset(fmt, search_root, annotation, image_dir, split, images, len(named),
                          len(grouped) - len(named))


def find_annotation(root: Path, layout: CaptionLayout, split: str) -> Path:
    """The dataset's caption file under ``root``: its usual name first, then any dataset*.json, then a CSV."""
    if not root.is_dir():
        raise EngineError(f"The dataset folder {root} does not exist.")
    wanted = [n.lower() for n in layout.json_names]
    ranked: list[tuple[int, int, str, Path]] = []
    for depth, folder, _dirs, names in _walk(root):
        for name in names:
            low = name.lower()
            if low in wanted:
                rank = wanted.index(low)
            elif low.startswith("dataset") and low.endswith(".json"):
                rank = len(wanted)
            elif low.endswith(f"_{split.lower()}.csv"):
                rank = len(wanted) + 1
            else:
                continue
            ranked.append((rank, depth, str(folder / name), folder / name))
    if not ranked:
        raise EngineError(f"No caption file found under {root}: expected {' or '.join(layout.json_names)} "
                          f"(Karpathy-style JSON) or a <name>_{split}.csv with filename and title columns.")
    return min(ranked)[3]


class FolderFiles:
    """A folder's image files, looked up by name, case-insensitively, or by stem when the
    annotation's extension differs from the file's."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            entries = []
        for entry in entries:
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                path = folder / entry.name
                self.by_name.setdefault(entry.name.lower(), path)
                self.by_stem.setdefault(Path(entry.name).stem.lower(), path)

    def resolve(self, filename: str) -> Path | None:
        direct = self.folder / filename
        if ("/" in filename or "\\" in filename) and direct.is_file():
            return direct
        name = Path(filename.replace("\\", "/")).name
        return self.by_name.get(name.lower()) or self.by_stem.get(Path(name).stem.lower())


def find_image_dir(root: Path, annotation: Path, layout: CaptionLayout,
                   filenames: Sequence[str]) -> tuple[Path, FolderFiles]:
    """The folder holding most of the first listed images, preferring the layout's usual names."""
    usual = [n.lower() for n in layout.image_dirs]
    candidates: dict[Path, tuple[int, int]] = {annotation.parent: (len(usual), 0)}
    for depth, folder, _dirs, _names in _walk(root):
        low = folder.name.lower()
        candidates.setdefault(folder, (usual.index(low) if low in usual else len(usual), depth))
    probe = list(filenames[:20])
    best: tuple[int, tuple[int, int], Path, FolderFiles] | None = None
    for folder, priority in sorted(candidates.items(), key=lambda kv: (kv[1], str(kv[0]))):
        files = FolderFiles(folder)
        found = sum(files.resolve(f) is not None for f in probe)
        if found and (best is None or found > best[0]):
            best = (found, priority, folder, files)
    if best is None:
        raise EngineError(f"Cannot find the images listed in {annotation.name} (e.g. {probe[0]}) in any folder "
                          f"under {root}; expected a folder such as {layout.image_dirs[0]}/.")
    return best[2], best[3]


def load_image_folder(root: str | Path, classes_file: str | Path | None = None,
                      limit: int | None = None) -> ClassDataset:
    """An ImageFolder dataset; class names from folder names (``_`` → space) or ``classes_file``.

    ``limit`` takes images round-robin over the classes (sorted within each), so a quick run
    still sees every class.
    """
    _check_limit(limit)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise EngineError(f"The dataset folder {root} does not exist.")
    while True:
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if len(subdirs) == 1 and not loose:
            root = subdirs[0]  # e.g. UCMerced_LandUse/Images/<class>/
            continue
        break
    per_class = [(d.name, sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
                 for d in subdirs]
    per_class = [(name, files) for name, files in per_class if files]
    if len(per_class) < 2:
        raise EngineError(f"{root} needs at least two class folders with images for zero-shot evaluation "
                          f"(found {len(per_class)}).")
    folders = tuple(name for name, _ in per_class)
    classes = tuple(class_names(folders, classes_file))
    seen: dict[str, str] = {}
    for folder, name in zip(folders, classes):
        if name.lower() in seen:
            raise EngineError(f"The folders {seen[name.lower()]} and {folder} both get the class name {name!r}; "
                              "zero-shot needs a different name per class.")
        seen[name.lower()] = folder
    order: list[tuple[Path, int]] = []
    for j in range(max(len(files) for _, files in per_class)):
        order += [(files[j], c) for c, (_, files) in enumerate(per_class) if j < len(files)]
    return ClassDataset(root, folders, classes, tuple(order[:limit] if limit else order), len(order))


def class_names(folders: Sequence[str], classes_file: str | Path | None) -> list[str]:
    """Class phrases for the folders.

    Without a file: the folder name with ``_`` as space. A file either maps folders
    (``folder: phrase`` or ``folder<TAB>phrase`` lines) or lists one phrase per folder in
    sorted folder order (the torchvision ImageFolder order), like the shipped class sets.
    """
    if classes_file is None:
        return [f.replace("_", " ").strip() for f in folders]
    from ..classsets import available_class_sets

    path = Path(classes_file).expanduser()
    if not path.is_file() and str(classes_file) in available_class_sets():
        path = available_class_sets()[str(classes_file)]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise EngineError(f"Cannot read the classes file {path}: {reason}.") from None
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if any(":" in line or "\t" in line for line in lines):
        mapping = {}
        for line in lines:
            sep = "\t" if "\t" in line else ":"
            if sep not in line:
                raise EngineError(f"The line {line!r} in {path.name} is not 'folder: class name'.")
            folder, phrase = (part.strip() for part in line.split(sep, 1))
            mapping[folder.lower()] = phrase
        unmapped = [f for f in folders if f.lower() not in mapping or not mapping[f.lower()]]
        if unmapped:
            raise EngineError(f"{path.name} gives no class name for the folder(s) {', '.join(unmapped)}.")
        return [mapping[f.lower()] for f in folders]
    if len(lines) != len(folders):
        raise EngineError(f"{path.name} lists {len(lines)} classes but the dataset has {len(folders)} class folders; "
                          "list one class per folder in sorted folder order, or write 'folder: class name' lines.")
    return lines


def _read_json(path: Path) -> list[tuple[str, str, list[str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineError(f"Cannot read the caption file {path.name} ({exc}).") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise EngineError(f"{path.name} is not a Karpathy-style caption file (it has no 'images' list).")
    out = []
    for entry in images:
        if not isinstance(entry, dict):
            continue
        filename = entry.get("filename") or entry.get("file_name") or entry.get("image")
        if not filename:
            continue
        if entry.get("filepath"):
            filename = f"{entry['filepath']}/{filename}"
        out.append((str(filename), str(entry.get("split", "")).strip(), _captions(entry.get("sentences", []))))
    return out


def _captions(sentences: object) -> list[str]:
    out = []
    for s in sentences if isinstance(sentences, list) else []:
        text = s if isinstance(s, str) else (s.get("raw") or s.get("sentence") or s.get("caption")
                                             if isinstance(s, dict) else None)
        if isinstance(text, str) and text.strip():
            out.append(" ".join(text.split()))
    return out


def _read_csv(path: Path, split: str) -> list[tuple[str, str, list[str]]]:
    """GeoRSCLIP's <name>_<split>.csv: one (filename, title) row per caption."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            with open(path, newline="", encoding=encoding) as fh:
                rows = list(csv.DictReader(fh))
            break
        except UnicodeDecodeError:
            continue
        except OSError as exc:
            raise EngineError(f"Cannot read the caption file {path.name}: {exc.strerror}.") from None
    else:
        raise EngineError(f"{path.name} is neither UTF-8 nor GB18030 text.")
    if not rows or not {"filename"} <= set(rows[0]) or not ({"title", "caption"} & set(rows[0])):
        raise EngineError(f"{path.name} needs 'filename' and 'title' (or 'caption') columns.")
    key = "title" if "title" in rows[0] else "caption"
    return [(r["filename"], split, _captions([r.get(key) or ""])) for r in rows if r.get("filename")]


def _walk(root: Path) -> Iterator[tuple[int, Path, list[str], list[str]]]:
    """os.walk limited to a few levels, hidden folders skipped, in sorted order."""
    base = len(root.parts)
    for folder, dirs, names in os.walk(root):
        path = Path(folder)
        depth = len(path.parts) - base
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < _SEARCH_DEPTH else []
        yield depth, path, dirs, sorted(names)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise EngineError("--limit must be at least 1 image.")
