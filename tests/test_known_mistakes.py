"""Every catalogued mistake (tests/mistakes/) fails a visible case of its exercise, with a message that names it."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import mistakes
from autograde.exercises import visible_exercise
from course_kit.checks import CheckFailed, check_cases

CATALOGUE = [mistake for module in pkgutil.iter_modules(mistakes.__path__)
             for mistake in importlib.import_module(f"mistakes.{module.name}").MISTAKES]


def test_the_catalogue_covers_every_lesson():
    lessons = {module.name for module in pkgutil.iter_modules(mistakes.__path__)}
    assert lessons == {"lesson1_dot_product", "lesson2_additive", "lesson3_multihead", "lesson4_flash"}


@pytest.mark.parametrize("mistake", CATALOGUE, ids=lambda m: f"{m.exercise}: {m.name}")
def test_a_known_mistake_fails_a_visible_case_and_is_named(mistake):
    visible = visible_exercise(mistake.exercise)
    with pytest.raises(CheckFailed) as failure:
        check_cases(mistake.answer, visible["cases"], exercise=mistake.exercise, forbidden=tuple(visible["forbidden"]))
    assert mistake.says in str(failure.value), str(failure.value)
