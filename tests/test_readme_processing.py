"""The README's Processing section, run verbatim: every command line of its bash blocks, as a user types them.

The user is simulated by a fresh home folder: ``$HOME/imagery/naip.tif`` is the shared NAIP raster, and
the model cache in ``$HOME/.cache`` already holds weights for ``MODEL=0`` (remoteclip-vit-b-32), as after a
first download. Those weights are a ViT-B-32 with random weights made here (the hub is unreachable from the
build machine), so the rankings mean nothing; what is checked is that the documented commands work. As the
README says for a virtualenv, its site-packages are on PYTHONPATH.
"""
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Processing toolbox and `qgis_process`"
NAIP = ROOT.parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20160816.tif"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
NAIP_TILES = 20  # 934 x 723 px at 224 px tiles

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process.bin is not installed (package qgis)"),
    pytest.mark.skipif(not NAIP.exists(), reason="shared test imagery not found at ../shared/data"),
]


def readme_section(title: str = SECTION) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end >= 0 else None]


def bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def user_env(home: Path) -> dict:
    """A shell of a user whose home is ``home``: no profile or cache chosen by the test run itself."""
    drop = ("QGIS_CUSTOM_CONFIG_PATH", "RSCLIP_CACHE_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
            "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    runtime = home / ".runtime"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(runtime), GDAL_PAM_ENABLED="NO",
               PYTHONPATH=sysconfig.get_paths()["purelib"])
    return env


@pytest.fixture(scope="module")
def vit_b_32_weights(tmp_path_factory) -> Path:
    """A state_dict of open_clip's ViT-B-32 with seeded random weights (fp16 to halve the file)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "RemoteCLIP-ViT-B-32.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return path


def test_the_readme_names_its_commands():
    blocks = bash_blocks(readme_section())
    commands = [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert any("MODEL=0" in c for c in commands) and any("CLASS_SET=2" in c for c in commands)
    assert any(c.startswith("export QGIS_CUSTOM_CONFIG_PATH=") for c in commands)


def test_every_command_of_the_processing_section_runs_verbatim(vit_b_32_weights, tmp_path):
    from engine import jobs
    from engine.classsets import load_class_set
    from engine.models import cached_weights_path, get_spec
    from osgeo import ogr

    home = tmp_path / "home"
    (home / "imagery").mkdir(parents=True)
    (home / "imagery" / "naip.tif").symlink_to(NAIP)
    # The cache as a verified download leaves it: the weights and their recorded SHA-256. The real file
    # cannot be downloaded here, so random weights stand in under the registry's pinned hash.
    spec = get_spec("remoteclip-vit-b-32")
    cached = cached_weights_path(spec, home / ".cache" / "rsclip_search" / "models")
    cached.parent.mkdir(parents=True)
    shutil.copyfile(vit_b_32_weights, cached)
    (cached.parent / (cached.name + ".sha256")).write_text(str(spec.sha256) + "\n")
    script = "\n".join(bash_blocks(readme_section()))
    out = subprocess.run(["bash", "-euxo", "pipefail", "-c", script], cwd=ROOT, env=user_env(home),
                         capture_output=True, text=True, timeout=840)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]

    link = home / "rsclip-qgis" / "profiles" / "default" / "python" / "plugins" / "rsclip_search"
    assert link.resolve() == ROOT
    data = home / "imagery"
    assert jobs.info(data / "idx").model_label == "remoteclip-vit-b-32", "MODEL=0 is the first model in the list"

    def features(name: str) -> list:
        ds = ogr.Open(str(data / name))
        assert ds is not None, f"{name} was not written"
        return [f.items() for f in ds.GetLayer(0)]

    assert len(features("tiles.gpkg")) == NAIP_TILES
    hits = features("runway.gpkg")
    assert len(hits) == NAIP_TILES and [h["rank"] for h in hits] == list(range(1, NAIP_TILES + 1))
    labels = features("landcover.gpkg")
    assert len(labels) == NAIP_TILES
    assert {f["label"] for f in labels} <= set(load_class_set("worldcover")), "CLASS_SET=2 is worldcover"


def test_plugins_enable_finds_the_plugin_where_the_readme_says(tmp_path):
    """Without the plugin in the profile's plugins folder qgis_process finds nothing; in the folder the README
    names for the default profile, it is found and enabled."""
    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home)
    enable = [QGIS_PROCESS, "plugins", "enable", "rsclip_search"]
    out = subprocess.run(enable, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "No matching plugins found" in out.stdout + out.stderr, out.stdout + out.stderr

    documented = re.search(r"`(~/\.local/share/QGIS/QGIS3/profiles/default/python/plugins/rsclip_search)`",
                           readme_section())
    assert documented, "the README names the default profile's plugins folder"
    folder = home / documented.group(1).removeprefix("~/")
    folder.parent.mkdir(parents=True)
    folder.symlink_to(ROOT, target_is_directory=True)
    out = subprocess.run(enable, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "* rsclip_search" in out.stdout, out.stdout + out.stderr
