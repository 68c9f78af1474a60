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
import os
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

from autograde.course import NBGRADER_CONFIG, materialise_source, nbgrader_api, nbgrader_failure, read_source_notebook
from autograde.execution import JOBS, SANITIZE, SandboxedExecute, execute_job, prepare_job, run_notes
from autograde.feedback import add_notes, sanitize_page, write_problem_page
from autograde.kernel import Budget
from autograde.lessons import LESSONS, Lesson
from autograde.policy import instructor_sources
from autograde.sandbox import Limits
from autograde.submissions import Problem, extra_files, find_submissions, read_notebook, shared_files, shown


@dataclass(frozen=True)
class CellScore:
    student: str
    lesson: str
    notebook: str
    grade_id: str
    score: float
    max_score: float


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
            lines += [f"  {shown(p.student)} / {shown(p.lesson)}: {shown(p.reason)}" for p in self.problems]
        if self.notes:
            lines += ["", f"{len(self.notes)} submission(s) graded with a note:"]
            lines += [f"  {shown(p.student)} / {shown(p.lesson)}: {shown(p.reason)}" for p in self.notes]
        return "\n".join(lines)


def graded_cells(project: Path, lesson: Lesson) -> list[str]:
    """Grade ids of the lesson's graded cells, in notebook order."""
    return [
        cell.metadata["nbgrader"]["grade_id"]
        for cell in read_source_notebook(project, lesson).cells
        if cell.metadata.get("nbgrader", {}).get("grade")
    ]


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


def explain_failure(result: dict) -> str:
    """A reason for a failed nbgrader autograde that an instructor can act on."""
    text = (result.get("error") or "") + (result.get("log") or "")
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the kernel died while running the notebook (a crash, os._exit or running out of memory)"
    if "CellTimeoutError" in text or "TimeoutError" in text:
        return "running the notebook timed out"
    return f"nbgrader could not grade it: {nbgrader_failure(result)}"


def spreadsheet_safe(value: str) -> str:
    """A CSV cell that no spreadsheet reads as a formula (OWASP's CSV injection advice: a value
    starting with = + - @, a tab or a carriage return gets a leading apostrophe), control
    characters escaped."""
    value = shown(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_csvs(out: Path, grades: ClassGrades) -> None:
    def rows(path: Path, header: list[str], records) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([spreadsheet_safe(str(value)) for value in record] for record in records)

    rows(out / "scores.csv", ["student", "lesson", "notebook", "grade_id", "score", "max_score"],
         [(c.student, c.lesson, c.notebook, c.grade_id, f"{c.score:g}", f"{c.max_score:g}") for c in grades.cells])
    rows(out / "grades.csv", ["student", "lesson", "score", "max_score"],
         [(student, lesson, f"{score:g}", f"{max_score:g}")
          for (student, lesson), (score, max_score) in sorted(grades.totals().items())])
    rows(out / "problems.csv", ["student", "lesson", "graded", "reason"],
         [(p.student, p.lesson, "no", p.reason) for p in grades.problems]
         + [(p.student, p.lesson, "yes", p.reason) for p in grades.notes])


def autograde(project: Path, submissions: Path, out: Path, *, lessons: tuple[Lesson, ...] = LESSONS,
              progress: bool = True, cell_timeout: int | None = None, jobs: int | None = None,
              limits: Limits | None = None) -> ClassGrades:
    """Grade every submission under ``submissions`` into the course root ``out``; see the module doc.

    ``cell_timeout`` (seconds of CPU time) overrides ``SandboxedExecute.cell_cpu_seconds`` of
    ``autograde/nbgrader_config.py``; ``jobs`` submissions run at once (default: one per core);
    ``limits`` bound each one's sandbox (default: :class:`Limits` with one core per run).
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
    shared = shared_files(found)
    problems += shared
    found = [f for f in found if (f[0], f[1].id) not in {(p.student, p.lesson) for p in shared}]
    notes = extra_files(found)
    api = nbgrader_api(project, out)
    limits_config = SandboxedExecute(config=api.config)
    budget = Budget(cell_cpu_seconds=float(cell_timeout or limits_config.cell_cpu_seconds),
                    notebook_cpu_seconds=float(limits_config.notebook_cpu_seconds))
    shutil.copyfile(project / NBGRADER_CONFIG, out / "nbgrader_config.py")  # `cd out && nbgrader ...` works
    db_url, course_id = api.coursedir.db_url, api.coursedir.course_id
    # nbgrader's autograde, with the sandboxed run in place of its own Execute (execution.py)
    api.config.Autograde.sanitize_preprocessors = list(SANITIZE)
    api.config.Autograde.autograde_preprocessors = [
        SandboxedExecute if step is Execute else step
        for step in Autograde.class_traits()["autograde_preprocessors"].default()]

    running = {lesson.id for _, lesson, _ in found}  # lessons with a notebook to run
    used = (running | {p.lesson for p in problems}) & {l.id for l in lessons}
    cell_ids, instructors = {}, {}

    def generate(lesson: Lesson) -> None:
        materialise_source(project, lesson, out)
        result = api.generate_assignment(lesson.id, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment failed for {lesson.id}: {nbgrader_failure(result)}")
        cell_ids[lesson.id] = graded_cells(project, lesson)
        instructors[lesson.id] = instructor_sources(read_source_notebook(project, lesson))

    for lesson in lessons:  # those with no notebook to run; the others' just before their first run
        if lesson.id in used - running:
            generate(lesson)
    order = {lesson.id: i for i, lesson in enumerate(lessons)}
    found.sort(key=lambda submission: order[submission[1].id])  # lesson by lesson

    secret = course_secret(out)
    jobs = max(1, jobs or os.cpu_count() or 1)
    run_limits = limits or Limits(cpus=1.0)  # one core per run; every run computes on one thread
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
            for number, (student, lesson, path) in enumerate(found):  # step 1 for all: the pool always has work
                if lesson.id not in cell_ids:  # the pool runs the first lessons' notebooks meanwhile
                    generate(lesson)
                forget(student, lesson.id)
                notebook = read_notebook(path)
                if isinstance(notebook, str):
                    problems.append(Problem(student, lesson.id, notebook))
                    continue
                target = out / "submitted" / student / lesson.id
                target.mkdir(parents=True)
                nbformat.write(notebook, target / path.name)  # only the cleaned notebook; kit and cases are ours
                try:
                    job = prepare_job(notebook, out / "solutions" / lesson.id, Path(scratch) / f"job{number}",
                                      api.config, db_url, lesson, student, run_limits, budget, secret,
                                      instructors[lesson.id])
                except Exception as error:  # nbgrader's sanitizing refused it (e.g. broken cell metadata)
                    problems.append(Problem(student, lesson.id,
                                            f"nbgrader could not read its cells ({type(error).__name__})"))
                    continue
                if job.refused:
                    problems.append(Problem(student, lesson.id, job.refused))
                    shutil.rmtree(job.workdir.parent, ignore_errors=True)
                    continue
                job.future = pool.submit(execute_job, job)
                JOBS[student, lesson.id] = job
                queue.append(job)

            for job in tqdm(queue, desc="autograding", unit="notebook", disable=not progress):
                student, lesson = job.student, job.lesson
                result = api.autograde(lesson.id, student, force=True, create=True)
                JOBS.pop((student, lesson.id), None)
                shutil.rmtree(job.workdir.parent, ignore_errors=True)
                notes += [Problem(student, lesson.id, note) for note in job.notes]
                if result["success"]:
                    graded.append((student, lesson))
                    notes += [Problem(student, lesson.id, note) for note in run_notes(job, job.future.result())]
                    # now, while the pool runs the next submissions: nbgrader's feedback only reads the gradebook
                    feedback = api.generate_feedback(lesson.id, student, force=True)
                    sanitize_page(out / "feedback" / student / lesson.id / f"{lesson.notebook}.html")
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
            write_problem_page(out / "feedback" / problem.student / lesson.id / f"{lesson.notebook}.html",
                               lesson.id, problem.reason, sum(max_scores.values()))

    for (student, lesson_id), notes_of_one in _by_submission(grades.notes).items():
        notebook = next(l.notebook for l in lessons if l.id == lesson_id)
        add_notes(out / "feedback" / student / lesson_id / f"{notebook}.html", notes_of_one)

    grades.cells.sort(key=lambda c: (c.student, c.lesson, cell_ids[c.lesson].index(c.grade_id)))
    write_csvs(out, grades)
    return grades
