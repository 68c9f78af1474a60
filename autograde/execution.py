"""Submissions executed in parallel sandboxes, judged outside them, and handed to nbgrader's autograde.

nbgrader's ``autograde`` runs a notebook's cells itself, one submission after another, and scores a
test cell by whether it raised, in the same process as the student's code (which can replace
``torch.allclose`` and pass). Here it keeps every step but that one:

1. :func:`prepare_job` sanitizes the submission with nbgrader's own preprocessors (its autograde's
   first pass, with one repair: outputs cleared, ids deduplicated, locked and test cells
   overwritten, deleted ones added back), draws each exercise's cases (hidden ones seeded by the
   course's secret, the student, the exercise and the student's code, :func:`verdict.grading_seed`)
   and lays out a private job folder: the lesson's files and the student kit, nothing else.
2. :func:`execute_job`, on a thread of a pool of ``--jobs``, starts a kernel in a sandbox in that
   folder (:mod:`autograde.kernel`) and sends it the notebook cell by cell. Just before a test cell
   that records answers, the inputs of its exercises' cases (never the expected outputs) are put
   where the kit's ``record_answers`` finds them, in a folder the sandbox can only read; just after
   it, they are removed and the answers moved out of the job folder. So no code of the student's
   can see a hidden input before the function under test is called with it, and nothing it prints
   after that reaches the feedback: those cells' outputs are withheld. At the end every process of
   the run is killed, and only then are the answers read (:func:`verdict.load_answers`).
3. nbgrader's ``autograde`` then runs as usual with :class:`SandboxedExecute` in place of its
   ``Execute``: it takes that run's outputs, and replaces every test cell's outputs with the verdict
   judged here (:mod:`autograde.verdict`); no score comes from anything the student's code wrote.
   nbgrader's own ``SaveAutoGrades`` scores those outputs and writes the gradebook; only this one
   process ever writes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    NbGraderPreprocessor,
    OverwriteCells,
    OverwriteKernelspec,
)
from nbgrader.utils import compute_checksum
from traitlets import Float

from autograde.feedback import make_markdown_inert
from autograde.kernel import Budget, CellRun, KernelStartFailed, SandboxedKernel
from autograde.lessons import Lesson
from autograde.policy import check_notebook
from autograde.release import write_student_kit
from autograde.sandbox import Limits
from autograde.verdict import cell_verdict, grading_cases, recorded_exercises, sandbox_inputs
from course_kit.answers import ANSWERS_ENV, INPUTS_ENV

INPUTS_FILE = "inputs.pt"
WITHHELD = ("(output withheld: this cell ran after your code had been given the grader's hidden inputs; "
            "only the grader's verdicts are shown from here on)\n")


class SubmissionNotGraded(Exception):
    """The submission's run gave nothing to grade; its job's ``reason`` says why, for the class summary."""


@dataclass
class RunRecord:
    """What the sandboxed run of one submission did, as the grader saw it."""

    cells: dict[int, CellRun] = field(default_factory=dict)  # by the cell's index in the notebook
    answers: dict[str, Path] = field(default_factory=dict)  # exercise -> its answers, moved out of the sandbox
    exposed_from: int | None = None  # the first cell that ran with hidden inputs given out
    stopped: str = ""  # why the run stopped before the last cell
    cpu_seconds: float = 0.0


@dataclass
class Job:
    """One submission on its way through the sandbox."""

    student: str
    lesson: Lesson
    notebook: nbformat.NotebookNode  # sanitized: what runs, and what nbgrader's autograde will score
    workdir: Path  # the sandbox's only writable folder
    private: Path  # the grader's folder of this job, outside the sandbox's writable one
    cases: dict[str, list[dict]]  # exercise -> its graded cases, expected outputs included
    limits: Limits
    budget: Budget
    extra_arguments: list[str]
    instructors: set[str] = field(default_factory=set)  # the sources of the instructor's own cells
    notes: list[str] = field(default_factory=list)  # what sanitizing changed, for the summary
    refused: str = ""  # why the grader will not run it (code that reaches around the grader: policy.py)
    future: Future | None = None  # of a RunRecord
    reason: str | None = None  # why it could not be graded, once known


# The jobs of the current run, by (student, lesson id): how SandboxedExecute, which nbgrader
# instantiates itself, finds the run that belongs to the notebook it is given.
JOBS: dict[tuple[str, str], Job] = {}


def _graded_cells(notebook) -> dict[str, nbformat.NotebookNode]:
    return {cell.metadata["nbgrader"]["grade_id"]: cell for cell in notebook.cells
            if cell.metadata.get("nbgrader", {}).get("grade")}


def _is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and bool(cell.metadata.get("nbgrader", {}).get("grade"))


class DropEmptyMetadata(NbGraderPreprocessor):
    """Removes the empty ``nbgrader`` metadata that ``DeduplicateIds`` leaves on a dropped duplicate:
    nbgrader's ``OverwriteCells`` would fail on it (KeyError 'grade_id') and the submission with it."""

    def preprocess_cell(self, cell, resources, index):
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


# nbgrader autograde's sanitizing pass, with the one repair above (also set in grade.py).
SANITIZE = (ClearOutput, DeduplicateIds, DropEmptyMetadata, OverwriteKernelspec, OverwriteCells, CheckCellMetadata)


def sanitize(notebook, config, db_url: str, lesson: Lesson, student: str) -> tuple[object, list[str]]:
    """nbgrader autograde's first pass over ``notebook``, and what it had to restore, in words."""
    resources = {"nbgrader": {"db_url": db_url, "assignment": lesson.id, "notebook": lesson.notebook,
                              "student": student}}
    before = _graded_cells(notebook)
    # The release recorded each test cell's checksum (nbgrader's, over source, type and points).
    edited = sorted(g for g, cell in before.items()
                    if cell.metadata["nbgrader"].get("checksum") not in (None, compute_checksum(cell)))
    ids = [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in notebook.cells]
    duplicated = sorted({i for i in ids if i and ids.count(i) > 1})
    for preprocessor in SANITIZE:
        notebook, resources = preprocessor(config=config).preprocess(notebook, resources)
    notes = []
    if missing := sorted(set(_graded_cells(notebook)) - set(before)):
        notes.append(f"test cell(s) {', '.join(missing)} had been deleted and were restored")
    if edited:
        notes.append(f"test cell(s) {', '.join(edited)} had been edited and were restored")
    if duplicated:
        notes.append(f"cell id(s) {', '.join(duplicated)} appeared more than once; the copies were dropped")
    return notebook, notes


def student_code(notebook) -> str:
    """Every code cell the student may have changed (all but the locked ones), in order."""
    return "\n# %%\n".join(cell.source for cell in notebook.cells
                           if cell.cell_type == "code" and not cell.metadata.get("nbgrader", {}).get("locked"))


def prepare_job(notebook, source_dir: Path, folder: Path, config, db_url: str, lesson: Lesson, student: str,
                limits: Limits, budget: Budget, secret: str, instructors: set[str]) -> Job:
    """Sanitize ``notebook`` and lay out the job's folders (see the module doc, step 1). ``instructors``
    holds the sources of the instructor's own cells, which :mod:`autograde.policy` does not check."""
    notebook, notes = sanitize(notebook, config, db_url, lesson, student)
    violations = check_notebook(notebook, instructors)
    workdir, private = folder / "work", folder / "grader"
    workdir.mkdir(parents=True)
    (private / "inputs").mkdir(parents=True)
    (private / "answers").mkdir()
    for path in source_dir.rglob("*"):  # the lesson's files (visible cases), as nbgrader copies them
        if path.is_file() and path.suffix != ".ipynb":
            target = workdir / path.relative_to(source_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    write_student_kit(workdir)
    digest = hashlib.sha256(student_code(notebook).encode()).hexdigest()
    exercises = [e for cell in notebook.cells if _is_test_cell(cell) for e in recorded_exercises(cell.source)]
    cases = {exercise: grading_cases(exercise, student, secret, digest) for exercise in exercises}
    job = Job(student, lesson, notebook, workdir, private, cases, limits, budget, list(config.Execute.extra_arguments),
              instructors, notes)
    if violations:
        shown = "; ".join(str(v) for v in violations[:5]) + (f"; and {len(violations) - 5} more"
                                                              if len(violations) > 5 else "")
        job.refused = f"it uses code the grader does not run (autograde/policy.py): {shown}"
    return job


def execute_job(job: Job) -> RunRecord:
    """Step 2: run the submission's notebook in its sandbox, cell by cell (on a pool thread)."""
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # the same floating-point path on every grader
           "JUPYTER_RUNTIME_DIR": str(job.workdir / ".jupyter"), "IPYTHONDIR": str(job.workdir / ".ipython"),
           # agg: figures are drawn but not encoded as PNGs (feedback pages keep text only)
           "MPLCONFIGDIR": str(job.workdir / ".matplotlib"), "MPLBACKEND": "agg", "NBGRADER_EXECUTION": "autograde",
           INPUTS_ENV: str(job.private / "inputs" / INPUTS_FILE), ANSWERS_ENV: str(job.workdir / "answers")}
    record = RunRecord()
    for attempt in (1, 2):  # a kernel that fails to start is the grader's trouble: try once more
        kernel = SandboxedKernel(job.workdir, limits=job.limits, env=env, extra_arguments=job.extra_arguments,
                                 read_only=[job.private / "inputs"], budget=job.budget)
        try:
            kernel.wait_until_ready()
            break
        except KernelStartFailed as error:
            kernel.stop()
            if attempt == 2:
                record.stopped = f"the grader could not start a kernel for it ({error}); grade it again"
                return record
        except BaseException:
            kernel.stop()
            raise
    start = time.monotonic()
    with kernel:  # stopped (every process of the run killed) however this ends
        for index, cell in enumerate(job.notebook.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            exercises = recorded_exercises(cell.source) if _is_test_cell(cell) else []
            if exercises:
                torch.save(sandbox_inputs({e: job.cases[e] for e in exercises}), job.private / "inputs" / INPUTS_FILE)
                record.exposed_from = index if record.exposed_from is None else record.exposed_from
            cpu_left = job.budget.notebook_cpu_seconds - record.cpu_seconds
            clock_left = job.budget.clock_allowance(record.cpu_seconds, notebook=True) - (time.monotonic() - start)
            run = kernel.run_cell(cell.source, cpu_left, clock_left)
            record.cells[index] = run
            record.cpu_seconds += run.cpu_seconds
            if exercises:
                (job.private / "inputs" / INPUTS_FILE).unlink(missing_ok=True)
                for exercise in exercises:
                    _move_out(job.workdir / "answers" / f"{exercise}.pt", job.private / "answers" / f"{exercise}.pt")
            if kernel.stopped:
                record.stopped = kernel.stopped
                break
            if record.cpu_seconds >= job.budget.notebook_cpu_seconds:
                record.stopped = f"the notebook used its {job.budget.notebook_cpu_seconds:g} s of CPU time"
                break
    # every process of the run is dead now; only the answers moved out of its reach are read
    record.answers = {e: job.private / "answers" / f"{e}.pt" for e in job.cases}
    return record


def _move_out(source: Path, target: Path) -> None:
    """Move what the sandbox left at ``source`` (a file, or whatever it put there) out of its reach; a
    link is moved as a link (``rename`` follows none) and later refused by :func:`verdict.load_answers`."""
    try:
        mode = os.lstat(source).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        return
    try:
        os.rename(source, target)  # the job's two folders share one file system
    except OSError:
        pass


class SandboxedExecute(NbGraderPreprocessor):
    """nbgrader's Execute step, served by the sandboxed run of the same notebook (module doc, step 3).

    Its two settings (``autograde/nbgrader_config.py``) bound every submission's run in CPU seconds:
    a busy grading server does not count against a student (:mod:`autograde.kernel`)."""

    cell_cpu_seconds = Float(60.0, help="CPU time a cell may use before it is interrupted").tag(config=True)
    notebook_cpu_seconds = Float(600.0, help="CPU time a whole notebook may use").tag(config=True)

    def preprocess(self, nb, resources):
        key = (resources["nbgrader"]["student"], resources["nbgrader"]["assignment"])
        job = JOBS[key]
        record = job.future.result()
        if not record.cells:
            job.reason = job.reason or record.stopped or "the notebook did not run"
            raise SubmissionNotGraded(job.reason)
        if [c.cell_type for c in job.notebook.cells] != [c.cell_type for c in nb.cells]:
            job.reason = "its notebook changed between sanitizing and scoring"
            raise SubmissionNotGraded(job.reason)
        answer = ""  # the student's code the next test cell checks: the last solution cell before it
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            run = record.cells.get(index, CellRun(reason=record.stopped))
            if cell.metadata.get("nbgrader", {}).get("solution"):
                answer = cell.source
            if _is_test_cell(cell):
                cell.outputs = cell_verdict(cell.source, job.cases, record.answers, answer, run)
            elif record.exposed_from is not None and index > record.exposed_from and run.outputs:
                # the grader's own words stay: why the cell was interrupted
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=WITHHELD)] + [
                    o for o in run.outputs[-1:] if run.status == "interrupted" and o.get("ename") == "CellTimeoutError"]
            else:
                cell.outputs = run.outputs
            cell.execution_count = run.execution_count
        make_markdown_inert(nb, job.instructors)  # what formgrader and the feedback render of the student's
        return nb, resources


def run_notes(job: Job, record: RunRecord) -> list[str]:
    """What the instructor should know about a run that was graded: cells interrupted, cells not run."""
    names = {index: cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index + 1}"
             for index, cell in enumerate(job.notebook.cells)}
    notes = [f"{names[index]} {run.reason}; the rest of the notebook ran and was graded"
             for index, run in sorted(record.cells.items()) if run.status == "interrupted"]
    if record.stopped and record.cells:
        last = max(record.cells)
        notes.append(f"the run stopped at {names[last]}: {record.stopped}; the cells after it did not run "
                     "and score 0")
    return notes


