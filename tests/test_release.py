"""The student release: regenerated from solutions/, identical to what is committed, and leaking nothing."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import course_lib
from autograde.course import read_source_notebook
from autograde.demo import fill_in, solution_answers
from autograde.lessons import LESSONS
from autograde.release import KIT_DIR, kit_files, release
from autograde.validate import validate
from course_kit.checks import VISIBLE_CASES_FILE

PROJECT = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = {"numpy", "torch", "matplotlib", "__future__", "course_kit"}  # the kit may import itself


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("release")
    release(PROJECT, dest)
    return dest


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts}


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_committed_lessons_folder_is_exactly_a_fresh_release(fresh_release, lesson):
    committed, fresh = files_under(PROJECT / "lessons" / lesson.id), files_under(fresh_release / lesson.id)
    assert committed.keys() == fresh.keys(), (
        "lessons/ and a fresh release hold different files; run `attention-course release` and commit the result")
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"lessons/ is stale in {stale}; run `attention-course release` and commit the result"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_release_holds_only_the_notebook_its_cases_and_the_student_kit(fresh_release, lesson):
    expected = {f"{lesson.notebook}.ipynb", VISIBLE_CASES_FILE} | {f"course_kit/{path}" for path in kit_files()}
    assert set(files_under(fresh_release / lesson.id)) == expected


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_release_leaks_no_solution_and_no_hidden_test(fresh_release, lesson):
    released_text = "\n".join(
        data.decode("utf-8", errors="replace") for name, data in files_under(fresh_release / lesson.id).items()
        if not name.endswith(".pt"))
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS"):
        assert marker not in released_text, f"{marker!r} found in the release of {lesson.id}"
    notebook_text = (fresh_release / lesson.id / f"{lesson.notebook}.ipynb").read_text()
    for marker in ("autograde", "check_against_reference", "record_answers"):
        assert marker not in notebook_text, f"{marker!r} found in the notebook of {lesson.id}"
    source = read_source_notebook(PROJECT, lesson)
    for cell in source.cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if not (nbgrader.get("solution") or nbgrader.get("grade")):
            continue
        # every line inside a solution or hidden-test block must be absent from the release
        inside, secret_lines = False, []
        for line in cell.source.splitlines():
            if line.strip() in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                inside = True
            elif line.strip() in ("### END SOLUTION", "### END HIDDEN TESTS"):
                inside = False
            elif inside and len(line.strip()) > 12:
                secret_lines.append(line.strip())
        # in the notebook: the kit is public code, checked on its own (it defines no reference function)
        leaked = [line for line in secret_lines if line in notebook_text]
        assert not leaked, f"{nbgrader['grade_id']}: these lines of the solution or hidden test leak: {leaked}"


def _optional_imports(tree: ast.AST) -> set[ast.AST]:
    """Import statements inside ``try: ... except ImportError:``: used only where available."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional |= {n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return optional


def test_student_kit_imports_only_the_standard_library_and_public_packages():
    # An import guarded by `except ImportError` is allowed (tqdm: a progress bar when there is one);
    # anything else must come with every student's setup or with the kit itself.
    for module in kit_files():
        tree = ast.parse((KIT_DIR / module).read_text())
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            if node in optional:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{module}: relative import (the kit is copied module by module)"
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in PUBLIC_PACKAGES or top in sys.stdlib_module_names, f"{module} imports {name}"


def test_student_kit_defines_no_function_of_the_reference_library():
    public = set(course_lib.__all__)
    for module in kit_files():
        tree = ast.parse((KIT_DIR / module).read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & public, f"{module} defines {(defined & public)}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_visible_cases_load_safely(fresh_release, lesson):
    cases = torch.load(fresh_release / lesson.id / VISIBLE_CASES_FILE, weights_only=True)
    assert cases and all(isinstance(v["cases"], list) and v["cases"] and isinstance(v["forbidden"], list)
                         for v in cases.values())


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_release_with_the_solutions_filled_in_passes_every_visible_test_using_only_its_own_kit(
        fresh_release, tmp_path, lesson):
    folder = tmp_path / lesson.id
    folder.mkdir()
    for name, data in files_under(fresh_release / lesson.id).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    notebook = nbformat.read(folder / f"{lesson.notebook}.ipynb", as_version=4)
    notebook = fill_in(notebook, solution_answers(PROJECT, lesson))
    # A module only this folder's copy of the kit has, imported by a last cell (in plain code the
    # grader accepts): it fails there if the kernel imported the installed course_kit instead.
    (folder / "course_kit" / "released_copy.py").write_text("HERE = True\n")
    notebook.cells.append(nbformat.v4.new_code_cell("from course_kit.released_copy import HERE\nprint(HERE)"))
    path = folder / f"{lesson.notebook}.ipynb"
    nbformat.write(notebook, path)

    result = validate(path, progress=False)

    assert result.passed, result.summary()
    assert not result.other_errors, (result.summary(), "the release imported the installed course_kit instead of "
                                                       "its own copy")
