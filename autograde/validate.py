"""``attention-course validate NOTEBOOK``: run a notebook's visible tests before handing it in.

The notebook runs top to bottom in a fresh kernel, in its own folder, and is not modified. Each
graded cell is scored the way nbgrader's autograder scores it (``nbgrader.utils.determine_grade``:
an error, or anything on stderr, scores 0), and the summary says, per exercise, what failed.
Hidden tests do not exist in a student's copy: passing here is necessary, not sufficient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from tqdm import tqdm

CELL_TIMEOUT_S = 600  # generous: a busy machine slows a cell down; an endless loop still ends


@dataclass(frozen=True)
class CellResult:
    grade_id: str
    score: float
    max_score: float
    message: str  # why it failed; empty when it passed


@dataclass(frozen=True)
class Validation:
    notebook: Path
    cells: list[CellResult]
    other_errors: list[str]  # errors in cells that are not graded (they may explain graded failures)
    edited_locked: list[str]  # read-only cells the student changed (grading restores them)
    crashed: str = ""
    refused: tuple[str, ...] = ()  # code the grader will not run (autograde/policy.py)

    @property
    def passed(self) -> bool:
        return not self.crashed and not self.refused and all(c.score == c.max_score for c in self.cells)

    def summary(self) -> str:
        lines = [f"Validated {self.notebook.name}:"]
        if self.refused:
            lines.append("  ! the grader will not run this notebook, and it would score 0, because of:")
            lines += [f"      {violation}" for violation in self.refused]
        if self.crashed:
            lines.append(f"  the notebook could not run to the end: {self.crashed}")
        for cell in self.cells:
            mark = "✓" if cell.score == cell.max_score else "✗"
            lines.append(f"  {mark} {cell.grade_id:<40} {cell.score:g} / {cell.max_score:g}")
            lines += [f"      {line}" for line in cell.message.splitlines()]
        for error in self.other_errors:
            lines.append(f"  ! {error}")
        for grade_id in self.edited_locked:
            lines.append(f"  ! you edited the read-only cell {grade_id!r}: grading restores the original")
        score = sum(c.score for c in self.cells)
        max_score = sum(c.max_score for c in self.cells)
        verdict = "all visible tests pass" if self.passed else "some visible tests fail"
        lines.append(f"Visible tests: {score:g} / {max_score:g} points, {verdict}. "
                     "Hidden tests run when your instructor grades the lesson.")
        return "\n".join(lines)


def _error_text(cell) -> str:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            return f"{output.ename}: {output.evalue}"
        if output.output_type == "stream" and output.name == "stderr":
            return f"wrote to stderr (nbgrader scores that 0): {output.text.strip()}"
    return ""


def validate(path: Path, progress: bool = True, cell_timeout: int = CELL_TIMEOUT_S) -> Validation:
    """Run the notebook at ``path`` in a fresh kernel and score its graded cells.

    A cell that runs longer than ``cell_timeout`` seconds stops the run; the summary says which.
    """
    from nbgrader.utils import compute_checksum, determine_grade, is_grade, is_locked

    from autograde.course import ProjectNotFound, project_root, read_source_notebook
    from autograde.lessons import LESSONS
    from autograde.policy import check_notebook, instructor_sources

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    notebook = nbformat.read(path, as_version=4)
    refused: tuple[str, ...] = ()
    lesson = next((lesson for lesson in LESSONS if lesson.notebook == path.stem), None)
    if lesson is not None:
        try:
            instructors = instructor_sources(read_source_notebook(project_root(), lesson))
            refused = tuple(str(v) for v in check_notebook(notebook, instructors))
        except ProjectNotFound:  # the course's sources are not here: the grader checks it anyway
            pass
    edited = [
        cell.metadata["nbgrader"]["grade_id"]
        for cell in notebook.cells
        if is_locked(cell) and "checksum" in cell.metadata["nbgrader"]
        and cell.metadata["nbgrader"]["checksum"] != compute_checksum(cell)
    ]
    bar = tqdm(total=len(notebook.cells), desc=f"running {path.name}", unit="cell", disable=not progress)
    running = {"index": 0}

    def started(cell_index: int, **_) -> None:
        running["index"] = cell_index

    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            extra_arguments=["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_execute=started, on_cell_executed=lambda **_: bar.update())
    crashed = ""
    try:
        client.execute()
    except DeadKernelError:
        crashed = "the kernel died (a crash, os._exit, or running out of memory)"
    except CellTimeoutError:
        cell = notebook.cells[running["index"]]
        name = cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {running['index'] + 1}"
        crashed = f"{name} ran longer than {cell_timeout} s (an endless loop?); the cells after it did not run"
    finally:
        bar.close()

    cells, other_errors = [], []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if is_grade(cell):
            # a cell the kernel never reached has no error output; nbgrader would count it as passed
            score, max_score = (determine_grade(cell) if cell.get("execution_count")
                                else (0, cell.metadata["nbgrader"]["points"]))
            cells.append(CellResult(cell.metadata["nbgrader"]["grade_id"], float(score or 0), max_score,
                                    "" if score == max_score else _error_text(cell) or "did not run"))
        elif (error := _error_text(cell)) and not error.startswith("NotImplementedError"):
            other_errors.append(f"cell {index + 1} raised {error}")
    return Validation(path, cells, other_errors, edited, crashed, refused)
