"""What the target Python is: version, platform, NumPy, GDAL, pip, and whether an NVIDIA driver is present.

The facts are read by running ``probe.py`` in that Python (QGIS's own interpreter may not be
the one running this code, e.g. when ``make bundle`` prepares a bundle for it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import EngineError

@dataclass(frozen=True)
class HostFacts:
    """The Python the packages are for. ``numpy`` is the version QGIS's bindings use (None: none)."""

    python: str
    platform: str
    executable: str
    numpy: str | None = None
    gdal: str | None = None
    has_pip: bool = False
    pip_wheel: str | None = None
    implementation: str = "cpython"
    machine: str = ""
    nvidia: str | None = None

    @property
    def python_minor(self) -> str:
        """``3.11`` from ``3.11.2``."""
        return ".".join(self.python.split(".")[:2])

    @property
    def tag(self) -> str:
        """A folder name for packages built for this Python, e.g. ``cp311-linux-x86_64``."""
        prefix = "cp" if self.implementation == "cpython" else self.implementation
        return f"{prefix}{self.python_minor.replace('.', '')}-{self.platform.replace('.', '_')}"

    @property
    def os_family(self) -> str:
        """``linux``, ``win`` or ``macosx``: what decides which torch build exists."""
        for family in ("linux", "win", "macosx"):
            if self.platform.startswith(family):
                return family
        return self.platform

    def to_dict(self) -> dict:
        return asdict(self)


def probe_host(python: str | None = None, timeout: float = 60) -> HostFacts:
    """Facts about ``python`` (default: the running interpreter), plus the NVIDIA driver check."""
    exe = python or sys.executable
    try:
        probe = Path(__file__).with_name("probe.py").read_text(encoding="utf-8")
        out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=timeout,
                             env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"Cannot run the Python at {exe} ({exc}).") from None
    if out.returncode != 0:
        raise EngineError(f"The Python at {exe} failed to start: {out.stderr.strip()[-300:]}")
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    return HostFacts(nvidia=detect_nvidia(), **facts)


def current_host(executable: str | None = None) -> HostFacts:
    """Facts about the running Python, read in-process (no NVIDIA check): enough to name its folder."""
    from .probe import python_facts

    facts = python_facts(full=False)
    facts["executable"] = executable or sys.executable
    return HostFacts(**facts)


def host_program() -> str | None:
    """The program file of this process (``/usr/bin/qgis.bin`` when QGIS embeds Python), where the OS tells."""
    if sys.platform.startswith("linux"):
        try:
            return os.readlink("/proc/self/exe")
        except OSError:
            return None
    if sys.platform == "win32":
        import ctypes

        buffer = ctypes.create_unicode_buffer(32768)
        got = ctypes.windll.kernel32.GetModuleFileNameW(None, buffer, len(buffer))
        return buffer.value if got else None
    if sys.platform == "darwin":
        import ctypes

        size = ctypes.c_uint32(4096)
        raw = ctypes.create_string_buffer(size.value)
        if ctypes.CDLL(None)._NSGetExecutablePath(raw, ctypes.byref(size)) == 0:
            return os.path.realpath(raw.value.decode())
    return None


def running_python() -> tuple[str, str | None]:
    """The interpreter that runs this code, and the program embedding it (None for a plain ``python``).

    Embedded in QGIS, ``sys.executable`` is merely the first ``python3`` on PATH (a pyenv shim, a
    virtualenv, another Python version), so the interpreter is found from ``sys.prefix`` instead.
    """
    program = host_program()
    if program is None or Path(program).name.lower().startswith(("python", "pypy")):
        return sys.executable, None
    major, minor = sys.version_info[:2]
    names = ("python.exe",) if sys.platform == "win32" else (f"bin/python{major}.{minor}", f"bin/python{major}")
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_exec_prefix)):
        for name in names:
            candidate = Path(prefix) / name
            if candidate.is_file():
                return str(candidate), program
    return f"python{major}.{minor}", program


def _clean_env() -> dict:
    """The environment without a PYTHONPATH that would show packages the target Python does not have."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def detect_nvidia(timeout: float = 15) -> str | None:
    """The NVIDIA driver version if one is installed and answers, else None.

    ``RSCLIP_NVIDIA`` set to ``none`` (or a version) overrides the check, for machines where
    nvidia-smi hangs and for tests.
    """
    forced = os.environ.get("RSCLIP_NVIDIA")
    if forced is not None:
        return None if forced.lower() in ("", "0", "none", "no") else forced
    smi = shutil.which("nvidia-smi")
    if smi is None and sys.platform == "win32":
        candidate = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        smi = str(candidate) if candidate.is_file() else None
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=timeout)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0].strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    proc = Path("/proc/driver/nvidia/version")
    if proc.is_file():
        text = proc.read_text(errors="replace")
        for word in text.split():
            if word[:1].isdigit() and "." in word:
                return word
        return "unknown"
    return None
