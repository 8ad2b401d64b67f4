"""ui/ only asks and shows; plugin/ talks to the dock and dialogs through their methods.

The rules of the architecture (see the developers' guide): the controller owns the settings, so no
module of ui/ may touch QgsSettings/QSettings or the plugin's settings module, nor run engine code;
and no module of plugin/ may reach into a widget of the dock, a panel or a dialog (``dock.query_edit``,
``dock.tabs``, ``dialog.cap_spin``): they call the methods those offer (``focus_search_within``,
``request_similar``, ``choices``…). The source is parsed (``ast``), so a new offender anywhere fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI = sorted((ROOT / "ui").glob("*.py"))
PLUGIN = sorted((ROOT / "plugin").rglob("*.py"))
SETTINGS_NAMES = {"QgsSettings", "QSettings"}
#: Objects through which plugin/ holds a dock, panel or dialog.
HOLDERS = {"dock", "panel", "dialog"}
#: Parts of the dock that are components in their own right, with their own signals and methods.
COMPONENTS = {"concepts_panel": "the Concepts tab, run by plugin/concepts.py through its signals and methods",
              "change_panel": "the Change tab, run by plugin/change.py through its signals and methods"}


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def settings_uses(path: Path) -> list[str]:
    """Where a module touches settings: QgsSettings/QSettings by any route, or the plugin's settings module."""
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            names = {alias.name.split(".")[-1] for alias in node.names}
            parts = set(module.split("."))
            if names & SETTINGS_NAMES or "settings" in parts or "settings" in names:
                found.append(f"{rel(path)}:{node.lineno} imports {', '.join(sorted(names))} from {module or '-'}")
        elif isinstance(node, ast.Name) and node.id in SETTINGS_NAMES:
            found.append(f"{rel(path)}:{node.lineno} uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in SETTINGS_NAMES:
            found.append(f"{rel(path)}:{node.lineno} uses .{node.attr}")
    return found


def outside_imports(path: Path) -> list[str]:
    """Imports of the plugin's or the engine's code from a ui/ module."""
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if (node.level >= 2 and module.split(".")[0] in ("plugin", "engine")) or \
                    module.startswith(("rsclip_search.plugin", "rsclip_search.engine", "engine", "plugin")):
                found.append(f"{rel(path)}:{node.lineno} imports {'.' * node.level}{module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("engine", "plugin"):
                    found.append(f"{rel(path)}:{node.lineno} imports {alias.name}")
    return found


def ui_classes() -> set[str]:
    return {node.name for path in UI for node in ast.walk(parsed(path)) if isinstance(node, ast.ClassDef)}


def widget_attributes() -> dict[str, str]:
    """``self.NAME = Widget(...)`` in ui/: NAME → where, for every Qt or ui widget the dock and dialogs hold."""
    classes = ui_classes()
    found = {}
    for path in UI:
        for node in ast.walk(parsed(path)):
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            func = node.value.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if not (called.startswith("Q") or called in classes):
                continue
            for target in node.targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and \
                        target.value.id == "self" and target.attr not in COMPONENTS:
                    found[target.attr] = f"{rel(path)}:{node.lineno}"
    return found


def holder_name(node: ast.expr) -> str:
    """``dock`` for ``dock``, ``self.dock``, ``self.c.dock``; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def widget_reaches(path: Path, widgets: dict[str, str]) -> list[str]:
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Attribute) and node.attr in widgets and holder_name(node.value) in HOLDERS:
            found.append(f"{rel(path)}:{node.lineno} reaches .{node.attr} (a widget, {widgets[node.attr]})")
    return found


def test_ui_never_touches_settings():
    offenders = [use for path in UI for use in settings_uses(path)]
    assert not offenders, "ui/ must not read or write settings; the controller fills the dock and remembers " \
                          "the choices (plugin/settings.py):\n" + "\n".join(offenders)


def test_ui_runs_no_engine_or_plugin_code():
    offenders = [use for path in UI for use in outside_imports(path)]
    assert not offenders, "ui/ only asks and shows:\n" + "\n".join(offenders)


def test_plugin_uses_the_docks_methods_not_its_widgets():
    widgets = widget_attributes()
    assert {"query_edit", "top_k_spin", "tabs", "tile_size_spin", "progress", "cap_spin"} <= set(widgets)
    offenders = [reach for path in PLUGIN for reach in widget_reaches(path, widgets)]
    assert not offenders, "plugin/ must call the dock's and dialogs' methods:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, expected", [
    ("from qgis.core import QgsSettings\nQgsSettings().setValue('a', 1)\n", 2),
    ("from qgis.PyQt.QtCore import QSettings\n", 1),
    ("from ..plugin import settings\nsettings.TOP_K.set(3)\n", 1),
    ("from ..plugin.settings import TOP_K\n", 1),
    ("import qgis.core\nqgis.core.QgsSettings().value('a')\n", 1),
])
def test_the_settings_check_catches_each_route(tmp_path, source, expected):
    """The check above is only as good as what it recognises: each way of reaching settings is caught."""
    path = tmp_path / "module.py"
    path.write_text(source)
    assert len(settings_uses(path)) == expected


def test_the_widget_check_catches_a_poke(tmp_path):
    path = tmp_path / "actions.py"
    path.write_text("def go(self, dock):\n    dock.tabs.setCurrentIndex(0)\n"
                    "    self.controller.dock.query_edit.setFocus()\n"
                    "    dock.focus_search_within('a', 'b')\n")
    reaches = widget_reaches(path, {"tabs": "ui/dock.py", "query_edit": "ui/dock.py"})
    assert [r.split(" reaches ")[1].split(" ")[0] for r in reaches] == [".tabs", ".query_edit"]
