"""The engine must never pull in QGIS or Qt, and must import cheaply (no torch at import)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_imports_no_qgis_qt_or_torch():
    code = (
        "import sys, importlib, pkgutil, engine, engine.models\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    if m.name not in ('engine.__main__',):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6', 'sip'))\n"
        "heavy = sorted(k for k in ('torch', 'open_clip', 'faiss', 'dask', 'distributed') if k in sys.modules)\n"
        "print(bad, heavy)\n"
        "assert not bad, bad\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout


def test_engine_uses_relative_imports_only():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            if s.startswith(("from engine", "import engine")):
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert not offenders, offenders
