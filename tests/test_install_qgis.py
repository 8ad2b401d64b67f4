"""The installer end to end, as a user without torch meets it (issue: install into a user's own QGIS).

QGIS's own Python here is /usr/bin/python3 (Debian's QGIS), which has no torch. A bundle is
built for it with ``engine deps bundle``; a damaged copy is refused naming the wheel; the real
bundle is installed by the plugin's own code, run by that Python, into a temporary profile;
then a fresh headless QGIS (qgis_process) with that profile and no PYTHONPATH indexes a real
raster with the tiny test model. The bundle (~3 GB) comes from the package registry.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from diskspace import GB, require_free
from engine.deps import probe_host
from engine.deps.pins import pin_set_for

ROOT = Path(__file__).resolve().parents[1]
QGIS_PYTHON = "/usr/bin/python3"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
NAIP = ROOT.parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20160816.tif"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
#: A pip run may fetch ~3 GB (the bundle) or unpack it (the install); QGIS starts and indexes in minutes.
PIP_TIMEOUT_S = 1800
QGIS_TIMEOUT_S = 600
#: pytest-timeout counts setup too: the first test waits for the bundle and one install, the second for one
#: install and three QGIS runs. The subprocess limits must fire first, naming the command that hung.
TEST_TIMEOUT_S = 2 * PIP_TIMEOUT_S + 3 * QGIS_TIMEOUT_S

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(TEST_TIMEOUT_S),
    pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process.bin is not installed (package qgis)"),
    pytest.mark.skipif(not NAIP.exists(), reason="shared test imagery not found at ../shared/data"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder removed afterwards: the bundle and the install take ~9 GB."""
    probe = subprocess.run([QGIS_PYTHON, "-c", "import torch"], env=CLEAN_ENV, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("QGIS's own Python already has torch; the installer test needs one without")
    folder = tmp_path_factory.mktemp("installer")
    require_free(folder, 10 * GB, "The installer test (its bundle and one install)")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def bundle(work):
    out = subprocess.run([sys.executable, "-m", "engine", "deps", "bundle", "--python", QGIS_PYTHON,
                          "--variant", "cuda", "--out", str(work / "bundle")], cwd=ROOT, capture_output=True,
                         text=True, timeout=PIP_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-3000:]
    return work / "bundle"


@pytest.fixture(scope="module")
def profile(work):
    """A QGIS profile root (QGIS_CUSTOM_CONFIG_PATH) with the plugin installed from its release zip."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import package
    finally:
        sys.path.pop(0)
    plugins = work / "qgis" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(package.build(work / "dist")) as zf:
        zf.extractall(plugins)
    return work / "qgis"


def installer(profile: Path, bundle: Path) -> subprocess.CompletedProcess:
    """The plugin's installer, non-interactive, run by QGIS's own Python from the installed plugin."""
    return subprocess.run([QGIS_PYTHON, "-m", "rsclip_search.engine", "deps", "install", "--profile",
                           str(profile / "profiles" / "default"), "--bundle", str(bundle), "--yes"],
                          cwd=profile / "profiles" / "default" / "python" / "plugins", env=CLEAN_ENV,
                          capture_output=True, text=True, timeout=PIP_TIMEOUT_S)


def test_a_damaged_wheel_is_refused_by_name(bundle, profile, work):
    copy = work / "damaged"
    for f in bundle.rglob("*"):
        if f.is_file():
            (copy / f.relative_to(bundle)).parent.mkdir(parents=True, exist_ok=True)
            os.link(f, copy / f.relative_to(bundle))
    victim = sorted((copy / "wheels").glob("shapely-*.whl"))[0]
    data = bytearray(victim.read_bytes())
    victim.unlink()  # break the hard link before changing a byte
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    out = installer(profile, copy)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"The bundle file wheels/{victim.name} is damaged" in out.stderr and "Traceback" not in out.stderr
    folders = profile / "profiles" / "default" / "rsclip_search" / "python"
    assert not list(folders.iterdir()), "nothing installed and no staging left behind"
    shutil.rmtree(copy)


def test_install_then_a_fresh_qgis_indexes_with_the_installed_packages(bundle, profile, tiny_model, tmp_path):
    out = installer(profile, bundle)
    assert out.returncode == 0, out.stderr[-3000:]
    numpy = probe_host(QGIS_PYTHON).numpy
    assert f"Kept as QGIS has it: numpy {numpy}" in out.stdout and "Successfully installed" in out.stderr
    private = next((profile / "profiles" / "default" / "rsclip_search" / "python").iterdir())

    env = dict(CLEAN_ENV, QGIS_CUSTOM_CONFIG_PATH=str(profile), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(tmp_path))
    enable = subprocess.run([QGIS_PROCESS, "plugins", "enable", "rsclip_search"], env=env, capture_output=True,
                            text=True, timeout=QGIS_TIMEOUT_S)
    assert enable.returncode == 0 and "* rsclip_search" in enable.stdout, enable.stdout + enable.stderr
    run = subprocess.run([QGIS_PROCESS, "run", "rsclip_search:build_index", "--", f"INPUT={NAIP}",
                          f"INDEX={tmp_path / 'idx'}", "MODEL=custom", f"ARCH={tiny_model.config}",
                          f"CHECKPOINT={tiny_model.checkpoint}", "TILE_SIZE=224", "TILE_UNITS=pixels",
                          f"OUTPUT={tmp_path / 'tiles.gpkg'}"], env=env, capture_output=True, text=True,
                         timeout=QGIS_TIMEOUT_S)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "20 new tiles" in log, log[-3000:]

    report = subprocess.run([QGIS_PYTHON, "-m", "rsclip_search.engine", "deps", "diagnostics", "--profile",
                             str(profile / "profiles" / "default")],
                            cwd=profile / "profiles" / "default" / "python" / "plugins", env=CLEAN_ENV,
                            capture_output=True, text=True, timeout=QGIS_TIMEOUT_S).stdout
    pinned = pin_set_for(numpy).pins["torch"]
    assert f"torch: {pinned}" in report and f"({private}/torch)" in report, report
    assert f"NumPy: {numpy} (/usr/lib/python3/dist-packages/numpy)" in report, report
