"""A plain failure, before any work, when a test's scratch disk cannot hold what the test will write.

A few tests write gigabytes (real-size checkpoints, the installer's wheel bundle). On a full disk they
used to fail deep inside pip or a download with "No space left on device"; this says how much is
needed and where, so the fix (free space, or point TMPDIR elsewhere) is obvious.
"""
import shutil
from pathlib import Path

import pytest

GB = 1_000_000_000


def require_free(folder: Path, need: int, what: str) -> None:
    """Fail now unless ``folder``'s file system has ``need`` bytes free for ``what``."""
    free = shutil.disk_usage(folder).free
    if free < need:
        pytest.fail(f"{what} needs {need / GB:.0f} GB free in {folder}, which has {free / GB:.1f} GB; free space "
                    "there (or set TMPDIR to a larger disk) and run it again.", pytrace=False)
