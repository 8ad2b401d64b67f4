"""Facts about the Python that runs this file: standard library only, because it also runs as a script.

``host.probe_host`` passes this file's text to another interpreter (``python -c``), and
``host.current_host`` imports it; so both read the facts the same way.
"""
import importlib.util
import json
import platform
import sys
import sysconfig
from importlib import metadata


def _version(dist: str):
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 (a broken distribution counts as absent)
        return None


def _gdal_version():
    try:
        from osgeo import gdal
    except Exception:  # noqa: BLE001
        return None
    return gdal.__version__


def _pip_wheel():
    """A pip wheel to run pip from when the Python has none: ensurepip's, or Debian's python3-pip-whl."""
    import glob
    import os

    found = []
    try:
        import ensurepip

        found += sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))
    except Exception:  # noqa: BLE001
        pass
    found += sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
    return found[-1] if found else None


def python_facts(full: bool = True) -> dict:
    """Version, platform, NumPy and pip of this Python; ``full`` adds GDAL and a pip wheel (slower)."""
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "numpy": _version("numpy"),
        "gdal": _gdal_version() if full else None,
        "has_pip": importlib.util.find_spec("pip") is not None,
        "pip_wheel": _pip_wheel() if full else None,
    }


if __name__ == "__main__":
    print(json.dumps(python_facts()))
