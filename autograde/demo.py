"""The bundled sample class that ``attention-course demo`` grades and the tests pin.

A sample submission is what a real student hands in: the released notebook with some answer cells
filled in. The students of a lesson:

- ``full_marks``: every answer is the instructor's solution (the source cell, markers removed);
- ``blank``: the release, untouched;
- one student per file ``autograde/samples/<lesson>/<student>.py``: a jupytext file holding only
  answer cells, each carrying the nbgrader metadata (and so the ``grade_id``) of the cell it answers,
  and markdown saying who the student is.

Building them from the current release keeps them valid whenever a lesson changes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jupytext
import nbformat

from autograde.course import read_source_notebook
from autograde.lessons import LESSONS, Lesson

SAMPLES_DIR = Path("autograde") / "samples"
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def solution_answers(project: Path, lesson: Lesson) -> dict[str, str]:
    """The instructor's answer for every solution cell of ``lesson``, keyed by grade id."""
    answers = {}
    for cell in read_source_notebook(project, lesson).cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            lines = cell.source.splitlines()
            answers[_grade_id(cell)] = "\n".join(l for l in lines if l.strip() not in SOLUTION_MARKERS)
    return answers


def file_answers(path: Path) -> dict[str, str]:
    """The answer cells of a sample file, keyed by the grade id in their nbgrader metadata.

    Markdown cells describe the sample student and are not answers.
    """
    answers = {}
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "markdown":
            continue
        grade_id = _grade_id(cell)
        if grade_id is None:
            raise ValueError(f"{path}: every code cell of a sample answer file needs nbgrader metadata with a grade_id")
        answers[grade_id] = cell.source
    return answers


def fill_in(released: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """A copy of the released notebook whose solution cells hold ``answers`` (by grade id)."""
    notebook = copy.deepcopy(released)
    solution_ids = {_grade_id(c) for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")}
    unknown = set(answers) - solution_ids
    if unknown:
        raise ValueError(f"answers for cells that are not solution cells of the lesson: {sorted(unknown)}")
    for cell in notebook.cells:
        if _grade_id(cell) in answers:
            cell.source = answers[_grade_id(cell)]
    return notebook


def sample_students(project: Path, lesson: Lesson) -> dict[str, dict[str, str] | None]:
    """Each sample student of ``lesson`` and their answers (``None``: hands in the release as is)."""
    students: dict[str, dict[str, str] | None] = {
        "full_marks": solution_answers(project, lesson),
        "blank": None,
    }
    for path in sorted((project / SAMPLES_DIR / lesson.id).glob("*.py")):
        students[path.stem] = file_answers(path)
    return students


def write_sample_submissions(project: Path, release_dir: Path, dest: Path,
                             lessons: tuple[Lesson, ...] = LESSONS) -> Path:
    """Write the sample class in nbgrader's layout ``dest/<student>/<lesson>/<notebook>.ipynb``."""
    for lesson in lessons:
        released = nbformat.read(release_dir / lesson.id / f"{lesson.notebook}.ipynb", as_version=4)
        for student, answers in sample_students(project, lesson).items():
            notebook = released if answers is None else fill_in(released, answers)
            folder = dest / student / lesson.id
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, folder / f"{lesson.notebook}.ipynb")
    return dest
