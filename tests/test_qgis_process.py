"""The algorithms from the shell through qgis_process, with the plugin enabled in a fresh QGIS profile.

qgis_process runs QGIS's own Python (/usr/bin/python3), which lacks torch, open_clip and faiss;
as the README tells users, PYTHONPATH points it at the virtualenv that has them.
"""
import importlib.util
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20160816.tif"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
#: Where this run's torch, open_clip and faiss live: the virtualenv here; in the Debian 13 root of
#: make test-qgis340, the private folder the plugin's installer filled (on this run's PYTHONPATH).
_TORCH = importlib.util.find_spec("torch")
VENV_PACKAGES = str(Path(_TORCH.origin).parents[1]) if _TORCH else sysconfig.get_paths()["purelib"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(QGIS_PROCESS).exists(),
                       reason="qgis_process.bin is not installed (Debian package qgis)"),
    pytest.mark.skipif(not NAIP.exists(), reason="shared test imagery not found at ../shared/data"),
]


@pytest.fixture(scope="module")
def profile_env(tmp_path_factory):
    """A QGIS profile with the plugin installed (symlinked) and enabled, and the venv's packages visible."""
    profile = tmp_path_factory.mktemp("qgis-profile")
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "rsclip_search").symlink_to(ROOT, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(QGIS_CUSTOM_CONFIG_PATH=str(profile), QT_QPA_PLATFORM="offscreen", PYTHONPATH=VENV_PACKAGES)
    env.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg")))
    out = subprocess.run([QGIS_PROCESS, "plugins", "enable", "rsclip_search"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "* rsclip_search" in out.stdout, out.stdout + out.stderr
    return env


def qgis_process(env, *args):
    out = subprocess.run([QGIS_PROCESS, "run", *args], env=env, capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout + out.stderr


def read_gpkg(path: Path):
    """(feature count, field names, EPSG code, tile ids) of a GeoPackage's only layer."""
    from osgeo import ogr

    ds = ogr.Open(str(path))
    assert ds is not None, f"{path} is not a valid GeoPackage"
    layer = ds.GetLayer(0)
    defn = layer.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    ids = [f.GetField("tile_id") for f in layer]
    return layer.GetFeatureCount(), names, layer.GetSpatialRef().GetAuthorityCode(None), ids


def test_qgis_process_uses_the_venv_numpy(profile_env, tmp_path):
    """PYTHONPATH must win over QGIS's Python: one numpy, this run's, for GDAL, torch and faiss alike."""
    import numpy

    script = tmp_path / "which_numpy.py"
    script.write_text("import numpy, sys\nsys.stdout.write(numpy.__version__ + ' ' + numpy.__file__)\n")
    out = subprocess.run(["/usr/bin/python3", str(script)], env=profile_env, capture_output=True, text=True)
    version, path = out.stdout.split(" ", 1)
    assert version == numpy.__version__ and path == numpy.__file__


def test_build_search_label_and_similar_from_the_shell(profile_env, tiny_model, tmp_path):
    index = tmp_path / "idx"
    footprints, results, labels, similar = (tmp_path / f"{n}.gpkg" for n in ("tiles", "runway", "labels", "similar"))
    code, log = qgis_process(profile_env, "rsclip_search:build_index", "--", f"INPUT={NAIP}", f"INDEX={index}",
                             "MODEL=custom", f"ARCH={tiny_model.config}", f"CHECKPOINT={tiny_model.checkpoint}",
                             "TILE_SIZE=224", "TILE_UNITS=pixels", f"OUTPUT={footprints}")
    assert code == 0, log
    assert f"INDEX:\t{index}" in log and "20 new tiles" in log
    code, log = qgis_process(profile_env, "rsclip_search:search_text", "--", f"INDEX={index}",
                             "QUERY=airport runway", "TOP_K=5", f"OUTPUT={results}")
    assert code == 0, log
    code, log = qgis_process(profile_env, "rsclip_search:label_tiles", "--", f"INDEX={index}",
                             "CLASS_SET=eurosat", f"OUTPUT={labels}")
    assert code == 0, log
    code, log = qgis_process(profile_env, "rsclip_search:similar_tiles", "--", f"INDEX={index}",
                             f"TILES={results}", "TOP_K=3", f"OUTPUT={similar}")
    assert code == 0, log

    count, fields, epsg, tile_ids = read_gpkg(footprints)
    assert (count, fields, epsg) == (20, ["raster", "tile_id", "model"], "26914") and len(set(tile_ids)) == 20
    count, fields, epsg, hit_ids = read_gpkg(results)
    assert (count, fields, epsg) == (5, ["rank", "score", "raster", "tile_id", "query", "model"], "26914")
    count, fields, epsg, _ = read_gpkg(labels)
    assert (count, epsg) == (20, "26914")
    assert fields == ["label", "probability", "margin", "raster", "tile_id", "classes", "model"]
    count, fields, epsg, similar_ids = read_gpkg(similar)
    assert (count, epsg) == (3, "26914") and not set(similar_ids) & set(hit_ids)


@pytest.mark.parametrize("alg,args,message", [
    ("search_text", ["INDEX={tmp}/none", "QUERY=water"], "No RS-CLIP Search index at"),
    ("label_tiles", ["INDEX={tmp}", "CLASS_SET=crops"], "CLASS_SET must be one of"),
    ("search_text", ["INDEX={tmp}", "QUERY=water", "EXTENT=0,1,0,1"], "Give the CRS of EXTENT"),
])
def test_invalid_parameters_fail_readably(profile_env, tmp_path, alg, args, message):
    (tmp_path / "index.sqlite").write_bytes(b"")  # looks like an index to the cheap check
    code, log = qgis_process(profile_env, f"rsclip_search:{alg}", "--",
                             *(a.format(tmp=tmp_path) for a in args), f"OUTPUT={tmp_path / 'x.gpkg'}")
    assert code != 0 and message in log and "Traceback" not in log, log


def test_missing_packages_are_named_with_the_install_command(profile_env, tmp_path):
    env = {k: v for k, v in profile_env.items() if k != "PYTHONPATH"}
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch, open_clip, faiss"], env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("QGIS's own Python already has torch, open_clip and faiss")
    (tmp_path / "index.sqlite").write_bytes(b"")  # passes the parameter check; the packages are checked next
    code, log = qgis_process(env, "rsclip_search:search_text", "--", f"INDEX={tmp_path}", "QUERY=water",
                             f"OUTPUT={tmp_path / 'x.gpkg'}")
    assert code != 0 and "RS-CLIP Search needs these Python packages" in log and "deps install" in log, log
    assert "Traceback" not in log
