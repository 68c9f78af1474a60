"""Finding and reading a class's submissions without trusting anything about them.

``SUBMISSIONS`` is in nbgrader's layout, ``<student>/<lesson>/<notebook>.ipynb``, as ``nbgrader
collect`` or an unpacked LMS download leaves it. Everything in it is the students': names, links,
trees, file types and sizes. So:

- only folders and regular files are used, and no link is followed (a notebook that is a symbolic
  link, or a hard link to any other file, a classmate's or the instructor's, is refused);
- a student or lesson folder whose name nbgrader cannot take safely (it treats ids as glob
  patterns and paths) is reported and skipped, never passed on;
- walks are bounded in depth and count, and files in size;
- a notebook is parsed once, from at most ``MAX_NOTEBOOK_BYTES``, and kept only as what grading
  needs: its cells' sources and nbgrader metadata; outputs, attachments and any other metadata are
  dropped before nbgrader or the grader sees it;
- a reason never quotes a file's contents, and names are shown escaped (:func:`shown`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograde.lessons import Lesson

MAX_NOTEBOOK_BYTES = 16 * 2**20
MAX_CELLS = 2_000
MAX_SOURCE_CHARS = 2 * 2**20  # all cells' sources together
MAX_ENTRIES = 10_000  # folders and files looked at below one submission folder
MAX_DEPTH = 16
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")
CELL_METADATA_KEPT = ("nbgrader", "tags", "editable", "deletable")


@dataclass(frozen=True)
class Problem:
    """A submission that could not be graded (or was graded with a note), and why."""

    student: str
    lesson: str
    reason: str


def shown(name: str) -> str:
    """``name`` as it can be printed safely: control characters (escape sequences, new lines) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as scan:
        return sorted((entry for _, entry in zip(range(MAX_ENTRIES), scan)), key=lambda e: e.name)


def find_submissions(submissions: Path, lessons: tuple[Lesson, ...]) -> tuple[list[tuple[str, Lesson, Path]],
                                                                               list[Problem]]:
    """Every (student, lesson, notebook path) under ``submissions``, and what is wrong with the rest."""
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder at {submissions}")
    by_id = {lesson.id: lesson for lesson in lessons}
    found, problems = [], []
    for student_entry in _entries(submissions):
        if student_entry.name.startswith("."):
            continue
        student = student_entry.name
        if not student_entry.is_dir(follow_symlinks=False):
            if student_entry.is_symlink():
                problems.append(Problem(shown(student), "-", "the student's folder is a link, not a folder: skipped"))
            continue
        if not SAFE_NAME.fullmatch(student):
            problems.append(Problem(shown(student), "-", "this folder name cannot be a student id in nbgrader (use "
                                    "letters, digits and . _ - + @, starting with a letter or digit): skipped"))
            continue
        for lesson_entry in _entries(Path(student_entry.path)):
            if lesson_entry.name.startswith("."):
                continue
            lesson = by_id.get(lesson_entry.name)
            if lesson is None:
                if lesson_entry.is_dir(follow_symlinks=False):
                    problems.append(Problem(student, shown(lesson_entry.name),
                                            f"not a lesson of the course (expected one of: {', '.join(by_id)})"))
                continue
            if not lesson_entry.is_dir(follow_symlinks=False):
                problems.append(Problem(student, lesson.id, "the lesson's folder is a link, not a folder"))
                continue
            path = Path(lesson_entry.path) / f"{lesson.notebook}.ipynb"
            if not os.path.lexists(path):
                others = sorted(shown(e.name) for e in _entries(Path(lesson_entry.path)) if e.name.endswith(".ipynb"))
                found_text = f"; found {', '.join(others)}" if others else "; the folder holds no notebook"
                problems.append(Problem(student, lesson.id, f"missing notebook {path.name}{found_text}"))
                continue
            found.append((student, lesson, path))
    if not found and not problems:
        raise FileNotFoundError(
            f"no submissions found in {submissions}: expected <student>/<lesson>/<notebook>.ipynb, "
            f"e.g. alice/{lessons[0].id}/{lessons[0].notebook}.ipynb")
    return found, problems


def shared_files(found: list[tuple[str, Lesson, Path]]) -> list[Problem]:
    """The submissions whose notebooks are one file under several names (hard links between students'
    folders): each is refused, naming the others, for the instructor to settle who wrote it."""
    by_inode: dict[tuple[int, int], list[tuple[str, Lesson]]] = {}
    for student, lesson, path in found:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            by_inode.setdefault((info.st_dev, info.st_ino), []).append((student, lesson))
    problems = []
    for group in (g for g in by_inode.values() if len(g) > 1):
        for student, lesson in group:
            others = ", ".join(sorted(f"{s}/{l.id}" for s, l in group if (s, l) != (student, lesson)))
            problems.append(Problem(student, lesson.id, f"its notebook is the same file as {others}'s (a hard link): "
                                                        "each student hands in a copy of their own"))
    return problems


def read_notebook(path: Path) -> nbformat.NotebookNode | str:
    """The notebook at ``path``, cleaned to what grading needs (see the module doc), or why it cannot be."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return f"{path.name} is not a regular file (a link, a pipe or a device?): hand in the notebook itself"
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return f"{path.name} is not a regular file (a link, a pipe or a device?): hand in the notebook itself"
        if info.st_nlink != 1:
            return f"{path.name} is a hard link to another file: hand in a copy of your own notebook"
        if info.st_size > MAX_NOTEBOOK_BYTES:
            return f"{path.name} is {info.st_size // 2**20} MiB; a notebook to grade must be under " \
                   f"{MAX_NOTEBOOK_BYTES // 2**20} MiB (clear its outputs)"
        data = file.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
            return "not a valid notebook (no list of cells)"
        if len(raw["cells"]) > MAX_CELLS:
            return f"the notebook has {len(raw['cells'])} cells; at most {MAX_CELLS} are graded"
        notebook = nbformat.reads(json.dumps(_cleaned(raw)), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # any parse or schema error: report its kind, grade the others
        return f"not a valid notebook ({type(error).__name__})"
    if sum(len(cell.source) for cell in notebook.cells) > MAX_SOURCE_CHARS:
        return f"the notebook's cells hold more than {MAX_SOURCE_CHARS // 2**20} MiB of text"
    return notebook


def _cleaned(raw: dict) -> dict:
    """The parts of a notebook's JSON that grading reads: cell types, sources, ids, nbgrader metadata."""
    cells = []
    for cell in raw["cells"]:
        if not isinstance(cell, dict):
            raise ValueError("a cell is not an object")
        kept = {"cell_type": cell.get("cell_type"), "source": cell.get("source", ""),
                "metadata": {k: v for k, v in (cell.get("metadata") or {}).items() if k in CELL_METADATA_KEPT}}
        if isinstance(cell.get("id"), str):
            kept["id"] = cell["id"][:64]
        if kept["cell_type"] == "code":
            kept.update(outputs=[], execution_count=None)
        cells.append(kept)
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    return {"cells": cells, "metadata": {k: metadata[k] for k in ("kernelspec", "language_info") if k in metadata},
            "nbformat": raw.get("nbformat", 4), "nbformat_minor": raw.get("nbformat_minor", 5)}


def extra_files(found: list[tuple[str, Lesson, Path]]) -> list[Problem]:
    """A note for every submission folder that holds more than its notebook: the rest is not graded.

    The walk follows no link and stops at ``MAX_DEPTH`` levels and ``MAX_ENTRIES`` entries."""
    notes = []
    for student, lesson, path in found:
        others, seen, stack = [], 0, [(path.parent, 0)]
        while stack and seen < MAX_ENTRIES:
            folder, depth = stack.pop()
            try:
                entries = _entries(folder)
            except OSError:
                continue
            for entry in entries:
                seen += 1
                relative = shown(str(Path(entry.path).relative_to(path.parent)))
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != ".ipynb_checkpoints" and depth + 1 < MAX_DEPTH:
                        stack.append((Path(entry.path), depth + 1))
                elif Path(entry.path) != path:
                    others.append(relative)
        if others:
            shown_files = ", ".join(sorted(others)[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            notes.append(Problem(student, lesson.id,
                                 f"extra files ignored (only the notebook is graded): {shown_files}"))
    return notes
