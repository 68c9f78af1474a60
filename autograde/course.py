"""The bridge between this repository and nbgrader: where the project is, and a course root nbgrader can read.

The instructor's notebooks live in ``solutions/`` as jupytext percent-format text. nbgrader reads
``.ipynb`` files, so every command that runs nbgrader first *materialises* a course root: a folder
in nbgrader's layout whose ``solutions/<lesson>/`` holds the notebook converted to ``.ipynb`` and the
lesson's ``visible_cases.pt`` (the expected outputs the visible tests compare with). nbgrader's
autograde copies every non-notebook file of that folder over the student's, so the cases used in
grading are always the instructor's.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import torch
from traitlets.config import Config, PyFileConfigLoader

from autograde.lessons import Lesson
from course_kit.checks import VISIBLE_CASES_FILE

NBGRADER_CONFIG = Path("autograde") / "nbgrader_config.py"


class ProjectNotFound(RuntimeError):
    pass


def project_root() -> Path:
    """The checkout of the course: ``$ATTENTION_COURSE_ROOT``, else the folder above ``autograde``."""
    candidates = []
    if os.environ.get("ATTENTION_COURSE_ROOT"):
        candidates.append(Path(os.environ["ATTENTION_COURSE_ROOT"]))
    candidates.append(Path(__file__).resolve().parents[1])
    for candidate in candidates:
        if (candidate / "solutions").is_dir() and (candidate / NBGRADER_CONFIG).is_file():
            return candidate.resolve()
    raise ProjectNotFound(
        "cannot find the course's files (solutions/ and autograde/nbgrader_config.py). "
        "Run attention-course from a clone of the course installed with `pip install -e .` "
        "(./course does that), or set ATTENTION_COURSE_ROOT to the clone."
    )


def nbgrader_config(project: Path, course_root: Path) -> Config:
    """The course's nbgrader configuration (autograde/nbgrader_config.py), rooted at ``course_root``."""
    loader = PyFileConfigLoader(NBGRADER_CONFIG.name, path=str(project / NBGRADER_CONFIG.parent))
    config = loader.load_config()
    config.CourseDirectory.root = str(course_root.resolve())
    return config


def nbgrader_api(project: Path, course_root: Path):
    """nbgrader's high-level API on ``course_root``; its own log is captured, not printed."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    # nbgrader runs the `alembic` executable of its environment by name: make sure that environment's
    # bin/ is on PATH even when the interpreter was started by path, without activating the venv.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = nbgrader_config(project, course_root)
    coursedir = CourseDirectory(config=config)
    api = NbGraderAPI(coursedir=coursedir, config=config)
    api.log.setLevel(logging.ERROR)
    return api


def read_source_notebook(project: Path, lesson: Lesson) -> nbformat.NotebookNode:
    """The instructor's notebook of ``lesson``, read from its jupytext source.

    Cell ids are derived from the cell's position and grade id, so that converting the same source
    twice gives byte-identical notebooks (jupytext would otherwise draw random ids).
    """
    notebook = jupytext.read(project / lesson.source_path)
    notebook.metadata.pop("jupytext", None)
    for index, cell in enumerate(notebook.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell["id"] = f"{index:03d}-{grade_id}" if grade_id else f"{index:03d}"
    return notebook


def materialise_source(project: Path, lesson: Lesson, course_root: Path) -> Path:
    """Write ``lesson``'s source notebook and visible cases into ``course_root``; return the folder."""
    from autograde.exercises import visible_cases_for_lesson

    folder = course_root / "solutions" / lesson.id
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(read_source_notebook(project, lesson), folder / f"{lesson.notebook}.ipynb")
    torch.save(visible_cases_for_lesson(lesson.id), folder / VISIBLE_CASES_FILE)
    return folder


def nbgrader_failure(result: dict) -> str:
    """The exception nbgrader's log or traceback names (not its "see the above traceback" epilogue)."""
    text = (result.get("log") or "") + "\n" + (result.get("error") or "")
    exceptions = [line.strip() for line in text.splitlines()
                  if re.match(r"\s*[\w.]*(Error|Exception)\b.*:", line) and "see the the above" not in line
                  and "Please see" not in line]
    if exceptions:
        return exceptions[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "nbgrader failed without a message"
