"""The layout shows the design: core is grouped into packages by job, and the unit test of a module is
found by its path (tests/unit/<package path>/test_<module>[_<topic>].py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "interlink_plugins"
UNIT = ROOT / "tests" / "unit"

# core's own top level: the backend seam and what every package below it uses
CORE_TOP = {"__init__", "backend", "batch", "errors", "safefs"}


def _importable_names(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    modules = {path.stem for path in directory.glob("*.py") if path.stem != "__init__"}
    # any subdirectory counts: a package, or package data such as templates (tests of the shell scripts)
    packages = {path.name for path in directory.iterdir() if path.is_dir() and path.name != "__pycache__"}
    return modules | packages


def test_every_unit_test_mirrors_a_module() -> None:
    strays = []
    for test in sorted(UNIT.rglob("test_*.py")):
        where = test.parent.relative_to(UNIT)
        topic = test.stem.removeprefix("test_")
        names = _importable_names(PACKAGE / where)
        if not any(topic == name or topic.startswith(f"{name}_") for name in names):
            strays.append(str(test.relative_to(ROOT)))
    assert not strays, f"unit tests whose path names no module of interlink_plugins: {strays}"


def test_unit_test_packages_are_packages() -> None:
    """Same-named test files in two directories need each directory to be a package."""
    missing = [str(d.relative_to(ROOT)) for d in UNIT.rglob("*") if d.is_dir() and d.name != "__pycache__"
               and not (d / "__init__.py").is_file()]
    assert not missing, missing


def test_core_is_grouped_by_job() -> None:
    core = PACKAGE / "core"
    loose = sorted(path.stem for path in core.glob("*.py") if path.stem not in CORE_TOP)
    assert not loose, f"modules at core's top level belong in a package by job: {loose}"
    for package in sorted(p for p in core.iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc, f"{package.relative_to(ROOT)} says in its docstring what job it does"
