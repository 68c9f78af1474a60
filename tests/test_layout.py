"""One package per user, and the dependencies between them point one way.

``course_lib`` (the reference library) and ``course_kit`` (the student kit) import nothing of the
other packages of the project; ``autograde`` (the grader) may import both. Every import counts,
those inside functions included, and so does a module named in a docstring example.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("course_lib", "course_kit", "autograde")
MAY_IMPORT = {"course_lib": set(), "course_kit": set(), "autograde": {"course_lib", "course_kit"}}
DOCTEST_IMPORT = re.compile(r"^\s*(?:>>>|\.\.\.)\s*(?:from|import)\s+([\w.]+)", re.MULTILINE)


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports, anywhere in it (docstring examples included)."""
    source = path.read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    names |= set(DOCTEST_IMPORT.findall(source))
    return {name.split(".")[0] for name in names} & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_the_layout_allows(package):
    wrong = {}
    for path in sorted((PROJECT / package).rglob("*.py")):
        others = imported_packages(path) - {package} - MAY_IMPORT[package]
        if others:
            wrong[str(path.relative_to(PROJECT))] = sorted(others)
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package]) or 'nothing of ours'}: {wrong}"


def test_no_other_package_of_ours_is_shipped():
    found = {path.parent.name for path in PROJECT.glob("*/__init__.py")}
    assert found == set(PACKAGES)
