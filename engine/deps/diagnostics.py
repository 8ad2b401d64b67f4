"""A plain-text report of everything that decides whether the engine runs: for bug reports and support.

Each probe is guarded: the report must come out even when torch is missing or broken,
because that is exactly when users need it.
"""
from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path
from typing import Iterable, Sequence

from .host import running_python
from .installer import installed_record


def _module_line(name: str, attr: str = "__version__") -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 (a broken install is what this reports)
        return f"not importable ({type(exc).__name__}: {str(exc)[:160]})"
    version = getattr(module, attr, "?")
    return f"{version} ({Path(getattr(module, '__file__', '') or '?').parent})"


def _torch_lines() -> list[str]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return [f"torch: not importable ({type(exc).__name__}: {str(exc)[:160]})"]
    from ..device import cpu_has_native_bf16

    lines = [f"torch: {torch.__version__} ({Path(torch.__file__).parent})",
             f"torch build: CUDA {torch.version.cuda or 'none'}, threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        lines.append(f"device: cuda ({torch.cuda.get_device_name(0)})")
    else:
        lines.append(f"device: cpu ({'native bf16' if cpu_has_native_bf16() else 'no native bf16: fp32'})")
    return lines


def cached_models() -> list[str]:
    """The registry models whose weights are in the cache and verified; partial downloads are named as such.

    A failed download (offline, cancelled) leaves the model's folder behind, empty or with a ``.part``
    file: that is no model, and listing it as one misleads whoever reads the report.
    """
    from ..models.download import cached_weights_path, is_cached
    from ..models.registry import REGISTRY

    found = []
    for spec in REGISTRY.values():
        folder = cached_weights_path(spec).parent
        if is_cached(spec):
            found.append(spec.name)
        elif folder.is_dir() and any(folder.glob("*.part")):
            found.append(f"{spec.name}: partial download")
        elif folder.is_dir() and any(f.is_file() for f in folder.iterdir()):
            found.append(f"{spec.name}: not verified yet")
    return found


def engine_report(profile_dir: Path | str | None = None, private_folder: Path | str | None = None,
                  index_dir: Path | str | None = None, last_errors: Sequence[str] = (),
                  header: Iterable[str] = ()) -> str:
    """The report; ``header`` lines come first (the plugin puts QGIS's version there)."""
    from .. import __version__
    from ..models.download import cache_dir

    python, program = running_python()
    where = f"{python}, embedded in {program}" if program else python
    lines = [f"RS-CLIP Search {__version__}", *header,
             f"Python: {platform.python_version()} ({where}) on {platform.platform()}",
             f"NumPy: {_module_line('numpy')}",
             f"GDAL: {_module_line('osgeo.gdal')}"]
    lines += _torch_lines()
    lines += [f"open_clip: {_module_line('open_clip')}", f"faiss: {_module_line('faiss')}",
              f"shapely: {_module_line('shapely')}"]
    if private_folder is not None:
        record = installed_record(private_folder)
        on_path = str(private_folder) in sys.path
        state = (f"installed {record.get('installed_at', '?')} ({record.get('variant', '?')} build, from "
                 f"{record.get('source', '?')}), {'active' if on_path else 'not active'}") if record else "empty"
        lines.append(f"Private packages: {private_folder}: {state}")
    if profile_dir is not None:
        lines.append(f"QGIS profile: {profile_dir}")
    cache = cache_dir()
    lines.append(f"Model cache: {cache} ({', '.join(cached_models()) or 'no models'})")
    if index_dir:
        index = Path(index_dir) / "index.sqlite"
        state = f"{index.stat().st_size / 1e6:.1f} MB" if index.is_file() else "no index yet"
        lines.append(f"Index folder: {index_dir} ({state})")
    lines.append("Last errors:" if last_errors else "Last errors: none")
    lines += [f"  {e}" for e in last_errors]
    return "\n".join(lines) + "\n"
