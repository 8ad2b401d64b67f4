"""Install the engine's packages into a plugin-private folder of the QGIS profile, and activate it.

The folder is per Python version and platform (``<profile>/rsclip_search/python/cp311-linux-x86_64``)
so a QGIS upgrade to another Python never loads binaries built for the old one. pip writes
into a staging folder that replaces the real one only when everything installed, so a failed
or cancelled install leaves the previous state untouched.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import EngineError
from ..progress import CancelFn, ProgressFn, no_progress, scaled
from .bundle import BundleManifest, read_manifest, verify_bundle
from .host import HostFacts
from .pins import IMPORTS, Requirements, requirements_for
from .pip import LineFn, pip_command, run_pip

RECORD = "rsclip-install.json"
#: Approximate number of distributions pip handles per build, for a progress bar on the network route.
_ABOUT_DISTRIBUTIONS = {"cpu": 30, "cuda": 50}


def deps_dir(profile_dir: Path | str, host: HostFacts) -> Path:
    """The private package folder for ``host``'s Python inside a QGIS profile folder."""
    return Path(profile_dir) / "rsclip_search" / "python" / host.tag


def missing_imports() -> list[str]:
    """Import names of the engine's packages this Python cannot find."""
    return [name for name in IMPORTS if importlib.util.find_spec(name) is None]


@dataclass
class InstallPlan:
    """Everything an install will do, shown to the user before it starts."""

    host: HostFacts
    target: Path
    requirements: Requirements
    bundle: BundleManifest | None = None
    bundle_path: Path | None = None
    index_url: str | None = None
    proxy: str | None = None
    model_cache: Path | None = None

    @property
    def source(self) -> str:
        if self.bundle_path is not None:
            return f"offline bundle {self.bundle_path}"
        indexes = [self.index_url or "PyPI (or the index in your pip configuration)"]
        if self.requirements.extra_index_url:
            indexes.append(self.requirements.extra_index_url)
        return " + ".join(indexes)

    @property
    def size_text(self) -> str:
        if self.bundle is not None:
            return f"{self.bundle.total_bytes / 1e6:,.0f} MB in {self.bundle.wheel_count} wheels (exact)"
        return f"about {self.requirements.about_mb:,} MB to download"

    def describe(self) -> str:
        """A few lines for the confirmation dialog and the CLI."""
        req = self.requirements
        held = ", ".join(f"{k} {v}" for k, v in req.held.items()) or "nothing"
        lines = [f"Install: {', '.join(req.packages)} and what they need",
                 f"Torch build: {req.variant.upper()}" + (f" (NVIDIA driver {self.host.nvidia} found)"
                                                          if self.host.nvidia else " (no NVIDIA driver found)"),
                 f"From: {self.source}",
                 f"Size: {self.size_text}",
                 f"Into: {self.target} (private to RS-CLIP Search; QGIS's own Python is not changed)",
                 f"Kept as QGIS has it: {held}",
                 f"For: Python {self.host.python} at {self.host.executable}"]
        if self.bundle is not None and self.bundle.models:
            lines.append(f"Model weights: {', '.join(m['name'] for m in self.bundle.models)} → {self.model_cache}")
        if req.tested_on:
            lines.append(f"These versions were tested together on {req.tested_on}.")
        return "\n".join(lines)


@dataclass
class InstallResult:
    target: Path
    installed: dict[str, str]
    models: list[str] = field(default_factory=list)
    seconds: float = 0.0


def plan_install(host: HostFacts, profile_dir: Path | str, variant: str = "auto", bundle: Path | str | None = None,
                 index_url: str | None = None, proxy: str | None = None,
                 model_cache: Path | None = None) -> InstallPlan:
    """Decide what to install for ``host`` (from the network, or from a bundle built for it)."""
    target = deps_dir(profile_dir, host)
    if bundle is not None:
        manifest = read_manifest(Path(bundle))
        manifest.check_target(host)
        requirements = Requirements(variant=manifest.variant, packages=list(manifest.requirements),
                                    constraints=list(manifest.constraints))
        return InstallPlan(host, target, requirements, manifest, Path(bundle), model_cache=model_cache)
    return InstallPlan(host, target, requirements_for(host, variant), index_url=index_url, proxy=proxy,
                       model_cache=model_cache)


def install(plan: InstallPlan, on_line: LineFn | None = None, progress: ProgressFn | None = None,
            cancel: CancelFn | None = None) -> InstallResult:
    """Carry out ``plan``: verify the bundle, run pip into staging, drop held packages, swap in, record."""
    started = time.monotonic()
    progress = progress or no_progress
    on_line = on_line or (lambda line: None)
    target = plan.target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    workdir = target.with_name(f".{target.name}.work-{os.getpid()}")
    for leftover in (staging, workdir):
        shutil.rmtree(leftover, ignore_errors=True)
    workdir.mkdir()
    try:
        bundle = None
        if plan.bundle_path is not None:
            bundle = verify_bundle(plan.bundle_path, plan.host, scaled(progress, 0.0, 0.2), cancel, workdir=workdir)
        staging.mkdir()
        constraints = workdir / "constraints.txt"
        constraints.write_text("".join(line + "\n" for line in plan.requirements.constraints), encoding="utf-8")
        argv, env = _pip_invocation(plan, bundle, staging, constraints)
        expected = bundle.wheel_count if bundle else _ABOUT_DISTRIBUTIONS.get(plan.requirements.variant, 40)
        watcher = _PipProgress(scaled(progress, 0.2 if bundle else 0.0, 0.97), expected, on_line)
        code, tail = run_pip(argv, watcher, cancel, env=env, cwd=workdir)
        if code != 0:
            raise EngineError(_pip_failure(plan, tail))
        _drop_held(staging, plan.requirements.held)
        installed = _distributions(staging)
        record = {"installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "python": plan.host.python, "platform": plan.host.platform, "variant": plan.requirements.variant,
                  "source": plan.source, "requirements": plan.requirements.packages,
                  "held": plan.requirements.held, "installed": installed}
        atomic_write_bytes(staging / RECORD, json.dumps(record, indent=1).encode())
        _swap_in(staging, target)
        models = _install_models(bundle, plan.model_cache) if bundle else []
        progress(1.0, f"Installed {len(installed)} packages into {target}")
        return InstallResult(target, installed, models, time.monotonic() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _pip_invocation(plan: InstallPlan, bundle: BundleManifest | None, staging: Path,
                    constraints: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_REQUIRE_VIRTUALENV")}
    wheel_dirs = [bundle.wheels_dir] if bundle else []
    argv = pip_command(plan.host, wheel_dirs) + [
        "install", "--target", str(staging), "--no-warn-script-location", "--progress-bar", "off",
        "--constraint", str(constraints)]
    if bundle is not None:
        # Offline and deterministic: no index, no pip configuration that could add one.
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        argv += ["--no-index", "--find-links", str(bundle.wheels_dir), "--only-binary=:all:"]
    else:
        argv += ["--prefer-binary", "--retries", "2", "--timeout", "60"]
        if plan.index_url:
            argv += ["--index-url", plan.index_url]
        if plan.requirements.extra_index_url:
            argv += ["--extra-index-url", plan.requirements.extra_index_url]
        if plan.proxy:
            argv += ["--proxy", plan.proxy]
    return argv + list(plan.requirements.packages), env


class _PipProgress:
    """Turns pip's lines into a progress fraction: one step per package collected, then installing."""

    def __init__(self, progress: ProgressFn, expected: int, on_line: LineFn) -> None:
        self.progress, self.expected, self.on_line = progress, max(expected, 1), on_line
        self.seen = 0

    def __call__(self, line: str) -> None:
        self.on_line(line)
        text = line.strip()
        if text.startswith(("Collecting ", "Processing ")):
            self.seen += 1
            self.progress(0.85 * min(self.seen / self.expected, 1.0), text[:120])
        elif text.startswith("Installing collected packages"):
            self.progress(0.88, "Installing collected packages…")
        elif text.startswith("Successfully installed"):
            self.progress(1.0, "pip finished")


def _pip_failure(plan: InstallPlan, tail: list[str]) -> str:
    errors = [line.strip() for line in tail if line.strip().startswith("ERROR")] or [line.strip() for line in tail[-3:]]
    detail = " ".join(errors[-3:])[:600]
    if plan.bundle_path is not None:
        hint = "The bundle may have been built for another computer; rebuild it for this QGIS with make bundle."
    else:
        hint = ("If this computer is offline or behind a proxy, set the proxy in QGIS (Settings › Options › Network) "
                "or install from an offline bundle made with make bundle on a computer that is online.")
    return f"pip could not install the packages: {detail} {hint}"


def _drop_held(staging: Path, held: dict[str, str]) -> None:
    """Remove the copies pip made of held distributions (NumPy): QGIS's own must stay the one imported."""
    for info in list(staging.glob("*.dist-info")):
        name = info.name[: -len(".dist-info")].rsplit("-", 1)[0]
        if _normal(name) not in {_normal(h) for h in held}:
            continue
        record = info / "RECORD"
        entries = record.read_text(encoding="utf-8").splitlines() if record.is_file() else []
        for entry in entries:
            rel = entry.rsplit(",", 2)[0]
            path = (staging / rel).resolve()
            if path.is_relative_to(staging.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(info, ignore_errors=True)
    for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _distributions(folder: Path) -> dict[str, str]:
    """name → version of the distributions in ``folder`` (from their dist-info folder names)."""
    found = {}
    for info in folder.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[name] = version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` with ``staging`` by renames; the old folder is removed if the OS lets us."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{int(time.time())}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _install_models(bundle: BundleManifest, cache: Path | None) -> list[str]:
    from ..models.download import adopt_weights
    from ..models.registry import get_spec

    names = []
    for model in bundle.models:
        item = bundle.file(model["file"])
        adopt_weights(get_spec(model["name"]), bundle.root / item.path, item.sha256, cache)
        names.append(model["name"])
    return names


def installed_record(folder: Path | str) -> dict | None:
    """What an earlier install wrote into ``folder`` (None: nothing installed there)."""
    try:
        return json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Activation:
    active: bool
    restart_needed: bool
    message: str


def activate(folder: Path | str) -> Activation:
    """Put an installed private folder first on ``sys.path`` so its packages import without a restart.

    ``.pth`` files are not processed: nothing runs on activation. A package already imported
    from elsewhere (a half-failed import, another plugin's torch) stays in use until QGIS restarts.
    """
    folder = Path(folder)
    if installed_record(folder) is None:
        return Activation(False, False, f"No packages are installed in {folder}.")
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()
    stale = []
    for name in IMPORTS:
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) if module is not None else None
        if where and not Path(where).resolve().is_relative_to(folder.resolve()) and (folder / name).is_dir():
            stale.append(f"{name} (loaded from {Path(where).parent})")
    missing = [name for name in missing_imports() if (folder / name).is_dir()]
    if missing:
        return Activation(True, True, f"Installed, but {', '.join(missing)} still cannot be found: restart QGIS.")
    if stale:
        return Activation(True, True, f"Installed. Restart QGIS to use the new packages: {', '.join(stale)} "
                                      "was already loaded.")
    return Activation(True, False, f"The packages in {folder} are ready; no restart is needed.")

