"""`make run`: the QGIS desktop with the plugin from this working tree, in a dev profile inside the checkout.

The profile root is ``.qgis-dev/`` (git-ignored; ``QGIS_CUSTOM_CONFIG_PATH`` points QGIS at it), so
your own QGIS profile is never touched. Its plugins folder links ``rsclip_search`` to this checkout and
the plugin is enabled there; the engine's packages come from the virtualenv (``PYTHONPATH``), as in the
tests. ``.qgis-dev/demo.qgs`` loads the rasters of ``../shared/data`` (one group per folder, the newest of
each shown) when that folder exists, else QGIS opens an empty project. Run it again at any time: the
profile keeps your settings, the link and the demo project are refreshed.

    python tools/devrun.py                  # prepare, then start QGIS
    python tools/devrun.py --prepare-only   # prepare and print the command instead
    python tools/devrun.py -- --code x.py   # arguments after -- go to qgis
"""
from __future__ import annotations

import argparse
import os
import shlex
import site
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "rsclip_search"
DEV_ROOT = ROOT / ".qgis-dev"
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_NAME = "demo.qgs"
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def profile_dir(root: Path) -> Path:
    return root / "profiles" / "default"


def prepare_profile(root: Path) -> Path:
    """The dev profile with ``rsclip_search`` linked to this checkout and enabled; returns the profile folder."""
    profile = profile_dir(root)
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / PLUGIN_NAME
    if link.is_symlink() and link.resolve() != ROOT:
        link.unlink()  # a dev profile copied from another checkout
    if not link.is_symlink():
        if link.exists():
            raise SystemExit(f"{link} exists and is not a link to this checkout; remove it and run again.")
        link.symlink_to(ROOT, target_is_directory=True)
    from qgis.PyQt.QtCore import QSettings

    settings = QSettings(str(profile / "QGIS" / "QGIS3.ini"), QSettings.Format.IniFormat)
    settings.setValue(f"PythonPlugins/{PLUGIN_NAME}", True)
    settings.sync()
    return profile


def demo_rasters(data: Path) -> list[Path]:
    """The rasters under ``data``, sorted by folder and name (dates in the names sort in time)."""
    if not data.is_dir():
        return []
    return sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def write_demo_project(path: Path, rasters: list[Path], scratch: Path) -> int:
    """A project with ``rasters`` in one group per folder (largest first, newest on top and the only one shown).

    Made by a headless QGIS (``scratch`` holds its settings), so the file is what QGIS itself writes.
    Returns the number of layers.
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["GDAL_PAM_ENABLED"] = "NO"  # never write .aux.xml beside the shared rasters
    os.environ.setdefault("PROJ_DEBUG", "0")  # PROJ lists every transformation whose grid is missing
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsReferencedRectangle

    app = QgsApplication([], False, str(scratch))
    app.initQgis()
    try:
        project = QgsProject.instance()
        project.clear()
        project.setTitle("RS-CLIP Search demo")
        groups: dict[str, list[QgsRasterLayer]] = {}
        for raster in rasters:
            layer = QgsRasterLayer(str(raster), raster.stem)
            if layer.isValid():
                groups.setdefault(raster.parent.name, []).append(layer)
        shown = None
        for name, layers in sorted(groups.items(), key=lambda item: -len(item[1])):
            group = project.layerTreeRoot().addGroup(name)
            group.setExpanded(shown is None)
            for layer in reversed(layers):
                project.addMapLayer(layer, False)
                node = group.addLayer(layer)
                node.setItemVisibilityChecked(layer is layers[-1])
                node.setExpanded(False)  # band legends would fill the panel
            shown = shown or layers[-1]  # the newest of the largest group sets the CRS and the view
        if shown is not None:
            project.setCrs(shown.crs())
            project.setTransformContext(chosen_transforms(project))
            project.viewSettings().setDefaultViewExtent(QgsReferencedRectangle(shown.extent(), shown.crs()))
        if not project.write(str(path)):
            raise SystemExit(f"Could not write the demo project {path}: {project.error()}")
        count = len(project.mapLayers())
        project.clear()
        return count
    finally:
        app.exitQgis()


def chosen_transforms(project):
    """The project's transform context with QGIS's preferred operation chosen for every layer CRS.

    QGIS (its global settings) asks the user to pick one whenever several exist, e.g. for the
    Landsat rasters in EPSG:4326 on a NAD83 / UTM map; a demo must open without such a dialog.
    """
    from qgis.core import QgsDatumTransform

    context = project.transformContext()
    for crs in {layer.crs().authid(): layer.crs() for layer in project.mapLayers().values()}.values():
        if crs == project.crs():
            continue
        operations = QgsDatumTransform.operations(crs, project.crs())
        usable = [op for op in operations if op.isAvailable]
        if len(operations) > 1 and usable:
            context.addCoordinateOperation(crs, project.crs(), usable[0].proj)
    return context


def qgis_environment(root: Path) -> dict:
    """QGIS's environment: the dev profile, the virtualenv's packages, a real display."""
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(root), GDAL_PAM_ENABLED="NO")
    paths = [*site.getsitepackages(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.pop("QT_QPA_PLATFORM", None)  # the Makefile exports offscreen for the tests
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEV_ROOT, help="dev profile root (default: .qgis-dev)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder of rasters for the demo project")
    parser.add_argument("--qgis", default="qgis", help="QGIS program (default: qgis)")
    parser.add_argument("--prepare-only", action="store_true", help="prepare the profile and project, do not start")
    parser.add_argument("qgis_args", nargs="*", help="more arguments for qgis (after --)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    prepare_profile(root)
    rasters = demo_rasters(args.data)
    command = [args.qgis, "--nologo", "--noversioncheck", *args.qgis_args]
    if rasters:
        project = root / DEMO_NAME
        count = write_demo_project(project, rasters, root / "project-maker")
        print(f"Demo project {project}: {count} rasters from {args.data}")
        command.append(str(project))
    else:
        print(f"No rasters at {args.data}: QGIS starts with an empty project.")
    print(f"Dev profile {root} (plugin linked to {ROOT})")
    if args.prepare_only:
        print(f"QGIS_CUSTOM_CONFIG_PATH={shlex.quote(str(root))} {shlex.join(command)}")
        return 0
    sys.stdout.flush()
    os.execvpe(command[0], command, qgis_environment(root))
    return 1  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
