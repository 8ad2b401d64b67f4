"""The diagnostics report (`python -m engine deps diagnostics`, the dock's Diagnostics button) tells the truth.

What QGIS's embedded interpreter reports is checked in the real desktop by test_devrun.py.
"""
import socket
import sys

import pytest

from engine.cli import main
from engine.deps.diagnostics import engine_report
from engine.deps.host import running_python
from engine.errors import EngineError
from engine.models import cached_weights_path, get_spec
from engine.models.download import adopt_weights, ensure_weights, file_sha256


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty model cache and a hub that refuses connections (a closed port on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RSCLIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RSCLIP_HF_ENDPOINT", f"http://127.0.0.1:{port}")
    return tmp_path / "cache"


def model_cache_line(report: str) -> str:
    return next(line for line in report.splitlines() if line.startswith("Model cache:"))


def test_a_failed_offline_download_is_not_listed_as_a_model(offline, capsys):
    spec = get_spec("remoteclip-vit-b-32")
    with pytest.raises(EngineError, match="Cannot download remoteclip-vit-b-32"):
        ensure_weights(spec, timeout=5)
    folder = cached_weights_path(spec).parent
    assert folder.is_dir() and not any(folder.iterdir()), "the failed download left its empty folder behind"
    assert model_cache_line(engine_report()) == f"Model cache: {offline} (no models)"
    assert main(["deps", "diagnostics"]) == 0
    assert f"Model cache: {offline} (no models)" in capsys.readouterr().out


def test_the_model_cache_line_tells_verified_partial_and_unverified_weights_apart(offline, tmp_path):
    source = tmp_path / "weights.pt"
    source.write_bytes(b"not really weights, but verified bytes")
    adopt_weights(get_spec("openai-clip-vit-b-32"), source, file_sha256(source))  # no pinned hash to match
    partial = cached_weights_path(get_spec("georsclip-vit-b-32"))
    partial.parent.mkdir(parents=True)
    partial.with_name(partial.name + ".part").write_bytes(b"half")
    placed = cached_weights_path(get_spec("skyclip-vit-b-32"))
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"put here by hand, checked on first use")
    line = model_cache_line(engine_report())
    assert line == (f"Model cache: {offline} (georsclip-vit-b-32: partial download, "
                    "skyclip-vit-b-32: not verified yet, openai-clip-vit-b-32)")


def test_a_plain_interpreter_reports_itself():
    assert running_python() == (sys.executable, None)
    python_line = next(line for line in engine_report().splitlines() if line.startswith("Python:"))
    assert f"({sys.executable}) on " in python_line and "embedded" not in python_line
