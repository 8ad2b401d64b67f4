"""The dependency installer's engine side: pins, bundles and verification, pip into a private folder, cancel.

Installs run the real pip of QGIS's own Python (/usr/bin/python3) on small hand-made wheels;
the full torch install into a QGIS profile is in test_install_qgis.py.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from engine.deps import (activate, deps_dir, install, installed_record, plan_install, probe_host, requirements_for,
                         verify_bundle)
from engine.deps.host import HostFacts
from engine.deps.pins import PIN_SETS
from engine.errors import Cancelled, EngineError
from wheels import mini_bundle

QGIS_PYTHON = "/usr/bin/python3"
TORCH = PIN_SETS[0].pins["torch"]  # the same in every pin set; the tests check the plans, not the version
ROOT = Path(__file__).resolve().parents[1]

needs_qgis_python = pytest.mark.skipif(not Path(QGIS_PYTHON).exists(), reason="no /usr/bin/python3 (QGIS's Python)")


def host(numpy="1.24.2", platform="linux-x86_64", nvidia=None) -> HostFacts:
    return HostFacts(python="3.11.2", platform=platform, executable=QGIS_PYTHON, numpy=numpy, has_pip=True,
                     nvidia=nvidia)


@pytest.fixture(scope="module")
def qgis_host():
    if not Path(QGIS_PYTHON).exists():
        pytest.skip("no /usr/bin/python3 (QGIS's Python)")
    return probe_host(QGIS_PYTHON)


@pytest.mark.parametrize("numpy,faiss,held", [
    ("1.24.2", "faiss-cpu==1.8.0.post1", "numpy==1.24.2"),   # Debian 12 / QGIS 3.22
    ("1.26.4", "faiss-cpu==1.15.1", "numpy==1.26.4"),
    ("2.1.3", "faiss-cpu==1.15.1", "numpy==2.1.3"),           # never pushed back to NumPy 1
])
def test_pins_hold_qgis_numpy_at_its_version(numpy, faiss, held):
    req = requirements_for(host(numpy), "cuda")
    assert faiss in req.packages and f"torch=={TORCH}" in req.packages
    assert req.constraints == [held] and req.extra_index_url is None


def test_unknown_numpy_is_refused_with_advice():
    with pytest.raises(EngineError, match="NumPy 1.19.0"):
        requirements_for(host("1.19.0"), "cpu")


def test_torch_build_follows_the_nvidia_driver_and_the_os(monkeypatch):
    assert requirements_for(host(nvidia="550.54"), "auto").variant == "cuda"
    cpu = requirements_for(host(nvidia=None), "auto")
    assert cpu.variant == "cpu" and cpu.extra_index_url == "https://download.pytorch.org/whl/cpu"
    assert f"torch=={TORCH}+cpu" in cpu.packages
    assert f"torch=={TORCH}" in requirements_for(host(platform="macosx-11.0-arm64"), "cpu").packages
    with pytest.raises(EngineError, match="no CUDA build of torch for macosx"):
        requirements_for(host(platform="macosx-11.0-arm64"), "cuda")
    monkeypatch.setenv("RSCLIP_NVIDIA", "535.104")
    assert probe_host().nvidia == "535.104"


@pytest.mark.slow
@needs_qgis_python
def test_install_from_bundle_into_a_profile_with_qgis_python(qgis_host, tmp_path):
    bundle = mini_bundle(tmp_path / "bundle", qgis_host)
    plan = plan_install(qgis_host, tmp_path / "profile", bundle=bundle)
    assert "offline bundle" in plan.describe() and f"numpy {qgis_host.numpy}" in plan.describe().lower()
    lines, steps = [], []
    result = install(plan, on_line=lines.append, progress=lambda f, m: steps.append(f))
    target = deps_dir(tmp_path / "profile", qgis_host)
    assert result.target == target and target.name == f"cp311-{qgis_host.platform}"
    assert any(line.startswith("Successfully installed") for line in lines)
    assert steps[-1] == 1.0 and steps == sorted(steps)
    assert result.installed == {"rsclipdemo": "1.0"}, "the stand-in NumPy must be dropped: QGIS's own stays"
    assert not (target / "numpy").exists() and (target / "rsclipdemo" / "__init__.py").is_file()
    assert installed_record(target)["held"] == {"numpy": qgis_host.numpy}
    assert [p.name for p in target.parent.iterdir()] == [target.name], "no staging or work folders left behind"
    probe = ("import sys; from engine.deps import activate; a = activate(sys.argv[1]); import rsclipdemo, numpy; "
             "print(a.restart_needed, rsclipdemo.ANSWER, rsclipdemo.__file__.startswith(sys.argv[1]), "
             "hasattr(numpy, 'STAND_IN'))")
    out = subprocess.run([QGIS_PYTHON, "-c", probe, str(target)], cwd=ROOT, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.stdout.split() == ["False", "42", "True", "False"], out.stderr


@pytest.mark.slow
@needs_qgis_python
def test_zip_bundle_installs_and_replaces_the_previous_install(qgis_host, tmp_path):
    bundle = mini_bundle(tmp_path / "bundle", qgis_host)
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in bundle.rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(bundle).as_posix())
    target = deps_dir(tmp_path / "profile", qgis_host)
    target.mkdir(parents=True)
    (target / "old_package.py").write_text("")
    install(plan_install(qgis_host, tmp_path / "profile", bundle=archive))
    assert (target / "rsclipdemo").is_dir() and not (target / "old_package.py").exists()


@needs_qgis_python
def test_damaged_bundle_is_refused_naming_the_file(qgis_host, tmp_path):
    bundle = mini_bundle(tmp_path / "bundle", qgis_host)
    wheel = bundle / "wheels" / "rsclipdemo-1.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    plan = plan_install(qgis_host, tmp_path / "profile", bundle=bundle)
    with pytest.raises(EngineError, match=r"wheels/rsclipdemo-1\.0-py3-none-any\.whl is damaged"):
        install(plan)
    assert not deps_dir(tmp_path / "profile", qgis_host).exists()


def test_unlisted_missing_and_foreign_bundles_are_refused(tmp_path):
    h = host()
    bundle = mini_bundle(tmp_path / "bundle", h)
    extra = bundle / "wheels" / "evil-1.0-py3-none-any.whl"
    extra.write_bytes(b"not in the manifest")
    with pytest.raises(EngineError, match="wheels/evil-1.0-py3-none-any.whl is not listed"):
        verify_bundle(bundle, h)
    extra.unlink()
    (bundle / "wheels" / "rsclipdemo-1.0-py3-none-any.whl").unlink()
    with pytest.raises(EngineError, match="incomplete: wheels/rsclipdemo-1.0-py3-none-any.whl is missing"):
        verify_bundle(bundle, h)
    with pytest.raises(EngineError, match="built for numpy 1.24.2, but QGIS's Python has numpy 2.1.3"):
        verify_bundle(bundle, host("2.1.3"))
    with pytest.raises(EngineError, match="not an RS-CLIP Search bundle"):
        plan_install(h, tmp_path / "profile", bundle=tmp_path)


@pytest.mark.slow
@needs_qgis_python
def test_python_without_pip_installs_with_the_bundled_pip(tmp_path):
    if not list(Path("/usr/share/python-wheels").glob("pip-*.whl")):
        pytest.skip("no pip wheel in /usr/share/python-wheels to put in the bundle")
    subprocess.run([QGIS_PYTHON, "-m", "venv", "--without-pip", str(tmp_path / "nopip")], check=True)
    bare = probe_host(str(tmp_path / "nopip" / "bin" / "python"))
    assert not bare.has_pip and bare.numpy is None
    bundle = mini_bundle(tmp_path / "bundle", bare, with_pip=True)
    result = install(plan_install(bare, tmp_path / "profile", bundle=bundle))
    assert result.installed == {"rsclipdemo": "1.0"}


class BlackHole:
    """A server on 127.0.0.1 that accepts connections and never answers: pip waits, as on a dead proxy."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.mark.slow
@needs_qgis_python
def test_cancel_stops_pip_and_keeps_the_previous_install(qgis_host, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # only the index given here, not this machine's mirrors
    server = BlackHole()
    target = deps_dir(tmp_path / "profile", qgis_host)
    target.mkdir(parents=True)
    (target / "rsclip-install.json").write_text(json.dumps({"installed": {"torch": "2.0"}}))
    plan = plan_install(qgis_host, tmp_path / "profile", "cpu", index_url=f"http://127.0.0.1:{server.port}/simple")
    lines, started = [], time.monotonic()
    try:
        with pytest.raises(Cancelled):
            install(plan, on_line=lines.append, cancel=lambda: time.monotonic() - started > 3)
    finally:
        server.close()
    assert time.monotonic() - started < 20
    assert installed_record(target) == {"installed": {"torch": "2.0"}}
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


@pytest.mark.slow
@needs_qgis_python
def test_unreachable_index_fails_with_a_sentence(qgis_host, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = plan_install(qgis_host, tmp_path / "profile", "cpu", index_url=f"http://127.0.0.1:{port}/simple")
    with pytest.raises(EngineError, match="pip could not install the packages: .*offline or behind a proxy"):
        install(plan)
    assert not deps_dir(tmp_path / "profile", qgis_host).exists()


def test_activation_is_a_no_op_without_an_install(tmp_path):
    before = list(sys.path)
    assert not activate(tmp_path / "nothing").active and sys.path == before


@pytest.mark.slow
@needs_qgis_python
def test_cli_check_shows_the_plan_for_qgis_python(qgis_host, tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine", "deps", "check", "--python", QGIS_PYTHON, "--variant",
                          "cpu", "--profile", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"Kept as QGIS has it: numpy {qgis_host.numpy}" in out.stdout and f"torch=={TORCH}+cpu" in out.stdout
    assert f"Into: {tmp_path}/rsclip_search/python/cp311-" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "engine", "deps", "install", "--python", QGIS_PYTHON, "--profile",
                          str(tmp_path), "--bundle", str(tmp_path / "missing.zip"), "--yes"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "No bundle at" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@needs_qgis_python
def test_model_weights_in_a_bundle_land_verified_in_the_cache(qgis_host, tmp_path, monkeypatch):
    """Bytes, not a model: what matters is that the file arrives checked and is then trusted as cached."""
    from engine.deps import assemble_bundle
    from engine.models import REGISTRY, is_cached
    from wheels import make_wheel

    weights = tmp_path / "RS5M_ViT-B-32.pt"  # a model without a pinned hash: random bytes may stand in for it
    weights.write_bytes(os.urandom(4096))
    wheel = make_wheel(tmp_path / "src", "rsclipdemo", "1.0", {"rsclipdemo/__init__.py": "ANSWER = 42\n"})
    target = {"python": qgis_host.python_minor, "platform": qgis_host.platform, "numpy": qgis_host.numpy}
    bundle = tmp_path / "bundle"
    assemble_bundle(bundle, [wheel], target, "cpu", ["rsclipdemo==1.0"], [],
                    models=[("georsclip-vit-b-32", weights)])
    notice = (bundle / "models" / "georsclip-vit-b-32" / "LICENCE.txt").read_text()
    assert "CC-BY-4.0" in notice and "Zhang, Z." in notice, "the licence notice travels with the weights"
    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path / "cache"))
    plan = plan_install(qgis_host, tmp_path / "profile", bundle=bundle)
    assert "Model weights: georsclip-vit-b-32" in plan.describe()
    result = install(plan)
    cached = tmp_path / "cache" / "georsclip-vit-b-32" / "RS5M_ViT-B-32.pt"
    assert result.models == ["georsclip-vit-b-32"] and cached.read_bytes() == weights.read_bytes()
    assert is_cached(REGISTRY["georsclip-vit-b-32"])
