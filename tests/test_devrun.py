"""`make run` (tools/devrun.py): the dev profile, the demo project, and the real QGIS desktop opening both.

The desktop runs under Xvfb with a `--code` script that reports what QGIS loaded and the plugin's
diagnostics, then quits. A stand-in ``python3`` comes first on PATH (as a pyenv shim or an activated
virtualenv would): inside QGIS that is what ``sys.executable`` says, and the diagnostics must name the
interpreter QGIS really embeds instead.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEVRUN = ROOT / "tools" / "devrun.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("qgis"), reason="the QGIS desktop is not installed (package qgis)"),
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test imagery not found at {DATA}"),
]

REPORT_SCRIPT = """
import json, os
from qgis.core import QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins


def report():
    project = QgsProject.instance()
    plugin = plugins.get("rsclip_search")
    out = {"project": project.fileName(), "layers": len(project.mapLayers()),
           "visible": [layer.name() for layer in iface.mapCanvas().layers()],
           "plugin": plugin is not None and plugin.controller is not None,
           "diagnostics": plugin.controller.diagnostics() if plugin else ""}
    with open(os.environ["RSCLIP_REPORT"], "w") as fh:
        json.dump(out, fh)
    QApplication.instance().exit(0)


QTimer.singleShot(3000, report)
"""


def test_prepare_makes_the_profile_and_the_demo_project(tmp_path):
    from qgis.core import QgsProject

    root = tmp_path / "dev"
    out = subprocess.run([sys.executable, str(DEVRUN), "--root", str(root), "--prepare-only"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rasters = sorted(DATA.rglob("*.tif"))
    assert f"{len(rasters)} rasters from {DATA}" in out.stdout
    link = root / "profiles" / "default" / "python" / "plugins" / "rsclip_search"
    assert link.is_symlink() and link.resolve() == ROOT
    assert "rsclip_search=true" in (root / "profiles" / "default" / "QGIS" / "QGIS3.ini").read_text()

    project = QgsProject()
    assert project.read(str(root / "demo.qgs"))
    layers = list(project.mapLayers().values())
    assert len(layers) == len(rasters) and all(layer.isValid() for layer in layers)
    assert sorted(Path(layer.source()) for layer in layers) == rasters
    shown = [node.layer().name() for node in project.layerTreeRoot().findLayers() if node.isVisible()]
    newest = {folder: max(r.stem for r in rasters if r.parent.name == folder) for folder in {r.parent.name
                                                                                           for r in rasters}}
    assert sorted(shown) == sorted(newest.values()), "one raster shown per folder: the newest"
    top = project.layerTreeRoot().children()[0]
    assert top.name() == "naip" and project.crs().authid() == "EPSG:26914", "the largest group leads"
    assert project.transformContext().coordinateOperations(), "datum choices are made, so QGIS does not ask"

    again = subprocess.run([sys.executable, str(DEVRUN), "--root", str(root), "--prepare-only"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and link.resolve() == ROOT, again.stderr
    ignored = subprocess.run(["git", "check-ignore", "-q", ".qgis-dev/profiles"], cwd=ROOT)
    assert ignored.returncode == 0, "the default dev profile .qgis-dev/ is git-ignored"


@pytest.mark.skipif(not shutil.which("xvfb-run"), reason="xvfb-run is not installed (package xvfb)")
def test_qgis_opens_the_demo_with_the_plugin_and_names_its_real_python(tmp_path):
    root = tmp_path / "dev"
    script = tmp_path / "report.py"
    script.write_text(REPORT_SCRIPT)
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3").write_text("#!/bin/sh\necho 'a stand-in python3 (pyenv shim)' >&2\nexit 1\n")
    (shims / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", RSCLIP_REPORT=str(tmp_path / "r.json"))
    out = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, str(DEVRUN), "--root",
                          str(root), "--", "--code", str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert (tmp_path / "r.json").exists(), out.stdout[-2000:] + out.stderr[-3000:]
    seen = json.loads((tmp_path / "r.json").read_text())
    assert seen["project"] == str(root / "demo.qgs") and seen["layers"] == len(list(DATA.rglob("*.tif")))
    assert seen["plugin"], "rsclip_search is loaded from the dev profile"
    assert "naip_m_4709963_se_14_20160816" in seen["visible"]

    report = seen["diagnostics"]
    embedded = Path(sys.base_exec_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"({embedded}, embedded in " in report and "qgis" in report.split("embedded in ", 1)[1].split(")")[0]
    assert str(shims) not in report, report
    assert f"QGIS profile: {root / 'profiles' / 'default'}" in report
