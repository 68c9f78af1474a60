"""The grader against an adversarial class (tests/adversarial_corpus.py), graded in one run.

Each corpus entry must earn exactly its expected score on every graded cell, be reported with its
reason or note, and get a feedback page that says why. Then: the run left the instructor's files,
the other submissions and the gradebook as they were, and no process a submission started.
"""

from __future__ import annotations

import hashlib
import html
import os
import time
import uuid
from pathlib import Path

import pytest
from adversarial_corpus import (
    LESSON,
    POINTS,
    UNSAFE_NAMES,
    Context,
    corpus,
    remove_deep_tree,
    write_corpus,
    write_unsafe_names,
)
from bs4 import BeautifulSoup
from nbgrader.api import Gradebook

from autograde.grade import autograde

pytestmark = pytest.mark.slow  # whole classes graded

PROJECT = Path(__file__).resolve().parents[1]
ENTRIES = corpus()
# What a submission tries to overwrite (adversarial_corpus.attack_files), and the lesson's own files.
INSTRUCTOR_FILES = [LESSON.source_path, "autograde/nbgrader_config.py", f"lessons/{LESSON.id}/visible_cases.pt",
                    "autograde/verdict.py"]


def digests(paths: list[Path]) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def files_below(folder: Path, depth: int = 8) -> list[Path]:
    """The plain files below ``folder``, links not followed, ``depth`` levels down (the corpus holds a
    chain of 1,100 nested folders, which pathlib's rglob would recurse into until it crashes)."""
    found, stack = [], [(folder, 0)]
    while stack:
        current, level = stack.pop()
        for entry in os.scandir(current):
            if entry.is_dir(follow_symlinks=False) and level < depth:
                stack.append((Path(entry.path), level + 1))
            elif entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return sorted(found)


def processes_with(text: str) -> list[str]:
    """The command lines of the running processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The whole corpus graded in one call, with what was on disk before and after."""
    root = tmp_path_factory.mktemp("adversarial")
    ctx = Context(project=PROJECT, submissions=root / "submissions", out=root / "out",
                  marker=f"attention-corpus-{uuid.uuid4().hex}")
    try:
        write_corpus(ctx, ENTRIES)
        write_unsafe_names(ctx)
        watched = [PROJECT / path for path in INSTRUCTOR_FILES] + files_below(ctx.submissions)
        before = digests(watched)
        start = time.monotonic()
        grades = autograde(PROJECT, ctx.submissions, ctx.out, lessons=(LESSON,), jobs=2, cell_timeout=10,
                           progress=False)
        seconds = time.monotonic() - start
        time.sleep(0.5)  # anything the sandbox killed has gone from /proc
        yield {"ctx": ctx, "grades": grades, "before": before, "after": digests([p for p in watched if p.exists()]),
               "watched": watched, "seconds": seconds, "survivors": processes_with(ctx.marker)}
    finally:
        remove_deep_tree(ctx)


def reasons(found, student: str) -> list[str]:
    return [p.reason for p in found if p.student == student]


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.student, marks=[pytest.mark.xfail(reason=e.known_issue,
                                                                                            strict=True)]
                                                if e.known_issue else []) for e in ENTRIES])
def test_corpus_entry_is_graded_as_expected(graded, entry):
    grades, out = graded["grades"], graded["ctx"].out
    scores = {c.grade_id: c.score for c in grades.cells if c.student == entry.student}
    problems, notes = reasons(grades.problems, entry.student), reasons(grades.notes, entry.student)
    context = f"{entry.student} ({entry.what}): problems {problems}, notes {notes}"
    assert scores == entry.expected_scores(), context
    if entry.problem is None:
        assert problems == [], context
    else:
        assert len(problems) == 1 and entry.problem in problems[0], context
    if entry.note is None:
        assert notes == [], context
    else:
        assert any(entry.note in note for note in notes), context
    page = out / "feedback" / entry.student / LESSON.id / f"{LESSON.notebook}.html"
    assert page.is_file(), context
    shown = entry.feedback or entry.problem
    if shown is not None:
        text = html.unescape(page.read_text())
        assert shown in text, f"{context}: {shown!r} not in its feedback page"
    for absent in entry.absent:
        assert absent not in page.read_text(), f"{context}: {absent!r} is in its feedback page"
    if entry.inert:
        assert live_content(page.read_text()) == [], context


def live_content(page: str) -> list[str]:
    """What in a feedback page could run in the instructor's browser, besides the page's own MathJax."""
    soup = BeautifulSoup(page, "html.parser")
    found = [f"<{tag.name}>" for tag in soup.find_all(["script", "iframe", "object", "embed", "form", "base"])
             if not (tag.name == "script" and ("mathjax" in (tag.get("src") or "").lower()
                                               or tag.get("type") == "text/x-mathjax-config"))]
    for tag in soup.find_all(True):
        found += [f"<{tag.name} {name}>" for name in tag.attrs if name.lower().startswith("on")]
        for name in ("href", "src", "action", "formaction", "xlink:href"):
            value = "".join(str(tag.get(name) or "").split()).lower()
            if value.startswith(("javascript:", "vbscript:", "data:text")):
                found.append(f"<{tag.name} {name}={value[:30]}>")
    return found


def test_the_corpus_is_large_and_graded_in_one_run(graded):
    assert len(ENTRIES) >= 28 and len({e.student for e in ENTRIES}) == len(ENTRIES)
    graded_students = {c.student for c in graded["grades"].cells}
    assert graded_students == {e.student for e in ENTRIES}
    print(f"\n{len(ENTRIES)} submissions graded in {graded['seconds']:.0f} s")


def test_instructor_files_and_other_submissions_are_untouched(graded):
    assert graded["after"] == graded["before"], [
        str(p) for p in graded["watched"] if graded["before"][p] != graded["after"].get(p)]
    assert not Path("/root/attention-corpus-was-here").exists()


def test_gradebook_holds_exactly_the_reported_scores(graded):
    grades, ctx = graded["grades"], graded["ctx"]
    ungraded = {p.student for p in grades.problems}
    with Gradebook(f"sqlite:///{ctx.out / 'gradebook.db'}", course_id="attention-course") as gb:
        students = {s.id for s in gb.students}
        in_gradebook = {s.student.id for s in gb.find_assignment(LESSON.id).submissions}
        assert in_gradebook == {e.student for e in ENTRIES} - ungraded
        assert students >= in_gradebook
        for student in in_gradebook:
            cells = {g.name: float(g.score)
                     for g in gb.find_submission_notebook(LESSON.notebook, LESSON.id, student).grades}
            assert cells == {c.grade_id: c.score for c in grades.cells if c.student == student}, student
            assert {g.name: float(g.max_score) for g in gb.find_submission_notebook(
                LESSON.notebook, LESSON.id, student).grades} == {k: float(v) for k, v in POINTS.items()}


def test_no_process_started_by_a_submission_survives_the_run(graded):
    assert graded["survivors"] == []
    assert processes_with(graded["ctx"].marker) == []


def test_unsafe_student_names_are_reported_escaped_and_skipped(graded):
    grades, out = graded["grades"], graded["ctx"].out
    skipped = [p for p in grades.problems if "cannot be a student id in nbgrader" in p.reason]
    assert len(skipped) == len(UNSAFE_NAMES)
    assert not any(c.student in UNSAFE_NAMES for c in grades.cells)
    table = grades.table()
    assert "\x1b" not in table and "\nfake summary line" not in table and "\\x1b[31mred\\nfake" in table
    problems = (out / "problems.csv").read_text()
    assert "\x1b" not in problems and "\n'=HYPERLINK" not in problems
    for line in problems.splitlines()[1:]:
        assert not line.startswith(("=", "+", "-", "@")), line
    assert "'=HYPERLINK" in problems and "'-cmd" in problems
