"""`make package` builds a zip that QGIS's plugin installer accepts."""
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import package  # noqa: E402


def test_zip_has_one_plugin_folder_and_no_tests_or_caches(tmp_path):
    path = package.build(tmp_path)
    assert path.name == f"rsclip_search-{package.version()}.zip"
    names = zipfile.ZipFile(path).namelist()
    assert all(n.startswith("rsclip_search/") for n in names)
    for needed in ("__init__.py", "metadata.txt", "LICENSE", "engine/jobs.py", "engine/cli.py",
                   "resources/classsets/eurosat.txt", "resources/icons/rsclip.svg"):
        assert f"rsclip_search/{needed}" in names, needed
    assert not [n for n in names if "/tests/" in n or "__pycache__" in n or n.endswith(".pyc")
                or "/bench/" in n or "/.venv/" in n or "/.ci/" in n]


def test_zip_installs_and_imports_as_a_plugin_package(tmp_path):
    """Unpack as QGIS would into a plugins folder and import the package with its engine."""
    import subprocess

    path = package.build(tmp_path / "dist")
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(path).extractall(plugins)
    code = ("import rsclip_search, rsclip_search.engine.jobs as j, sys;"
            "assert callable(rsclip_search.classFactory);"
            f"assert rsclip_search.engine.__version__ == {package.version()!r}, 'read from metadata.txt in the zip';"
            "assert 'engine' not in sys.modules, 'the plugin must use its own engine copy'")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(plugins)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
