"""Which package versions to install for a given QGIS Python: pinned sets known to coexist.

QGIS's GDAL and QGIS bindings are compiled against one NumPy; a wheel that needs a newer
NumPy would make pip upgrade it and break them (NumPy 1 → 2 most of all). So NumPy is held at
exactly the host's version, and the pins are chosen per NumPy range: for Debian 12's
NumPy 1.24 the newest faiss-cpu that accepts it is 1.8.0.post1 and Shapely 2.1.2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import EngineError
from .host import HostFacts

#: ``cpu``: the small CPU-only torch; ``cuda``: torch with NVIDIA's CUDA libraries (also runs on CPU).
VARIANTS = ("cpu", "cuda")
#: Import name → pip distribution name of what the engine needs (GDAL comes with QGIS itself).
IMPORTS = {"torch": "torch", "torchvision": "torchvision", "open_clip": "open_clip_torch", "faiss": "faiss-cpu",
           "shapely": "shapely"}


@dataclass(frozen=True)
class PinSet:
    """Versions tested together for hosts whose NumPy lies in ``[numpy_min, numpy_below)``."""

    label: str
    numpy_min: tuple[int, int]
    numpy_below: tuple[int, int]
    pins: dict[str, str]
    tested_on: str = ""


_TORCH = {"torch": "2.14.1", "torchvision": "0.29.1", "open_clip_torch": "3.3.0"}
#: Pure Python, only imported to search STAC catalogues (so not in ``IMPORTS``: the plugin works without them).
_STAC = {"pystac": "1.14.3", "pystac-client": "0.9.1"}
PIN_SETS = (
    PinSet("NumPy 1.22–1.24", (1, 22), (1, 25), {**_TORCH, "faiss-cpu": "1.8.0.post1", "shapely": "2.1.2", **_STAC},
           "Debian 12, QGIS 3.22, Python 3.11, NumPy 1.24.2"),
    PinSet("NumPy 1.25–1.26", (1, 25), (2, 0), {**_TORCH, "faiss-cpu": "1.15.1", "shapely": "2.2.0", **_STAC},
           "Python 3.11, NumPy 1.26.4 (this project's development environment)"),
    PinSet("NumPy 2", (2, 0), (3, 0), {**_TORCH, "faiss-cpu": "1.15.1", "shapely": "2.2.0", **_STAC},
           "Debian 13, QGIS 3.40, Python 3.13, NumPy 2.2.4 (make test-qgis340)"),
)
#: Only for ``index --dask`` (engine/distributed.py), optional: the development environment installs them for the
#: tests and cluster users with ``pip``; never part of a pin set, so the plugin's installer does not put them in QGIS.
CLUSTER_PINS = {"dask": "2026.8.0", "distributed": "2026.8.0"}
#: The set the development environment runs: ``requirements.txt`` is written from it by
#: ``tools/requirements.py`` (and a test checks that the two agree), so the pins live only here.
DEVELOPMENT_PIN_SET = PIN_SETS[1]


@dataclass(frozen=True)
class TorchSource:
    """Where a torch build comes from: an extra index and the local version label it uses there."""

    index: str | None
    local: str = ""
    about_mb: int = 0


#: (OS family, variant) → source. PyPI's Linux torch is the CUDA build; its Windows and macOS torch is CPU-only.
TORCH_SOURCES = {
    ("linux", "cpu"): TorchSource("https://download.pytorch.org/whl/cpu", "+cpu", 450),
    ("linux", "cuda"): TorchSource(None, "", 4200),
    ("win", "cpu"): TorchSource(None, "", 500),
    ("win", "cuda"): TorchSource("https://download.pytorch.org/whl/cu128", "+cu128", 3300),
    ("macosx", "cpu"): TorchSource(None, "", 350),
}


@dataclass(frozen=True)
class Requirements:
    """What pip is asked for: requirement lines, constraint lines, an extra index, and how big it is."""

    variant: str
    packages: list[str]
    constraints: list[str] = field(default_factory=list)
    extra_index_url: str | None = None
    about_mb: int = 0
    pin_set: str = ""
    tested_on: str = ""

    @property
    def held(self) -> dict[str, str]:
        """Distributions held at the host's version (pip must not replace them): name → version."""
        return dict(line.split("==", 1) for line in self.constraints)


def default_variant(host: HostFacts) -> str:
    """CUDA where an NVIDIA driver answers and a CUDA build exists for the OS, else CPU."""
    return "cuda" if host.nvidia and (host.os_family, "cuda") in TORCH_SOURCES else "cpu"


def _version_tuple(version: str) -> tuple[int, int]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    parts += [0] * (2 - len(parts))
    return parts[0], parts[1]


def pin_set_for(numpy_version: str | None) -> PinSet:
    """The pin set for a host NumPy (no NumPy at all: the NumPy 2 set, and pip brings NumPy)."""
    if numpy_version is None:
        return PIN_SETS[-1]
    have = _version_tuple(numpy_version)
    for pins in PIN_SETS:
        if pins.numpy_min <= have < pins.numpy_below:
            return pins
    raise EngineError(f"QGIS's Python has NumPy {numpy_version}, for which RS-CLIP Search knows no tested set of "
                      f"packages (it knows NumPy 1.22 to 2.x). Install torch, open_clip_torch, faiss-cpu and shapely "
                      f"by hand without upgrading NumPy.")


def requirements_for(host: HostFacts, variant: str = "auto") -> Requirements:
    """Pinned requirement lines for ``host``; ``variant`` is ``cpu``, ``cuda`` or ``auto``."""
    if variant == "auto":
        variant = default_variant(host)
    if variant not in VARIANTS:
        raise EngineError(f"Unknown torch build {variant!r}; choose one of {', '.join(VARIANTS)} or auto.")
    source = TORCH_SOURCES.get((host.os_family, variant))
    if source is None:
        raise EngineError(f"There is no {variant.upper()} build of torch for {host.platform}; choose "
                          f"{' or '.join(v for v in VARIANTS if (host.os_family, v) in TORCH_SOURCES)}.")
    pins = pin_set_for(host.numpy)
    packages = []
    for name, version in pins.pins.items():
        local = source.local if name in ("torch", "torchvision") else ""
        packages.append(f"{name}=={version}{local}")
    constraints = [f"numpy=={host.numpy}"] if host.numpy else []
    return Requirements(variant=variant, packages=packages, constraints=constraints,
                        extra_index_url=source.index, about_mb=source.about_mb, pin_set=pins.label,
                        tested_on=pins.tested_on)
