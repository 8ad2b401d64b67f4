"""Real faults for the adversary suite: a small tmpfs (full disk), a read-only bind mount, chattr +i,
SIGKILL, and the command line run as a user runs it. Every mount and flag is undone on exit."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root for a real tmpfs / read-only bind mount / chattr")


def run_cli(*args, env: dict | None = None, timeout: int = 600) -> tuple[int, str, str]:
    """``python -m engine ARGS`` in a subprocess: exit code, stdout, stderr."""
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, env=full_env)
    return out.returncode, out.stdout, out.stderr


#: ``python -m engine`` with Ctrl-C answered as in a terminal. A shell without job control starts background
#: commands with SIGINT ignored, and an ignored signal stays ignored across exec: a test run started that way
#: (``make test &``) would otherwise hand every command it starts an ignored SIGINT.
_ENGINE_AS_IN_A_TERMINAL = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                            "runpy.run_module('engine', run_name='__main__', alter_sys=True)")


def start_cli(*args, env: dict | None = None) -> subprocess.Popen:
    """``python -m engine ARGS`` started in the background (stderr piped), to be signalled or killed."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-c", _ENGINE_AS_IN_A_TERMINAL, *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env)


def one_error_line(code: int, err: str, *expected: str) -> str:
    """Assert a refusal as the user sees it: exit 2, no traceback, exactly one ``rsclip: error:`` line."""
    lines = [line for line in err.strip().splitlines() if line.startswith("rsclip: error:")]
    assert code == 2, (code, err)
    assert "Traceback" not in err and "terminate called" not in err, err
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def no_traceback(code: int, err: str) -> None:
    assert "Traceback" not in err and "terminate called" not in err and code in (0, 1, 2), (code, err)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _umount(path: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)  # a process that just exited may still hold the mount for a moment
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real, small file system at ``path`` (e.g. size="2m"): writes past it fail with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextmanager
def readonly_view(source: Path, mountpoint: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``mountpoint`` (bind mount remounted ro), as on read-only media."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(mountpoint))
    try:
        _mount("-o", "remount,bind,ro", str(mountpoint))
        yield mountpoint
    finally:
        _umount(mountpoint)


@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """``chattr +i``: not even root may change or replace the file; undone on exit."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``folder`` up to ``leave`` free bytes with one filler file."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free - leave
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 16)
        try:
            while free > 0:
                fh.write(chunk[: min(len(chunk), free)])
                free -= len(chunk)
            fh.flush()
        except OSError:
            pass
    return filler
