"""Submissions executed in parallel sandboxes, judged outside them, and handed to nbgrader's autograde.

nbgrader's ``autograde`` runs a notebook's cells itself, one submission after another, and scores a
test cell by whether it raised, in the same process as the student's code (which can replace
``torch.allclose`` and pass). Here it keeps every step but that one:

1. :func:`prepare_job` sanitizes the submission with nbgrader's own preprocessors (its autograde's
   first pass, with one repair: outputs cleared, ids deduplicated, locked and test cells
   overwritten, deleted ones added back), and writes a private folder with the notebook, the lesson's files, the
   student kit and the inputs of every graded case (``answers.GRADING_INPUTS_FILE``; never the
   expected outputs, which stay in this process).
2. :func:`execute_job`, on a thread of a pool of ``--jobs``, runs ``execute_notebook.py`` in that
   folder in a sandbox (:mod:`autograde.sandbox`), under resource limits.
3. nbgrader's ``autograde`` then runs as usual with :class:`SandboxedExecute` in place of its
   ``Execute``: it waits for that submission's run, takes its outputs, and replaces each test
   cell's output with the verdict judged here from the recorded answers
   (:mod:`autograde.verdict`). nbgrader's own ``SaveAutoGrades`` scores those outputs and
   writes the gradebook; only this one process ever writes it.
"""

from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch
from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, DeduplicateIds, NbGraderPreprocessor,
                                    OverwriteCells, OverwriteKernelspec)
from nbgrader.utils import compute_checksum

from course_kit.answers import GRADING_INPUTS_FILE
from autograde.release import write_student_kit
from autograde.sandbox import Limits, SandboxResult, run_sandboxed
from autograde.verdict import cell_verdict, grading_cases, recorded_exercises, sandbox_inputs
from autograde.lessons import Lesson

WORKER = Path(__file__).with_name("execute_notebook.py")
MAX_EXECUTED_BYTES = 64 * 2**20  # an executed notebook larger than this is not read back


class SubmissionNotGraded(Exception):
    """The submission's run gave nothing to grade; its job's ``reason`` says why, for the class summary."""


@dataclass
class Job:
    """One submission on its way through the sandbox."""

    student: str
    lesson: Lesson
    workdir: Path
    cases: dict[str, list[dict]]  # exercise -> its graded cases, expected outputs included
    limits: Limits
    notes: list[str] = field(default_factory=list)  # what sanitizing changed, for the summary
    future: Future | None = None  # of a SandboxResult
    reason: str | None = None  # why it could not be graded, once known


# The jobs of the current run, by (student, lesson id): how SandboxedExecute, which nbgrader
# instantiates itself, finds the run that belongs to the notebook it is given.
JOBS: dict[tuple[str, str], Job] = {}


def _graded_cells(notebook) -> dict[str, nbformat.NotebookNode]:
    return {cell.metadata["nbgrader"]["grade_id"]: cell for cell in notebook.cells
            if cell.metadata.get("nbgrader", {}).get("grade")}


class DropEmptyMetadata(NbGraderPreprocessor):
    """Removes the empty ``nbgrader`` metadata that ``DeduplicateIds`` leaves on a dropped duplicate:
    nbgrader's ``OverwriteCells`` would fail on it (KeyError 'grade_id') and the submission with it."""

    def preprocess_cell(self, cell, resources, index):
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


# nbgrader autograde's sanitizing pass, with the one repair above (also set in autograde.py).
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


def prepare_job(submitted: Path, source_dir: Path, workdir: Path, config, db_url: str, lesson: Lesson,
                student: str, limits: Limits, secret: str = "") -> Job:
    """Sanitize ``submitted`` and lay out ``workdir`` for the sandbox (see the module doc, step 1)."""
    notebook = nbformat.read(submitted, as_version=4)
    notebook, notes = sanitize(notebook, config, db_url, lesson, student)
    workdir.mkdir(parents=True)
    for path in source_dir.rglob("*"):  # the lesson's files (visible cases), as nbgrader copies them
        if path.is_file() and path.suffix != ".ipynb":
            target = workdir / path.relative_to(source_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    write_student_kit(workdir)
    exercises = [e for cell in _graded_cells(notebook).values() if cell.cell_type == "code"
                 for e in recorded_exercises(cell.source)]
    cases = {exercise: grading_cases(exercise, student, secret) for exercise in exercises}
    torch.save(sandbox_inputs(cases), workdir / GRADING_INPUTS_FILE)
    nbformat.write(notebook, workdir / "submission.ipynb")
    (workdir / "job.json").write_text(json.dumps({"timeout": config.Execute.timeout,
                                                  "extra_arguments": list(config.Execute.extra_arguments)}))
    return Job(student, lesson, workdir, cases, limits, notes)


def execute_job(job: Job, threads: int) -> SandboxResult:
    """Step 2: run the submission's notebook in its sandbox (on a pool thread)."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "JUPYTER_RUNTIME_DIR": str(job.workdir / ".jupyter"), "IPYTHONDIR": str(job.workdir / ".ipython"),
           # agg: figures are drawn but not encoded as PNGs into the outputs (feedback pages show no plots)
           "MPLCONFIGDIR": str(job.workdir / ".matplotlib"), "MPLBACKEND": "agg", "NBGRADER_EXECUTION": "autograde"}
    return run_sandboxed([sys.executable, "-I", str(WORKER), str(job.workdir)], job.workdir,
                         limits=job.limits, read_only=[WORKER], env=env)


def why_not_executed(job: Job, result: SandboxResult) -> str | None:
    """Why the run left no notebook to grade, or None."""
    error_file = job.workdir / "execution_error.txt"
    if result.timed_out:
        return f"running the notebook took longer than {job.limits.wall_seconds:g} s in all and was stopped"
    if error_file.is_file():
        error = error_file.read_text(errors="replace")[:500]
        if "DeadKernelError" in error or "Kernel died" in error:
            return "the kernel died while running the notebook (a crash, os._exit, or a signal)"
        return f"the notebook could not be run: {error.splitlines()[0] if error else 'no message'}"
    executed = job.workdir / "executed.ipynb"
    if not executed.is_file():
        last = [line for line in result.output.splitlines() if line.strip()][-1:] or ["no output"]
        return f"the grading process ended without a result (exit status {result.returncode}): {last[0][:300]}"
    if executed.stat().st_size > MAX_EXECUTED_BYTES:
        return f"its outputs are too large ({executed.stat().st_size // 2**20} MiB after trimming)"
    return None


class SandboxedExecute(NbGraderPreprocessor):
    """nbgrader's Execute step, served by the sandboxed run of the same notebook (module doc, step 3)."""

    def preprocess(self, nb, resources):
        key = (resources["nbgrader"]["student"], resources["nbgrader"]["assignment"])
        job = JOBS[key]
        result = job.future.result()
        job.reason = job.reason or why_not_executed(job, result)
        if job.reason:
            raise SubmissionNotGraded(job.reason)
        try:
            executed = nbformat.read(job.workdir / "executed.ipynb", as_version=4)
        except Exception as error:
            job.reason = f"its executed notebook could not be read back ({type(error).__name__})"
            raise SubmissionNotGraded(job.reason) from None
        if [c.cell_type for c in executed.cells] != [c.cell_type for c in nb.cells]:
            job.reason = "its executed notebook does not have the cells of the submission"
            raise SubmissionNotGraded(job.reason)
        answer = ""  # the student's code the next test cell checks: the last solution cell before it
        for cell, ran in zip(nb.cells, executed.cells):
            if cell.cell_type != "code":
                continue
            cell.outputs, cell.execution_count = ran.get("outputs", []), ran.get("execution_count")
            if cell.metadata.get("nbgrader", {}).get("solution"):
                answer = cell.source
            if cell.metadata.get("nbgrader", {}).get("grade"):
                verdict = cell_verdict(cell.source, job.cases, job.workdir, answer)
                if verdict is not None:  # the grader's verdict, not what the kernel printed
                    interrupted = [o for o in cell.outputs if o.get("ename") == "CellTimeoutError"]
                    cell.outputs = interrupted + verdict
        return nb, resources
