"""The algorithms from the shell through qgis_process, with the plugin enabled in a fresh profile."""
import os
import shutil
import site
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20160816.tif"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"

pytestmark = [
    pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process.bin is not installed (Debian package qgis)"),
    pytest.mark.skipif(not NAIP.exists(), reason="shared test imagery not found"),
]


@pytest.fixture
def profile_env(tmp_path):
    """A QGIS profile with the plugin installed (symlinked) and enabled, and the venv's packages visible."""
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "rsclip_search").symlink_to(ROOT, target_is_directory=True)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(profile), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join(site.getsitepackages()))
    out = subprocess.run([QGIS_PROCESS, "plugins", "enable", "rsclip_search"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return env


def qgis_process(env, *args):
    out = subprocess.run([QGIS_PROCESS, "run", *args], env=env, capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout + out.stderr


def test_build_and_search_from_the_shell(profile_env, tiny_model, tmp_path):
    from osgeo import ogr

    from engine.models import REGISTRY

    index, footprints, results = tmp_path / "idx", tmp_path / "tiles.gpkg", tmp_path / "runway.gpkg"
    code, log = qgis_process(profile_env, "rsclip_search:build_index", "--", f"INPUT={NAIP}", f"INDEX={index}",
                             f"MODEL={len(REGISTRY)}", f"ARCH={tiny_model.config}", f"CHECKPOINT={tiny_model.checkpoint}",
                             "TILE_SIZE=224", f"OUTPUT={footprints}")
    assert code == 0, log
    code, log = qgis_process(profile_env, "rsclip_search:search_text", "--", f"INDEX={index}",
                             "QUERY=airport runway", "TOP_K=5", f"OUTPUT={results}")
    assert code == 0, log
    for path, count, fields in ((footprints, 20, ["raster", "tile_id"]),
                                (results, 5, ["rank", "score", "raster", "tile_id"])):
        ds = ogr.Open(str(path))
        assert ds is not None, f"{path} is not a valid GeoPackage"
        layer = ds.GetLayer(0)
        assert layer.GetFeatureCount() == count
        defn = layer.GetLayerDefn()
        names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        assert names == fields
        assert layer.GetSpatialRef().GetAuthorityCode(None) == "26914"
        ds = None


def test_invalid_parameters_fail_readably(profile_env, tmp_path):
    code, log = qgis_process(profile_env, "rsclip_search:search_text", "--", f"INDEX={tmp_path / 'none'}",
                             "QUERY=water", f"OUTPUT={tmp_path / 'x.gpkg'}")
    assert code != 0 and "No RS-CLIP Search index" in log and "Traceback" not in log
