"""Running pip in QGIS's Python: find a pip (even where none is installed), stream its output, honour cancel."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from ..errors import Cancelled, EngineError
from ..progress import CancelFn
from .host import HostFacts

LineFn = Callable[[str], None]


def pip_command(host: HostFacts, wheel_dirs: Sequence[Path] = ()) -> list[str]:
    """How to run pip for ``host``: its own ``-m pip``, else pip straight from a pip wheel.

    A wheel is a zip that Python can run from (``python pip-X.whl/pip``), so a Python without
    pip (Debian without python3-pip, some locked-down installs) still installs from a bundle,
    which carries one, or from the wheel ensurepip ships.
    """
    if host.has_pip:
        return [host.executable, "-m", "pip"]
    candidates = [w for d in wheel_dirs for w in sorted(Path(d).glob("pip-*.whl"))]
    if host.pip_wheel:
        candidates.append(Path(host.pip_wheel))
    for wheel in candidates:
        if wheel.is_file():
            return [host.executable, str(wheel / "pip")]
    raise EngineError(f"The Python at {host.executable} has no pip and no pip wheel was found. Install pip for it "
                      f"(Debian/Ubuntu: sudo apt install python3-pip) or install from an offline bundle, "
                      f"which carries pip.")


def run_pip(argv: Sequence[str], on_line: LineFn, cancel: CancelFn | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, list[str]]:
    """Run pip, passing each output line to ``on_line``; returns (exit code, last lines).

    Output is read on a thread so a cancel is heard within a fraction of a second even while
    pip is silent (a large download prints nothing with the progress bar off).
    """
    run_env = dict(os.environ if env is None else env)
    run_env.update(PYTHONUNBUFFERED="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_ROOT_USER_ACTION="ignore")
    kwargs: dict = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace", bufsize=1, env=run_env,
                                cwd=str(cwd) if cwd else None, **kwargs)
    except OSError as exc:
        raise EngineError(f"Cannot start pip ({exc}).") from None
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tail: list[str] = []
    while True:
        if cancel is not None and cancel():
            _stop(proc)
            raise Cancelled("Installation cancelled; nothing was installed.")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        tail = (tail + [line])[-40:]
        on_line(line)
    return proc.wait(), tail


def _stop(proc: subprocess.Popen) -> None:
    """Stop pip and whatever it started (build backends), giving it a moment to clean up."""
    try:
        if sys.platform == "win32":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired, OSError):
        try:
            if sys.platform != "win32":
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
        except OSError:
            pass
        proc.wait()
