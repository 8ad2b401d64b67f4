"""`make screenshot`: the real QGIS desktop under Xvfb with the dock showing results over NAIP.

The index is built with the tests' tiny random-weight model (the real weights cannot be
downloaded here), so the ranking in the picture is meaningless; the picture shows the UI.
"""
from __future__ import annotations

import argparse
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared" / "data" / "naip" / "naip_m_4709963_se_14_20160816.tif"
NAIP_2009 = NAIP.with_name("naip_m_4709963_se_14_20090818.tif")
SCENES = {"search": "screenshot_in_qgis.py", "concepts": "screenshot_concepts_in_qgis.py",
          "change": "screenshot_beyond_in_qgis.py", "scales": "screenshot_beyond_in_qgis.py",
          "heatmap": "screenshot_beyond_in_qgis.py"}
#: The scenes of change, scales and heat maps use the tests' planted model, for which every text means this colour:
#: the dark water of the NAIP ponds (sampled from the 2016 image).
POND_RGB = (45, 47, 52)
#: For the scales scene: the 2016 image's mean colour, which mixed tiles (water and fields) match better than
#: any small tile of one cover, so larger tiles win some places.
MIXED_RGB = (91, 107, 84)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/screenshot.png")
    parser.add_argument("--query", default="farm fields")
    parser.add_argument("--scene", choices=tuple(SCENES), default="search",
                        help="search: the Search tab; concepts: the find-every-X loop with areas on the map; "
                        "change, scales, heatmap: change between the 2009 and 2016 NAIP dates, a search across "
                        "scales, a heat map (with the tests' planted colour model)")
    parser.add_argument("--profile", help="a QGIS profile root (QGIS_CUSTOM_CONFIG_PATH) in which the plugin and its "
                                          "packages are already installed, as a user has them; default: a new one "
                                          "with this checkout as the plugin")
    args = parser.parse_args(argv)
    if not NAIP.exists():
        print(f"The NAIP raster is needed for the screenshot and was not found at {NAIP}.", file=sys.stderr)
        return 2
    out = (ROOT / args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rsclip-shot-"))
    try:
        return _shoot(args, out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the index, model and profile: ~15 MB a run


def _shoot(args: argparse.Namespace, out: Path, work: Path) -> int:
    """Build the index in ``work``, start QGIS on the scene and wait for it to write ``out``."""
    sys.path.insert(0, str(ROOT / "tests"))
    index = work / "index"
    if args.scene in ("change", "scales", "heatmap"):
        from planted_clip import make_planted_clip

        model = make_planted_clip(work / "model", text_rgb=MIXED_RGB if args.scene == "scales" else POND_RGB,
                                  image_size=56)
        subprocess.run([sys.executable, "-m", "engine", "index", str(NAIP_2009), str(NAIP), "--index", str(index),
                        "--arch", str(model.config), "--checkpoint", str(model.checkpoint), "--tile-size", "112",
                        "--scales", "1,2,4"], cwd=ROOT, check=True)
    else:
        from tinymodel import make_tiny_model

        model = make_tiny_model(work / "model")
        subprocess.run([sys.executable, "-m", "engine", "index", str(NAIP), "--index", str(index), "--arch",
                        str(model.config), "--checkpoint", str(model.checkpoint), "--tile-size", "112"],
                       cwd=ROOT, check=True)
    profile = Path(args.profile).resolve() if args.profile else work / "profile"
    if not args.profile:
        plugins = profile / "profiles" / "default" / "python" / "plugins"
        plugins.mkdir(parents=True)
        (plugins / "rsclip_search").symlink_to(ROOT, target_is_directory=True)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(profile), PYTHONPATH=os.pathsep.join(site.getsitepackages()),
               RSCLIP_SHOT_RASTER=str(NAIP), RSCLIP_SHOT_INDEX=str(index), RSCLIP_SHOT_OUT=str(out),
               RSCLIP_SHOT_QUERY=args.query, RSCLIP_SHOT_WORK=str(work), RSCLIP_SHOT_SCENE=args.scene,
               RSCLIP_SHOT_BEFORE=str(NAIP_2009))
    env.pop("QT_QPA_PLATFORM", None)
    if args.profile:  # QGIS finds the packages as a user's does: the plugin activates its private folder
        env.pop("PYTHONPATH")
    subprocess.run(["/usr/bin/qgis_process.bin", "plugins", "enable", "rsclip_search"], env=dict(
        env, QT_QPA_PLATFORM="offscreen"), check=True, capture_output=True)
    if out.exists():
        out.unlink()
    subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", "qgis", "--nologo", "--noversioncheck",
                    "--code", str(ROOT / "tools" / SCENES[args.scene])], env=env, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=open(work / "qgis.log", "w"))
    if not out.exists():
        tail = (work / "qgis.log").read_text(errors="replace").splitlines()[-40:]
        print("QGIS did not write the screenshot. The end of its log:", *tail, sep="\n", file=sys.stderr)
        return 1
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
