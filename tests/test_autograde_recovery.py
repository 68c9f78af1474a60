"""A grading run killed half way: the gradebook stays consistent, the next run completes it, re-runs agree."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograde.demo import fill_in, solution_answers
from autograde.grade import autograde
from autograde.lessons import LESSONS

pytestmark = pytest.mark.slow  # whole classes graded

PROJECT = Path(__file__).resolve().parents[1]
LESSON = LESSONS[0]
EXPECTED = {"a_full": 10.0, "b_blank": 0.0, "c_full": 10.0}


def write_class(root: Path) -> Path:
    released = nbformat.read(PROJECT / "lessons" / LESSON.id / f"{LESSON.notebook}.ipynb", as_version=4)
    full = fill_in(released, solution_answers(PROJECT, LESSON))
    for student, notebook in (("a_full", full), ("b_blank", released), ("c_full", full)):
        folder = root / student / LESSON.id
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / f"{LESSON.notebook}.ipynb")
    return root


def test_a_run_killed_half_way_leaves_a_consistent_gradebook_and_the_next_run_completes_it(tmp_path):
    submissions, out = write_class(tmp_path / "submitted"), tmp_path / "out"
    command = [str(Path(sys.executable).parent / "attention-course"), "autograde", str(submissions), "--out", str(out),
               "--lesson", LESSON.id, "--jobs", "1", "--quiet"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "autograded" / "a_full" / LESSON.id / f"{LESSON.notebook}.ipynb"
    deadline = time.monotonic() + 300
    while not first.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be killed half way"
    run.send_signal(signal.SIGKILL)  # after the first submission's grades, during the second's
    run.wait()
    assert not (out / "grades.csv").exists()

    with sqlite3.connect(out / "gradebook.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", course_id="attention-course") as gb:
        for submission in gb.assignment_submissions(LESSON.id):  # every row nbgrader wrote reads back
            assert submission.student_id in EXPECTED and submission.max_score == 10

    for _ in range(2):  # the next run completes it; one more gives the same grades
        grades = autograde(PROJECT, submissions, out, lessons=(LESSON,), jobs=2, progress=False)
        assert {student: score for (student, _), (score, _) in grades.totals().items()} == EXPECTED
        assert not grades.problems
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", course_id="attention-course") as gb:
        assert {s.student_id: s.score for s in gb.assignment_submissions(LESSON.id)} == EXPECTED
