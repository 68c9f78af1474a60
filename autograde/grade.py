"""``attention-course autograde SUBMISSIONS --out DIR [--jobs N]``: grade a class through nbgrader's gradebook.

``SUBMISSIONS`` is in nbgrader's layout, ``<student>/<lesson>/<notebook>.ipynb``. ``DIR`` becomes an
nbgrader course root (``solutions/``, ``lessons/``, ``submitted/``, ``autograded/``, ``feedback/``,
``gradebook.db``), so an instructor can go on with nbgrader's own tools (formgrader, export), and
receives the results:

- ``scores.csv``: one row per graded cell, ``student,lesson,notebook,grade_id,score,max_score``;
- ``grades.csv``: one row per student and lesson, ``student,lesson,score,max_score``;
- ``problems.csv``: ``student,lesson,graded,reason``: every submission that could not be graded
  (``graded`` no: it scores 0), and every graded one with a note (``graded`` yes): a cell ran past
  the time limit and was interrupted (it scores what its output earns, the rest runs on), a test
  cell was deleted or edited and restored, extra files were ignored, or its feedback page could not
  be written;
- ``feedback/<student>/<lesson>/<notebook>.html``: one feedback page per student and lesson, with
  the notes at the top.

Each submission runs in its own sandbox, ``jobs`` at once, and its test cells are judged outside it
(``execution.py``; ``autograde/THREAT_MODEL.md``). A submission that cannot be graded (not a
notebook, missing, kernel death, ...) never stops the others.
"""

from __future__ import annotations

import csv
import html
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from nbgrader.converters import Autograde
from nbgrader.preprocessors import Execute
from sqlalchemy.exc import SAWarning
from tqdm import tqdm

from autograde.course import (NBGRADER_CONFIG, materialise_source, nbgrader_api, nbgrader_failure,
                                       read_source_notebook)
from autograde.execution import JOBS, SANITIZE, SandboxedExecute, execute_job, prepare_job
from autograde.sandbox import Limits
from autograde.lessons import LESSONS, Lesson


@dataclass(frozen=True)
class CellScore:
    student: str
    lesson: str
    notebook: str
    grade_id: str
    score: float
    max_score: float


@dataclass(frozen=True)
class Problem:
    student: str
    lesson: str
    reason: str


@dataclass
class ClassGrades:
    """What a run of the autograder found: a score for every graded cell, and the problems."""

    cells: list[CellScore] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)  # graded, but something went wrong on the way

    def totals(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(student, lesson) -> (score, max_score)."""
        totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for cell in self.cells:
            totals[cell.student, cell.lesson][0] += cell.score
            totals[cell.student, cell.lesson][1] += cell.max_score
        return {key: (score, max_score) for key, (score, max_score) in totals.items()}

    def table(self) -> str:
        """The class's scores as a plain-text table, one row per student, then the problems."""
        totals = self.totals()
        students = sorted({student for student, _ in totals})
        lessons = [lesson.id for lesson in LESSONS if any(key[1] == lesson.id for key in totals)]
        header = ["student", *lessons, "total"]
        rows = []
        for student in students:
            row, score_sum, max_sum = [student], 0.0, 0.0
            for lesson in lessons:
                if (student, lesson) in totals:
                    score, max_score = totals[student, lesson]
                    row.append(f"{score:g} / {max_score:g}")
                    score_sum, max_sum = score_sum + score, max_sum + max_score
                else:
                    row.append("-")
            rows.append([*row, f"{score_sum:g} / {max_sum:g}"])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * width for width in widths))
        if self.problems:
            lines += ["", f"{len(self.problems)} submission(s) could not be graded (scored 0):"]
            lines += [f"  {p.student} / {p.lesson}: {p.reason}" for p in self.problems]
        if self.notes:
            lines += ["", f"{len(self.notes)} submission(s) graded with a note:"]
            lines += [f"  {p.student} / {p.lesson}: {p.reason}" for p in self.notes]
        return "\n".join(lines)


def graded_cells(project: Path, lesson: Lesson) -> list[str]:
    """Grade ids of the lesson's graded cells, in notebook order."""
    return [
        cell.metadata["nbgrader"]["grade_id"]
        for cell in read_source_notebook(project, lesson).cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    ]


def find_submissions(submissions: Path, lessons: tuple[Lesson, ...]) -> tuple[list[tuple[str, Lesson, Path]], list[Problem]]:
    """Every (student, lesson, notebook path) under ``submissions``, and what is wrong with the rest."""
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder at {submissions}")
    by_id = {lesson.id: lesson for lesson in lessons}
    found, problems = [], []
    for student_dir in sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for lesson_dir in sorted(p for p in student_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            lesson = by_id.get(lesson_dir.name)
            if lesson is None:
                problems.append(Problem(student_dir.name, lesson_dir.name,
                                        f"not a lesson of the course (expected one of: {', '.join(by_id)})"))
                continue
            path = lesson_dir / f"{lesson.notebook}.ipynb"
            if not path.is_file():
                others = sorted(p.name for p in lesson_dir.glob("*.ipynb"))
                found_text = f"; found {', '.join(others)}" if others else "; the folder holds no notebook"
                problems.append(Problem(student_dir.name, lesson.id, f"missing notebook {path.name}{found_text}"))
                continue
            found.append((student_dir.name, lesson, path))
    if not found and not problems:
        raise FileNotFoundError(
            f"no submissions found in {submissions}: expected <student>/<lesson>/<notebook>.ipynb, "
            f"e.g. alice/{lessons[0].id}/{lessons[0].notebook}.ipynb"
        )
    return found, problems


def notebook_problem(path: Path) -> str | None:
    """Why ``path`` is not a notebook nbgrader can grade, or None."""
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # any parse or schema error: report it, grade the others
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"not a valid notebook ({type(error).__name__}: {first_line})"
    return None


def _by_submission(problems: list[Problem]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in problems:
        grouped[p.student, p.lesson].append(p.reason)
    return grouped


def course_secret(out: Path) -> str:
    """The course root's secret for seeding hidden cases (``grading_secret.txt``, made on first use):
    grading in the same folder again draws the same cases; no student can know them beforehand."""
    path = out / "grading_secret.txt"
    if not path.is_file():
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def count_code_cells(path: Path) -> int:
    return sum(cell.cell_type == "code" for cell in nbformat.read(path, as_version=4).cells)


def extra_files(found: list[tuple[str, Lesson, Path]]) -> list[Problem]:
    """A note for every submission folder that holds more than its notebook: the rest is not graded."""
    notes = []
    for student, lesson, path in found:
        others = sorted(str(p.relative_to(path.parent)) for p in path.parent.rglob("*")
                        if p.is_file() and p != path and ".ipynb_checkpoints" not in p.parts)
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            notes.append(Problem(student, lesson.id, f"extra files ignored (only the notebook is graded): {shown}"))
    return notes


def explain_failure(result: dict) -> str:
    """A reason for a failed nbgrader autograde that an instructor can act on."""
    text = (result.get("error") or "") + (result.get("log") or "")
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the kernel died while running the notebook (a crash, os._exit or running out of memory)"
    if "CellTimeoutError" in text or "TimeoutError" in text:
        return "running the notebook timed out"
    return f"nbgrader could not grade it: {nbgrader_failure(result)}"


def timeout_note(autograded: Path, timeout: int) -> str | None:
    """Which cells of an autograded notebook were interrupted at the time limit, or None."""
    notebook = nbformat.read(autograded, as_version=4)
    interrupted = [
        cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index + 1}"
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and any(o.get("output_type") == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs)
    ]
    if not interrupted:
        return None
    return (f"{', '.join(interrupted)} ran past the {timeout} s limit per cell and "
            f"{'was' if len(interrupted) == 1 else 'were'} interrupted; the rest of the notebook ran and was graded")


def write_problem_feedback(out: Path, problem: Problem, notebook: str, max_score: float) -> None:
    """A feedback page for a submission that could not be graded, so every student gets one."""
    folder = out / "feedback" / problem.student / problem.lesson
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{notebook}.html").write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Feedback: "
        f"{html.escape(problem.lesson)}</title></head><body>\n"
        f"<h1>{html.escape(problem.lesson)}: 0 / {max_score:g}</h1>\n"
        f"<p>Your submission could not be graded: {html.escape(problem.reason)}.</p>\n"
        "<p>Check the file you handed in, then ask your instructor to grade it again.</p>\n</body></html>\n"
    )


def add_notes_to_feedback(page: Path, notes: list[str]) -> None:
    """Say at the top of a feedback page what happened to the submission on the way (restored cells, ...)."""
    if not notes or not page.is_file():
        return
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    box = (f'<div style="border:2px solid #c60;padding:0.5em 1em;margin:1em"><b>Notes from the grader</b>'
           f"<ul>{items}</ul></div>")
    text = page.read_text()
    body = re.search(r"<body[^>]*>", text)
    page.write_text(text[:body.end()] + box + text[body.end():] if body else box + text)


def write_csvs(out: Path, grades: ClassGrades) -> None:
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "lesson", "notebook", "grade_id", "score", "max_score"])
        for c in grades.cells:
            writer.writerow([c.student, c.lesson, c.notebook, c.grade_id, f"{c.score:g}", f"{c.max_score:g}"])
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "lesson", "score", "max_score"])
        for (student, lesson), (score, max_score) in sorted(grades.totals().items()):
            writer.writerow([student, lesson, f"{score:g}", f"{max_score:g}"])
    with open(out / "problems.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "lesson", "graded", "reason"])
        for p in grades.problems:
            writer.writerow([p.student, p.lesson, "no", p.reason])
        for p in grades.notes:
            writer.writerow([p.student, p.lesson, "yes", p.reason])


def autograde(project: Path, submissions: Path, out: Path, *, lessons: tuple[Lesson, ...] = LESSONS,
              progress: bool = True, cell_timeout: int | None = None, jobs: int | None = None,
              limits: Limits | None = None) -> ClassGrades:
    """Grade every submission under ``submissions`` into the course root ``out``; see the module doc.

    ``cell_timeout`` (seconds) overrides the limit per cell of ``autograde/nbgrader_config.py``;
    ``jobs`` submissions run at once (default: one per core); ``limits`` bound each one's sandbox
    (default: :class:`Limits`, with the whole run's wall time from the per-cell limit).
    """
    with warnings.catch_warnings():
        # nbgrader's own session handling warns on every new submission; nothing we can act on
        warnings.simplefilter("ignore", SAWarning)
        return _autograde(project, submissions, out, lessons, progress, cell_timeout, jobs, limits)


def _autograde(project: Path, submissions: Path, out: Path, lessons: tuple[Lesson, ...],
               progress: bool, cell_timeout: int | None, jobs: int | None, limits: Limits | None) -> ClassGrades:
    submissions, out = submissions.resolve(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    found, problems = find_submissions(submissions, lessons)
    notes = extra_files(found)
    api = nbgrader_api(project, out, cell_timeout)
    timeout = api.config.Execute.timeout
    shutil.copyfile(project / NBGRADER_CONFIG, out / "nbgrader_config.py")  # `cd out && nbgrader ...` works
    db_url, course_id = api.coursedir.db_url, api.coursedir.course_id
    # nbgrader's autograde, with the sandboxed run in place of its own Execute (execution.py)
    api.config.Autograde.sanitize_preprocessors = list(SANITIZE)
    api.config.Autograde.autograde_preprocessors = [
        SandboxedExecute if step is Execute else step
        for step in Autograde.class_traits()["autograde_preprocessors"].default()]

    running = {lesson.id for _, lesson, _ in found}  # lessons with a notebook to run
    used = (running | {p.lesson for p in problems}) & {l.id for l in lessons}
    cell_ids = {}

    def generate(lesson: Lesson) -> None:
        materialise_source(project, lesson, out)
        result = api.generate_assignment(lesson.id, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment failed for {lesson.id}: {nbgrader_failure(result)}")
        cell_ids[lesson.id] = graded_cells(project, lesson)

    for lesson in lessons:  # those with no notebook to run; the others' just before their first run
        if lesson.id in used - running:
            generate(lesson)
    order = {lesson.id: i for i, lesson in enumerate(lessons)}
    found.sort(key=lambda submission: order[submission[1].id])  # lesson by lesson

    secret = course_secret(out)
    jobs = max(1, jobs or os.cpu_count() or 1)
    threads = max(1, (os.cpu_count() or 1) // jobs)  # each run's share of the cores (torch threads, CPU quota)
    graded: list[tuple[str, Lesson]] = []
    def forget(student: str, lesson_id: str) -> None:
        """Remove an earlier run's results for this submission: files and gradebook entry."""
        for step in ("submitted", "autograded", "feedback"):
            shutil.rmtree(out / step / student / lesson_id, ignore_errors=True)
        with Gradebook(db_url, course_id=course_id) as gb:
            try:
                gb.remove_submission(lesson_id, student)
            except Exception:  # nbgrader's MissingEntry: nothing to remove
                pass

    with tempfile.TemporaryDirectory(prefix="attention-grading-") as scratch, \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            queue = []
            for student, lesson, path in found:  # step 1 for all, so that the pool always has work
                if lesson.id not in cell_ids:  # the pool runs the first lessons' notebooks meanwhile
                    generate(lesson)
                forget(student, lesson.id)
                reason = notebook_problem(path)
                if reason is not None:
                    problems.append(Problem(student, lesson.id, reason))
                    continue
                target = out / "submitted" / student / lesson.id
                target.mkdir(parents=True)
                shutil.copyfile(path, target / path.name)  # only the notebook: kit and cases are the instructor's
                run_limits = limits or Limits(wall_seconds=timeout * (count_code_cells(path) + 5), cpus=threads)
                try:
                    job = prepare_job(target / path.name, out / "solutions" / lesson.id,
                                      Path(scratch) / student / lesson.id, api.config, db_url, lesson, student,
                                      run_limits, secret)
                except Exception as error:  # nbgrader's sanitizing refused it (e.g. broken cell metadata)
                    problems.append(Problem(student, lesson.id, f"nbgrader could not read its cells: {error}"))
                    continue
                job.future = pool.submit(execute_job, job, threads)
                JOBS[student, lesson.id] = job
                queue.append(job)

            for job in tqdm(queue, desc="autograding", unit="notebook", disable=not progress):
                student, lesson = job.student, job.lesson
                result = api.autograde(lesson.id, student, force=True, create=True)
                JOBS.pop((student, lesson.id), None)
                shutil.rmtree(job.workdir, ignore_errors=True)
                notes += [Problem(student, lesson.id, note) for note in job.notes]
                if result["success"]:
                    graded.append((student, lesson))
                    # now, while the pool runs the next submissions: nbgrader's feedback only reads the gradebook
                    feedback = api.generate_feedback(lesson.id, student, force=True)
                    if not feedback["success"]:
                        notes.append(Problem(student, lesson.id, f"feedback not written: {nbgrader_failure(feedback)}"))
                    continue
                forget(student, lesson.id)  # no half-graded submission stays behind
                problems.append(Problem(student, lesson.id, job.reason or explain_failure(result)))
        finally:  # interrupted: runs not started yet are dropped, the running ones end
            pool.shutdown(wait=True, cancel_futures=True)

    grades = ClassGrades(problems=list(problems), notes=notes)
    with Gradebook(db_url, course_id=course_id) as gb:
        for student, lesson in graded:
            note = timeout_note(out / "autograded" / student / lesson.id / f"{lesson.notebook}.ipynb", timeout)
            if note:
                grades.notes.append(Problem(student, lesson.id, note))
            scores = {g.name: g for g in gb.find_submission_notebook(lesson.notebook, lesson.id, student).grades}
            for grade_id in cell_ids[lesson.id]:
                grade = scores[grade_id]
                grades.cells.append(CellScore(student, lesson.id, lesson.notebook, grade_id,
                                              float(grade.score), float(grade.max_score)))
        for problem in problems:
            if problem.lesson not in cell_ids:
                continue  # not a lesson of the course: nothing to score
            lesson = next(l for l in lessons if l.id == problem.lesson)
            notebook = gb.find_notebook(lesson.notebook, lesson.id)
            max_scores = {cell.name: float(cell.max_score) for cell in notebook.grade_cells}
            for grade_id in cell_ids[lesson.id]:
                grades.cells.append(CellScore(problem.student, lesson.id, lesson.notebook, grade_id, 0.0,
                                              max_scores[grade_id]))
            write_problem_feedback(out, problem, lesson.notebook, sum(max_scores.values()))

    for (student, lesson_id), notes_of_one in _by_submission(grades.notes).items():
        notebook = next(l.notebook for l in lessons if l.id == lesson_id)
        add_notes_to_feedback(out / "feedback" / student / lesson_id / f"{notebook}.html", notes_of_one)

    grades.cells.sort(key=lambda c: (c.student, c.lesson, cell_ids[c.lesson].index(c.grade_id)))
    write_csvs(out, grades)
    return grades
