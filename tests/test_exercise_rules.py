"""The rules match the grader: what an exercise forbids is said in that exercise's own text.

An exercise's text is the markdown between the solution cell before it and its own solution cell
(for the first exercise, from the top of the notebook: the lesson's introduction). Each operator in
its ``forbidden`` (keys of ``course_kit.checks.FUSED``) must be named there, by the last part of the
name the grader's message gives it: ``scaled_dot_product_attention``, ``MultiheadAttention``,
``softmax``. And each lesson's introduction states the grader's rules for submitted code
(autograde/policy.py) and the command that checks them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autograde.course import read_source_notebook
from autograde.exercises import get_exercise
from autograde.lessons import LESSONS
from course_kit.checks import FUSED

PROJECT = Path(__file__).resolve().parents[1]
CHECKED_LESSONS = ("lesson2_additive", "lesson3_multihead")


def exercise_texts(lesson) -> dict[str, str]:
    """Each exercise's name -> the markdown of its text (see the module's docstring)."""
    texts, markdown, solution_text = {}, [], ""
    for cell in read_source_notebook(PROJECT, lesson).cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown":
            markdown.append(cell.source)
        elif nbgrader.get("solution"):
            solution_text, markdown = "\n".join(markdown), []
        elif nbgrader.get("grade"):
            for name in re.findall(r'check_exercise\("(\w+)"', cell.source):
                texts[name] = solution_text
    return texts


def spelling(operator: str) -> str:
    """How the exercise's text must name a FUSED operator: ``torch.nn.MultiheadAttention`` -> ``MultiheadAttention``."""
    return FUSED[operator][0].split()[0].rsplit(".", 1)[-1]


CASES = [(lesson, name, operator) for lesson in LESSONS if lesson.id in CHECKED_LESSONS
         for name in exercise_texts(lesson) for operator in get_exercise(name).forbidden]


def test_every_exercise_of_the_checked_lessons_has_a_text():
    for lesson in (lesson for lesson in LESSONS if lesson.id in CHECKED_LESSONS):
        texts = exercise_texts(lesson)
        assert texts and all(text.strip() for text in texts.values()), lesson.id


@pytest.mark.parametrize("lesson, exercise, operator", CASES, ids=[f"{l.id}: {e}: {o}" for l, e, o in CASES])
def test_what_an_exercise_forbids_is_named_in_its_own_text(lesson, exercise, operator):
    assert spelling(operator) in exercise_texts(lesson)[exercise], (
        f"{exercise} forbids {FUSED[operator][0]}, and its text in {lesson.source_path} does not say so")


@pytest.mark.parametrize("lesson", [l for l in LESSONS if l.id in CHECKED_LESSONS], ids=lambda l: l.id)
def test_the_introduction_states_the_graders_rules_for_submitted_code(lesson):
    introduction = read_source_notebook(PROJECT, lesson).cells[0].source
    for rule in ("plain Python on `torch`, `numpy` and `math`", "no other imports", "files", "private",
                 f"`attention-course validate {lesson.notebook}.ipynb`"):
        assert rule in introduction, f"{lesson.id}'s introduction does not say {rule!r}"
