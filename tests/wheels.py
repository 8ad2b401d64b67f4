"""Hand-made wheels and bundles for installer tests: small, offline, and installed by a real pip."""
from __future__ import annotations

import base64
import hashlib
import shutil
import zipfile
from pathlib import Path

from engine.deps import HostFacts, assemble_bundle


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel with a valid RECORD, as pip expects."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    entries[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: rsclip-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in entries.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in entries.items():
            zf.writestr(path, text)
    return wheel


def mini_bundle(out: Path, host: HostFacts, with_pip: bool = False) -> Path:
    """A bundle whose one requirement, ``rsclipdemo``, needs NumPy (a stand-in at the host's version rides along)."""
    src = out.with_name(out.name + "-wheels")
    wheels = [make_wheel(src, "rsclipdemo", "1.0", {"rsclipdemo/__init__.py": "ANSWER = 42\n"},
                         requires=("numpy",) if host.numpy else ())]
    if host.numpy:
        wheels.append(make_wheel(src, "numpy", host.numpy, {"numpy/__init__.py": "STAND_IN = True\n"}))
    if with_pip:
        found = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
        wheels.append(Path(shutil.copy(found[-1], src)))
    target = {"python": host.python_minor, "platform": host.platform, "numpy": host.numpy,
              "implementation": host.implementation}
    constraints = [f"numpy=={host.numpy}"] if host.numpy else []
    assemble_bundle(out, wheels, target, "cpu", ["rsclipdemo==1.0"], constraints)
    return out
