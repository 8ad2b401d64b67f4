"""QGIS 4 readiness: plugin/ and ui/ use only Qt and QGIS API that works on both PyQt5 and PyQt6.

QGIS 4 runs on Qt 6 and PyQt6, whose enums are scoped: ``Qt.UserRole`` is gone there, while
``Qt.ItemDataRole.UserRole`` works on both. The plugin's source is parsed (``ast``) and every attribute
chain that starts at a name imported from ``qgis.PyQt``, ``qgis.core`` or ``qgis.gui`` is resolved
against the bindings installed here: an enum value reached from its class instead of from its enum is
reported with the spelling to use. Qt5-only calls and classes (``exec_()``, ``QRegExp``,
``QDesktopWidget``…), QFlags classes (gone in PyQt6) and imports of PyQt5/PyQt6 themselves are
reported by name. Where PyQt6 is installed (the Debian 13 root of ``make test-qgis340`` has it), every
Qt name is also looked up in PyQt6, and the dock and dialogs are built and filled on PyQt6 through a
small stand-in for ``qgis.PyQt`` (QGIS 4 is not packaged by Debian, so this is as close as it gets).
"""
from __future__ import annotations

import ast
import enum
import importlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([ROOT / "__init__.py", *(ROOT / "plugin").rglob("*.py"), *(ROOT / "ui").rglob("*.py")])
BINDINGS = ("qgis.PyQt", "qgis.core", "qgis.gui")
#: Qt 5 classes that Qt 6 removed (or moved out of the modules QGIS 4 ships) → what replaces them.
QT5_ONLY_CLASSES = {"QRegExp": "QRegularExpression", "QRegExpValidator": "QRegularExpressionValidator",
                    "QDesktopWidget": "QGuiApplication.screens()", "QGLWidget": "QOpenGLWidget",
                    "QGLFormat": "QSurfaceFormat", "QMatrix": "QTransform", "QStringRef": "str",
                    "QTextCodec": "Python's codecs", "QSound": "QSoundEffect", "QLinkedList": "a Python list",
                    "QWebView": "QWebEngineView", "QtWebKit": "QtWebEngine", "QtWebKitWidgets": "QtWebEngineWidgets"}
#: Qt 5 methods and enum values that Qt 6 removed → what replaces them.
QT5_ONLY_ATTRIBUTES = {"exec_": "exec()", "print_": "print()", "setMargin": "setContentsMargins()",
                       "MidButton": "Qt.MouseButton.MiddleButton", "desktop": "QGuiApplication.screens()"}
#: Chains that are Qt 5 only on purpose, with why: code that runs only where Qt 5 is certain.
QT5_BRANCHES = {
    ("plugin/qgis_compat.py", "QVariant.Type.Int"): "QgsField before QGIS 3.38 takes a QVariant.Type (Qt 5 only)",
    ("plugin/qgis_compat.py", "QVariant.Type.Double"): "as above",
    ("plugin/qgis_compat.py", "QVariant.Type.String"): "as above",
    ("plugin/qgis_compat.py", "QVariant.Type.LongLong"): "as above",
}


@dataclass(frozen=True)
class Chain:
    """``Qt.ItemDataRole.UserRole`` at a line: the imported name, the module it came from, the attributes."""

    path: str
    line: int
    module: str
    name: str
    attrs: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join((self.name, *self.attrs))

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.dotted}"


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def imported_names(tree: ast.AST) -> dict[str, tuple[str, str | None]]:
    """Local name → (module, attribute) for names imported from the QGIS bindings."""
    names: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(BINDINGS):
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(BINDINGS) and alias.asname:
                    names[alias.asname] = (alias.name, None)
    return names


def chains(path: Path, root: Path = ROOT) -> list[Chain]:
    """Every longest attribute chain that starts at a name imported from the bindings."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = imported_names(tree)
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        attrs, base = [], node
        while isinstance(base, ast.Attribute):
            attrs.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id in names:
            module, attr = names[base.id]
            found.append(Chain(_relative(path, root), node.lineno, module if attr is None else f"{module}:{attr}",
                               base.id, tuple(attrs)))
    return found


def all_chains() -> list[Chain]:
    return [chain for path in SOURCES for chain in chains(path)
            if (chain.path, chain.dotted) not in QT5_BRANCHES]


def qt5_only_uses(sources: list[Path] = SOURCES, root: Path = ROOT) -> list[str]:
    """Direct PyQt5/PyQt6/sip imports, Qt 5 only classes and methods, wherever they appear."""
    problems = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            where = f"{_relative(path, root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for module in modules:
                    if module.split(".")[0] in ("PyQt5", "PyQt6", "sip"):
                        problems.append(f"{where}: import {module}: import Qt through qgis.PyQt")
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if alias.name in QT5_ONLY_CLASSES:
                            problems.append(f"{where}: {alias.name} is Qt 5 only; use {QT5_ONLY_CLASSES[alias.name]}")
            elif isinstance(node, ast.Attribute) and node.attr in QT5_ONLY_ATTRIBUTES:
                problems.append(f"{where}: .{node.attr} is Qt 5 only; use {QT5_ONLY_ATTRIBUTES[node.attr]}")
            elif isinstance(node, ast.Name) and node.id in QT5_ONLY_CLASSES:
                problems.append(f"{where}: {node.id} is Qt 5 only; use {QT5_ONLY_CLASSES[node.id]}")
    return problems


def _is_enum_type(obj) -> bool:
    return isinstance(obj, type) and (issubclass(obj, enum.Enum) or type(obj).__name__ == "enumtype")


def _is_enum_value(obj) -> bool:
    return isinstance(obj, enum.Enum) or _is_enum_type(type(obj))


def _is_flags_class(parent, obj, attr: str) -> bool:
    """PyQt5's QFlags classes (``QgsTask.Flags``) beside their enum (``QgsTask.Flag``): PyQt6 has none."""
    if not isinstance(obj, type) or _is_enum_type(obj) or not attr.endswith("s"):
        return False
    return _is_enum_type(getattr(parent, attr[:-1], None)) and hasattr(obj, "__or__") and hasattr(obj, "__int__")


def unscoped(chain: Chain) -> str | None:
    """Why ``chain`` fails on PyQt6, judged on the bindings installed here (None: it does not)."""
    module, _, attr = chain.module.partition(":")
    obj = importlib.import_module(module)
    if attr:
        obj = getattr(obj, attr, None)
    for i, name in enumerate(chain.attrs):
        parent, obj = obj, getattr(obj, name, None)
        if obj is None:
            return None  # not in this QGIS (a newer or older API guarded elsewhere): nothing to judge
        spelled = ".".join((chain.name, *chain.attrs[:i]))
        if _is_enum_value(obj) and not _is_enum_type(parent):
            enum_type = type(obj)
            nested = getattr(parent, enum_type.__name__, None) is enum_type
            scoped = f"{spelled}.{enum_type.__name__}.{name}" if nested else f"{enum_type.__qualname__}.{name}"
            return f"{chain.where()}: unscoped enum; write {scoped}"
        if _is_flags_class(parent, obj, name):
            single = name[:-1]
            return f"{chain.where()}: {spelled}.{name} is PyQt5 only; use {spelled}.{single} values (or {single}(0))"
    return None


def test_the_check_finds_what_it_must(tmp_path):
    """The check itself: planted Qt5-only code is reported, the PyQt6-safe spelling is not."""
    pytest.importorskip("qgis.core")
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""\
        from qgis.PyQt.QtCore import Qt, QRegExp
        from qgis.PyQt.QtWidgets import QMessageBox
        from qgis.core import Qgis, QgsTask
        from PyQt5.QtCore import QTimer
        a = Qt.UserRole
        b = Qt.ItemDataRole.UserRole
        c = QMessageBox.Ok
        d = QMessageBox.StandardButton.Ok
        e = QgsTask.CanCancel
        f = QgsTask.Flag.CanCancel
        g = Qgis.Critical
        h = Qgis.MessageLevel.Critical
        i = QgsTask.Flags()
        box = QMessageBox()
        box.exec_()
        box.exec()
        """))
    found = [p for p in (unscoped(c) for c in chains(bad, tmp_path)) if p]
    others = qt5_only_uses([bad], tmp_path)
    assert found == ["bad.py:5: Qt.UserRole: unscoped enum; write Qt.ItemDataRole.UserRole",
                     "bad.py:7: QMessageBox.Ok: unscoped enum; write QMessageBox.StandardButton.Ok",
                     "bad.py:9: QgsTask.CanCancel: unscoped enum; write QgsTask.Flag.CanCancel",
                     "bad.py:11: Qgis.Critical: unscoped enum; write Qgis.MessageLevel.Critical",
                     "bad.py:13: QgsTask.Flags: QgsTask.Flags is PyQt5 only; use QgsTask.Flag values "
                     "(or Flag(0))"], found
    assert others == ["bad.py:1: QRegExp is Qt 5 only; use QRegularExpression",
                      "bad.py:4: import PyQt5.QtCore: import Qt through qgis.PyQt",
                      "bad.py:15: .exec_ is Qt 5 only; use exec()"], others


def test_plugin_and_ui_use_scoped_enums_only():
    pytest.importorskip("qgis.core")
    found = all_chains()
    assert len(found) > 50, "the parser found too few Qt/QGIS names: is it still reading plugin/ and ui/?"
    problems = [p for p in map(unscoped, found) if p]
    assert not problems, "\n".join(problems)


def test_plugin_and_ui_use_no_qt5_only_classes_or_calls():
    problems = qt5_only_uses()
    assert not problems, "\n".join(problems)


def test_metadata_declares_qt6_support():
    metadata = (ROOT / "metadata.txt").read_text(encoding="utf-8").splitlines()
    assert "supportsQt6=True" in metadata


def _pyqt6_python() -> str:
    probe = subprocess.run([sys.executable, "-c", "import PyQt6.QtWidgets"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("PyQt6 is not installed here (make test-qgis340 runs this in its Debian 13 root, which has "
                    "python3-pyqt6)")
    return sys.executable


def test_every_qt_name_exists_in_pyqt6():
    """Each Qt chain looked up in PyQt6 itself, as QGIS 4's qgis.PyQt exposes it (QAction also in QtWidgets)."""
    python = _pyqt6_python()
    wanted = sorted({(c.module, c.attrs, c.where()) for c in all_chains() if c.module.startswith("qgis.PyQt")})
    assert wanted
    script = textwrap.dedent("""\
        import importlib, json, sys
        MOVED = {"QAction": "QtGui", "QActionGroup": "QtGui", "QShortcut": "QtGui"}  # QGIS 4 re-exports these
        missing = []
        for module, attrs, where in json.load(sys.stdin):
            module, _, name = module.partition(":")
            qt_module = module.replace("qgis.PyQt", "PyQt6")
            if name in MOVED:
                qt_module = "PyQt6." + MOVED[name]
            obj = importlib.import_module(qt_module)
            for attr in ([name] if name else []) + attrs:
                if not hasattr(obj, attr):
                    missing.append(where)
                    break
                obj = getattr(obj, attr)
        print(json.dumps(missing))
        """)
    out = subprocess.run([python, "-c", script], input=json.dumps(wanted), capture_output=True, text=True,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), timeout=120)
    assert out.returncode == 0, out.stderr
    missing = json.loads(out.stdout)
    assert not missing, "not in PyQt6:\n" + "\n".join(missing)


STAND_IN = {
    "qgis/__init__.py": "",
    "qgis/PyQt/__init__.py": "",
    "qgis/PyQt/QtCore.py": "from PyQt6.QtCore import *\n",
    "qgis/PyQt/QtGui.py": "from PyQt6.QtGui import *\n",
    # as QGIS 4's own qgis.PyQt.QtWidgets: QAction and friends moved to QtGui in Qt 6 and are re-exported
    "qgis/PyQt/QtWidgets.py": ("from PyQt6.QtWidgets import *\n"
                               "from PyQt6.QtGui import QAction, QActionGroup, QShortcut\n"),
    "qgis/core.py": "from PyQt6.QtCore import QSettings as QgsSettings\n",
}

DRIVE_THE_UI = """
import sys, types
from PyQt6.QtCore import QSettings, Qt
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QApplication

QSettings.setDefaultFormat(QSettings.Format.IniFormat)
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[1])
app = QApplication(["rsclip-qt6"])
app.setOrganizationName("rsclip-qt6-test")
from rsclip_search.ui.dock import SearchDock
from rsclip_search.ui.install_dialog import InstallDialog
from rsclip_search.ui.download_dialog import DownloadDialog

dock = SearchDock()
requests = []
dock.indexRequested.connect(requests.append)
dock.searchRequested.connect(requests.append)
dock.set_models(["remoteclip-vit-b-32"], "remoteclip-vit-b-32")
dock.set_class_sets({"eurosat": ["forest", "river"]}, "eurosat")
dock.set_rasters([("NAIP", "/data/naip.tif"), ("Landsat", "/data/landsat.tif")])
dock.rasters_list.item(1).setCheckState(Qt.CheckState.Unchecked)
dock.set_rasters([("NAIP", "/data/naip.tif"), ("Landsat", "/data/landsat.tif")])
dock.set_busy(True)
dock.set_progress(40.0, "embedding")
dock.set_busy(False)
dock.set_missing("torch is missing")
dock.set_missing(None)
tile = types.SimpleNamespace(id=7, raster="/data/naip.tif", window=(0, 0, 224, 224))
thumb = QImage(16, 16, QImage.Format.Format_RGB32)
dock.show_results([types.SimpleNamespace(rank=1, score=0.5, tile=tile)], {7: thumb})
dock.results_list.setCurrentRow(0)
dock.query_edit.setText("farm fields")
dock.request_search()
dock.request_index()
dock.show()
app.processEvents()
dialog = InstallDialog()
dialog.set_choices("cuda", "", "NVIDIA driver 550")
dialog.set_plan("Install: torch", True)
dialog.append_log("Collecting torch")
dialog.set_running(True)
dialog.set_progress(50.0, "pip")
dialog.set_running(False)
dialog.set_result("Installed", True)
progress = DownloadDialog("remoteclip-vit-b-32")
progress.finish()
app.processEvents()
search, index = requests
assert search.query == "farm fields" and index.rasters == ["/data/naip.tif"], requests
assert dock.results_list.count() == 1 and not dock.results_list.item(0).icon().isNull()
assert dialog.params().variant == "cuda"
print("ok")
"""


def test_dock_and_dialogs_build_and_work_on_pyqt6(tmp_path):
    """The ui modules imported and driven on PyQt6 through a stand-in for qgis.PyQt (QGIS 4 is not in Debian)."""
    python = _pyqt6_python()
    for rel, text in STAND_IN.items():
        (tmp_path / "site" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / rel).write_text(text)
    (tmp_path / "site" / "rsclip_search").symlink_to(ROOT, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(tmp_path / "site"), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path))
    out = subprocess.run([python, "-c", DRIVE_THE_UI, str(tmp_path / "settings")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
