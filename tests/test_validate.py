"""`attention-course validate`: a student runs the visible tests of a lesson before handing it in."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import nbformat
import pytest

from autograde.cli import main
from autograde.demo import fill_in, solution_answers
from autograde.lessons import LESSONS
from autograde.validate import validate

PROJECT = Path(__file__).resolve().parents[1]
LESSON = LESSONS[0]


@pytest.fixture
def lesson_copy(tmp_path) -> Path:
    """A student's copy of the released lesson folder; returns the notebook's path."""
    folder = tmp_path / LESSON.id
    shutil.copytree(PROJECT / "lessons" / LESSON.id, folder)
    return folder / f"{LESSON.notebook}.ipynb"


def answer_cells(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [c.metadata["nbgrader"]["grade_id"] for c in notebook.cells
            if c.metadata.get("nbgrader", {}).get("solution")]


def test_validating_the_blank_release_fails_with_one_not_implemented_line_per_exercise(lesson_copy):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["validate", str(lesson_copy), "--quiet"])
    summary = printed.getvalue()
    assert status == 1, summary
    for grade_id in answer_cells(lesson_copy):
        assert f"✗ {grade_id}_tests" in summary
    assert summary.count("not implemented yet") == len(answer_cells(lesson_copy)), summary
    assert "Visible tests: 0 / 10 points, some visible tests fail." in summary
    assert " ! " not in summary, "NotImplementedError in ungraded cells is expected, not worth a warning"


def test_validate_names_the_wrong_case_and_reports_an_edited_read_only_cell(lesson_copy):
    notebook = nbformat.read(lesson_copy, as_version=4)
    answers = solution_answers(PROJECT, LESSON)
    answers["softmax"] = "def softmax(x, dim=-1):\n    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)"
    notebook = fill_in(notebook, answers)
    setup = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    setup.source += "\nprint('my own line')"
    nbformat.write(notebook, lesson_copy)

    result = validate(lesson_copy, progress=False)

    assert not result.passed
    failed = {c.grade_id: c.message for c in result.cells if c.score < c.max_score}
    assert list(failed) == ["softmax_tests"]
    assert "logits of magnitude 1e4" in failed["softmax_tests"] and "NaN" in failed["softmax_tests"]
    assert result.edited_locked == ["setup"]
    assert "you edited the read-only cell 'setup'" in result.summary()


def test_validate_stops_an_endless_loop_and_says_which_cell(lesson_copy):
    first = answer_cells(lesson_copy)[0]
    notebook = fill_in(nbformat.read(lesson_copy, as_version=4), {first: "while True:\n    pass"})
    nbformat.write(notebook, lesson_copy)

    result = validate(lesson_copy, progress=False, cell_timeout=15)  # the setup cell alone may take seconds

    assert not result.passed
    assert result.crashed.startswith(f"{first} ran longer than 15 s"), result.crashed
    assert all(c.score == 0 for c in result.cells)


def test_validate_of_a_missing_notebook_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nowhere.ipynb")]) == 2
    assert "no notebook at" in capsys.readouterr().err
