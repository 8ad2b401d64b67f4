"""Offline bundles: the wheels for one QGIS Python (plus chosen model weights) and a SHA-256 manifest.

A bundle is a folder (or a zip of it) made on a computer with internet and carried to one
without. The installer verifies every file against ``manifest.json`` before pip sees any of
them, and refuses files the manifest does not list. The manifest guards against damaged or
incomplete copies, not against someone who can rewrite the manifest too.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Sequence

from ..atomic import atomic_write_bytes
from ..errors import EngineError
from ..models.download import file_sha256
from ..models.registry import get_spec, licence_notice
from ..progress import CancelFn, ProgressFn, check_cancel, no_progress, scaled
from .host import HostFacts

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class BundleFile:
    path: str
    size: int
    sha256: str
    kind: str = "wheel"


@dataclass
class BundleManifest:
    """The parsed manifest; ``root`` is the folder the listed paths are relative to."""

    root: Path
    target: dict
    variant: str
    requirements: list[str]
    constraints: list[str] = field(default_factory=list)
    files: list[BundleFile] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    created: str = ""

    @property
    def wheels_dir(self) -> Path:
        return self.root / "wheels"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def wheel_count(self) -> int:
        return sum(1 for f in self.files if f.kind == "wheel")

    def file(self, path: str) -> BundleFile:
        for item in self.files:
            if item.path == path:
                return item
        raise EngineError(f"The bundle's manifest does not list {path}.")

    def check_target(self, host: HostFacts) -> None:
        """Refuse a bundle built for another Python, platform or NumPy than ``host``'s."""
        want = {"python": host.python_minor, "platform": host.platform, "numpy": host.numpy}
        for key, have in want.items():
            built = self.target.get(key)
            if built != have:
                raise EngineError(f"This bundle was built for {key} {built}, but QGIS's Python has {key} {have}. "
                                  f"Build a bundle for this QGIS (make bundle on a computer with internet, "
                                  f"pointing --python at the same QGIS version).")

    def to_json(self) -> bytes:
        data = {"format": FORMAT, "created": self.created, "target": self.target, "variant": self.variant,
                "requirements": self.requirements, "constraints": self.constraints, "models": self.models,
                "files": [asdict(f) for f in self.files]}
        return json.dumps(data, indent=1).encode()


def _parse(data: bytes, root: Path, where: str) -> BundleManifest:
    try:
        raw = json.loads(data.decode("utf-8"))
        if raw.get("format") != FORMAT:
            raise EngineError(f"{where} has manifest format {raw.get('format')!r}; this plugin reads format {FORMAT}.")
        files = [BundleFile(str(f["path"]), int(f["size"]), str(f["sha256"]).lower(), str(f.get("kind", "wheel")))
                 for f in raw["files"]]
        manifest = BundleManifest(root, dict(raw["target"]), str(raw["variant"]), list(raw["requirements"]),
                                  list(raw.get("constraints", [])), files, list(raw.get("models", [])),
                                  str(raw.get("created", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{where} has a damaged manifest ({exc}).") from None
    for item in manifest.files:
        parts = PurePosixPath(item.path).parts
        if item.path.startswith("/") or ".." in parts or not parts or parts[0] not in ("wheels", "models"):
            raise EngineError(f"{where} lists a file outside its wheels/ and models/ folders: {item.path}.")
    return manifest


def read_manifest(path: Path) -> BundleManifest:
    """The manifest of a bundle folder or zip, without checking the files (see ``verify_bundle``)."""
    path = Path(path)
    if path.is_dir():
        source = path / MANIFEST
        if not source.is_file():
            raise EngineError(f"{path} is not an RS-CLIP Search bundle: it has no {MANIFEST}.")
        return _parse(source.read_bytes(), path, f"The bundle {path}")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            try:
                data = zf.read(MANIFEST)
            except KeyError:
                raise EngineError(f"{path} is not an RS-CLIP Search bundle: it has no {MANIFEST}.") from None
        return _parse(data, path, f"The bundle {path}")
    raise EngineError(f"No bundle at {path}: give the bundle folder or its .zip.")


def verify_bundle(path: Path, host: HostFacts | None = None, progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None, workdir: Path | None = None) -> BundleManifest:
    """Check every file of a bundle against its manifest; a zip is unpacked into ``workdir`` first.

    Raises ``EngineError`` naming the first damaged, missing or unlisted file.
    """
    progress = progress or no_progress
    path = Path(path)
    manifest = read_manifest(path)
    if host is not None:
        manifest.check_target(host)
    if path.is_file():
        root = Path(tempfile.mkdtemp(prefix="bundle-", dir=workdir))
        _unzip(path, root, scaled(progress, 0.0, 0.4), cancel)
        manifest.root = root
        progress = scaled(progress, 0.4, 1.0)
    listed = {item.path for item in manifest.files} | {MANIFEST}
    for found in sorted(p for p in manifest.root.rglob("*") if p.is_file()):
        rel = found.relative_to(manifest.root).as_posix()
        if rel not in listed:
            raise EngineError(f"The bundle file {rel} is not listed in the bundle's manifest, so the bundle was "
                              f"changed after it was built; nothing was installed. Build or copy the bundle again.")
    total, done = max(manifest.total_bytes, 1), 0
    for item in manifest.files:
        file = manifest.root / item.path
        if not file.is_file():
            raise EngineError(f"The bundle is incomplete: {item.path} is missing. Copy the bundle again.")
        progress(done / total, f"Checking {PurePosixPath(item.path).name}")
        size = file.stat().st_size
        got = file_sha256(file, cancel=cancel) if size == item.size else None
        if got != item.sha256:
            problem = f"its SHA-256 is {got}" if got else f"it has {size} bytes instead of {item.size}"
            raise EngineError(f"The bundle file {item.path} is damaged: {problem}, but the manifest says "
                              f"{item.sha256}. Nothing was installed; copy the bundle again.")
        done += item.size
    progress(1.0, f"All {len(manifest.files)} bundle files match the manifest")
    return manifest


def _unzip(path: Path, root: Path, progress: ProgressFn, cancel: CancelFn | None) -> None:
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        for n, info in enumerate(members):
            check_cancel(cancel)
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith("/") or ".." in parts:
                raise EngineError(f"The bundle {path} holds an unsafe path {info.filename}; nothing was installed.")
            zf.extract(info, root)
            progress((n + 1) / max(len(members), 1), f"Unpacking {PurePosixPath(info.filename).name}")


def assemble_bundle(out: Path, wheels: Sequence[Path], target: dict, variant: str, requirements: Sequence[str],
                    constraints: Sequence[str] = (), models: Sequence[tuple[str, Path]] = (),
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> BundleManifest:
    """Copy wheels and model files into a new bundle folder ``out`` and write its manifest.

    The folder is built beside ``out`` and renamed into place, so a bundle with a manifest is
    always complete.
    """
    progress = progress or no_progress
    out = Path(out)
    if out.exists():
        raise EngineError(f"{out} already exists; choose a new folder for the bundle.")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "wheels").mkdir(parents=True)
    files: list[BundleFile] = []
    model_entries = []
    items = [(Path(w), f"wheels/{Path(w).name}", "wheel") for w in wheels]
    items += [(Path(f), f"models/{name}/{Path(f).name}", "model") for name, f in models]
    try:
        for n, (source, rel, kind) in enumerate(items):
            check_cancel(cancel)
            progress(n / max(len(items), 1), f"Adding {source.name}")
            dest = partial / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            files.append(BundleFile(rel, dest.stat().st_size, file_sha256(dest, cancel=cancel), kind))
        for name, f in models:  # each model's licence notice travels with its weights
            licence = f"models/{name}/LICENCE.txt"
            atomic_write_bytes(partial / licence, licence_notice(get_spec(name)).encode("utf-8"))
            files.append(BundleFile(licence, (partial / licence).stat().st_size, file_sha256(partial / licence),
                                    "licence"))
            model_entries.append({"name": name, "file": f"models/{name}/{Path(f).name}", "licence": licence})
        manifest = BundleManifest(out, dict(target), variant, list(requirements), list(constraints), files,
                                  model_entries, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        atomic_write_bytes(partial / MANIFEST, manifest.to_json())
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    progress(1.0, f"{len(files)} files hashed into the manifest")
    return manifest


def build_bundle(out: Path, host: HostFacts, variant: str = "auto", models: Sequence[str] = (),
                 zip_output: bool = False, index_url: str | None = None, on_line=None,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Path:
    """Download the wheels ``host`` needs (and pip itself) with ``host``'s own pip, add model weights, write a bundle.

    Using the target Python's pip makes pip pick wheels for exactly its version and platform.
    """
    from .pins import requirements_for
    from .pip import pip_command, run_pip

    progress = progress or no_progress
    out = Path(out)
    final = out.with_suffix(".zip") if zip_output else out
    if final.exists():
        raise EngineError(f"{final} already exists; choose a new name for the bundle.")
    reqs = requirements_for(host, variant)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    try:
        constraints = work / "constraints.txt"
        constraints.write_text("".join(c + "\n" for c in reqs.constraints), encoding="utf-8")
        argv = pip_command(host) + ["download", "--dest", str(work / "wheels"), "--only-binary=:all:",
                                    "--progress-bar", "off", "--constraint", str(constraints)]
        if index_url:
            argv += ["--index-url", index_url]
        if reqs.extra_index_url:
            argv += ["--extra-index-url", reqs.extra_index_url]
        watcher_count = [0]

        def line(text: str) -> None:
            if on_line:
                on_line(text)
            if text.startswith(("Collecting", "Saved", "File was already downloaded")):
                watcher_count[0] += 1
                progress(min(0.7, 0.7 * watcher_count[0] / 100), text.strip()[:120])

        code, tail = run_pip(argv + reqs.packages + ["pip"], line, cancel, cwd=work)
        if code != 0:
            errors = " ".join(t.strip() for t in tail if t.strip().startswith("ERROR"))[:600]
            raise EngineError(f"pip could not download the packages for the bundle: {errors or tail[-1:]}")
        model_files = []
        if models:
            from ..models.download import ensure_weights

            for name in models:
                model_files.append((name, ensure_weights(get_spec(name), cancel=cancel)))
        target = {"python": host.python_minor, "platform": host.platform, "numpy": host.numpy,
                  "implementation": host.implementation}
        folder = work / "bundle"
        assemble_bundle(folder, sorted((work / "wheels").glob("*.whl")), target, reqs.variant, reqs.packages,
                        reqs.constraints, model_files, scaled(progress, 0.7, 0.95 if zip_output else 1.0), cancel)
        if zip_output:
            tmp = final.with_name(final.name + ".partial")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                    check_cancel(cancel)
                    zf.write(file, file.relative_to(folder).as_posix())
            tmp.replace(final)
        else:
            folder.rename(final)
        progress(1.0, f"Bundle written to {final}")
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
