"""Grading a class end to end through nbgrader: the demo's sample class, graded with every core of the
machine also busy, and broken submissions. Load must never cost a point."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import nbformat
import pytest
from conftest import every_core_busy

from autograde.cli import main
from autograde.demo import fill_in, solution_answers
from autograde.grade import autograde
from autograde.lessons import LESSONS

PROJECT = Path(__file__).resolve().parents[1]
LESSON = LESSONS[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


pytestmark = pytest.mark.slow  # whole classes graded


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`attention-course demo` run once, with every core also running a busy loop: its printed table
    and its output folder."""
    out = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with every_core_busy(), contextlib.redirect_stdout(buffer):
        status = main(["demo", "--out", str(out), "--quiet"])
    return status, buffer.getvalue(), out


def test_demo_exits_cleanly_and_prints_every_sample_student(demo):
    status, printed, _ = demo
    assert status == 0
    for student in ("full_marks", "blank", "partly_right", "wrong"):
        assert any(line.startswith(student) for line in printed.splitlines()), printed
    assert "could not be graded" not in printed, printed


def test_each_sample_submission_earns_exactly_its_expected_cell_scores_with_every_core_busy(demo):
    _, _, out = demo
    expected = {(r["student"], r["lesson"], r["grade_id"]): (float(r["score"]), float(r["max_score"]))
                for r in read_csv(PROJECT / "autograde" / "samples" / "expected_scores.csv")}
    actual = {(r["student"], r["lesson"], r["grade_id"]): (float(r["score"]), float(r["max_score"]))
              for r in read_csv(out / "scores.csv")}
    assert actual == expected


def test_solution_earns_full_marks_and_blank_release_earns_zero(demo):
    _, _, out = demo
    grades = {(r["student"], r["lesson"]): (float(r["score"]), float(r["max_score"]))
              for r in read_csv(out / "grades.csv")}
    for lesson in LESSONS:
        score, max_score = grades["full_marks", lesson.id]
        assert max_score > 0 and score == max_score
        assert grades["blank", lesson.id] == (0.0, max_score)
    assert read_csv(out / "problems.csv") == []


def test_scores_csv_and_grades_csv_agree_and_have_the_documented_columns(demo):
    _, _, out = demo
    scores, grades = read_csv(out / "scores.csv"), read_csv(out / "grades.csv")
    assert list(scores[0]) == ["student", "lesson", "notebook", "grade_id", "score", "max_score"]
    assert list(grades[0]) == ["student", "lesson", "score", "max_score"]
    for row in grades:
        cells = [r for r in scores if (r["student"], r["lesson"]) == (row["student"], row["lesson"])]
        assert sum(float(r["score"]) for r in cells) == float(row["score"])
        assert sum(float(r["max_score"]) for r in cells) == float(row["max_score"])


def test_every_student_gets_a_feedback_page_per_lesson_with_their_score(demo):
    _, _, out = demo
    for row in read_csv(out / "grades.csv"):
        lesson = next(l for l in LESSONS if l.id == row["lesson"])
        page = out / "feedback" / row["student"] / lesson.id / f"{lesson.notebook}.html"
        assert page.is_file(), page
        assert f"(Score: {float(row['score']):.1f} / {float(row['max_score']):.1f})" in page.read_text()


def test_feedback_shows_hidden_test_failures_but_not_the_hidden_tests_code(demo):
    _, _, out = demo
    pages = {row["student"]: (out / "feedback" / row["student"] / LESSON.id / f"{LESSON.notebook}.html").read_text()
             for row in read_csv(out / "grades.csv") if row["lesson"] == LESSON.id}
    for student, page in pages.items():
        assert "BEGIN HIDDEN TESTS" not in page and "record_answers" not in page, student
    # partly_right's Nadaraya-Watson fails the far-from-every-key case, visible and hidden: the hidden one is named
    assert "hidden: queries far from every key" in pages["partly_right"]
    assert "checked by the grader" in pages["full_marks"]


def test_broken_submissions_are_reported_by_name_score_zero_and_do_not_stop_the_others(tmp_path):
    released = nbformat.read(PROJECT / "lessons" / LESSON.id / f"{LESSON.notebook}.ipynb", as_version=4)
    solution_ids = [c.metadata["nbgrader"]["grade_id"] for c in released.cells
                    if c.metadata.get("nbgrader", {}).get("solution")]
    first_solution = solution_ids[0]
    submissions = tmp_path / "submitted"

    def submit(student: str, notebook_name: str = f"{LESSON.notebook}.ipynb") -> Path:
        folder = submissions / student / LESSON.id
        folder.mkdir(parents=True)
        return folder / notebook_name

    nbformat.write(released, submit("blank"))
    submit("bad_json").write_text('{"cells": [')
    nbformat.write(released, submit("misnamed", "my_attempt.ipynb"))
    # os is not among the imports the grader runs (autograde/policy.py): refused before any kernel starts.
    # A kernel that dies mid-run is tests/test_kernel.py's (nothing the policy lets through kills it).
    nbformat.write(fill_in(released, {first_solution: "import os\nos._exit(1)"}), submit("reaches_for_os"))
    # An endless loop in the first answer; the second answer is the solution and still earns its points.
    second = solution_ids[1]
    nbformat.write(fill_in(released, {first_solution: "while True:\n    pass",
                                      second: solution_answers(PROJECT, LESSON)[second]}),
                   submit("loops_forever"))
    (submissions / "stray" / "lesson99").mkdir(parents=True)

    grades = autograde(PROJECT, submissions, tmp_path / "out", progress=False, cell_timeout=20)

    reasons = {(p.student, p.lesson): p.reason for p in grades.problems}
    assert reasons["bad_json", LESSON.id].startswith("not a valid notebook")
    assert reasons["misnamed", LESSON.id] == f"missing notebook {LESSON.notebook}.ipynb; found my_attempt.ipynb"
    assert "not a lesson of the course" in reasons["stray", "lesson99"]
    assert reasons["reaches_for_os", LESSON.id].startswith("it uses code the grader does not run")
    totals = grades.totals()
    max_score = totals["blank", LESSON.id][1]
    for student in ("blank", "bad_json", "misnamed", "reaches_for_os"):
        assert totals[student, LESSON.id] == (0.0, max_score)
    problems = read_csv(tmp_path / "out" / "problems.csv")
    assert {(r["student"], r["lesson"]) for r in problems if r["graded"] == "no"} == set(reasons)

    # graded, with notes: the cells the CPU limit broke score 0, the others count
    notes = {(p.student, p.lesson): p.reason for p in grades.notes}
    assert set(notes) == {("loops_forever", LESSON.id)}
    assert notes["loops_forever", LESSON.id].startswith(
        f"{first_solution} used more than 20 s of CPU time and was interrupted; the rest of the notebook ran")
    assert sorted(r["student"] for r in problems if r["graded"] == "yes") == ["loops_forever"]
    looped = {c.grade_id: c.score for c in grades.cells if c.student == "loops_forever"}
    assert looped[f"{first_solution}_tests"] == 0.0
    assert looped[f"{second}_tests"] > 0.0
    for student in ("bad_json", "misnamed", "reaches_for_os"):
        page = tmp_path / "out" / "feedback" / student / LESSON.id / f"{LESSON.notebook}.html"
        assert "could not be graded" in page.read_text()
