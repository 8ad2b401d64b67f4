"""The project's own bookkeeping: one source for the version and the pins, the licence, test time limits."""
import ast
import configparser
import re
import sys
from pathlib import Path

import engine
from engine.deps.pins import DEVELOPMENT_PIN_SET, PIN_SETS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import requirements  # noqa: E402 (tools/ is put on the path above)


def metadata_version() -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    return parser.get("general", "version")


def test_the_version_lives_in_metadata_txt_only():
    from engine.models import download

    assert engine.__version__ == metadata_version()
    assert download._USER_AGENT == f"rsclip-search/{metadata_version()}"
    literal = re.compile(r"""__version__\s*=\s*["']|rsclip-search/\d""")
    assert not [p for p in (ROOT / "engine").rglob("*.py") if literal.search(p.read_text(encoding="utf-8"))]


def test_requirements_txt_is_written_from_the_engine_pins():
    assert (ROOT / "requirements.txt").read_text() == requirements.render(), \
        "requirements.txt differs from engine/deps/pins.py: run `make requirements`"
    assert DEVELOPMENT_PIN_SET in PIN_SETS


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def project_python_files() -> list[Path]:
    """The checkout's own Python files: git's tracked and untracked-but-not-ignored ones (a cached Debian root
    in .qgis340/, the venv, bench/work/ are not the project), or every non-hidden one outside git."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    if listed.returncode == 0 and listed.stdout.strip():
        return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]
    return [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_rasterio_and_affine_belong_to_the_benchmark_alone():
    users = sorted(str(p.relative_to(ROOT)) for p in project_python_files()
                   if {"rasterio", "affine"} & imported_modules(p))
    assert users == ["bench/run.py"]
    assert not re.search(r"^(rasterio|affine)\b", (ROOT / "requirements.txt").read_text(), re.M)
    bench = (ROOT / "bench" / "requirements.txt").read_text()
    assert re.search(r"^rasterio==", bench, re.M) and re.search(r"^affine==", bench, re.M)


def test_the_licence_is_gpl_2_or_later():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    assert "either version 2 of the\nLicense, or (at your option) any later version" in text
    assert "GPL-2.0-or-later" in (ROOT / "README.md").read_text(encoding="utf-8")


class Limits(ast.NodeVisitor):
    """Module-level numeric constants, the module's pytest timeout mark, and every subprocess ``timeout=``."""

    CALLS = {"run", "check_output", "check_call", "call", "wait", "communicate"}

    def __init__(self, default: float) -> None:
        self.constants: dict[str, float] = {}
        self.timeout = default
        self.calls: list[tuple[int, float]] = []

    def value(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult, ast.Sub)):
            left, right = self.value(node.left), self.value(node.right)
            if left is not None and right is not None:
                return {ast.Add: left + right, ast.Mult: left * right, ast.Sub: left - right}[type(node.op)]
        return None

    def visit_Module(self, node):
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                value = self.value(stmt.value)
                if value is not None:
                    self.constants[stmt.targets[0].id] = value
                if stmt.targets[0].id == "pytestmark":
                    for mark in ast.walk(stmt.value):
                        if (isinstance(mark, ast.Call) and isinstance(mark.func, ast.Attribute)
                                and mark.func.attr == "timeout" and mark.args):
                            self.timeout = self.value(mark.args[0]) or self.timeout
        self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Attribute) and node.func.attr in self.CALLS:
            for keyword in node.keywords:
                value = self.value(keyword.value) if keyword.arg == "timeout" else None
                if value is not None:
                    self.calls.append((node.lineno, value))
        self.generic_visit(node)


def test_no_subprocess_may_outlast_its_test():
    """A subprocess limit above pytest-timeout's never fires: pytest kills the run first, without saying which
    command hung (the installer test waited 1800 s per pip run under a 900 s test limit)."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "pytest.ini")
    default = float(ini.get("pytest", "timeout"))
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        limits = Limits(default)
        limits.visit(ast.parse(path.read_text(encoding="utf-8")))
        offenders += [f"{path.name}:{line}: timeout={value}, but the test may take {limits.timeout} s"
                      for line, value in limits.calls if value >= limits.timeout]
    assert not offenders, offenders
