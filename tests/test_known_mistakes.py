"""Every catalogued mistake (tests/mistakes/) fails a visible case of its exercise, with a message that names it."""

from __future__ import annotations

import functools
import importlib
import pkgutil

import mistakes
import pytest

from autograde.exercises import EXERCISES, get_exercise, visible_exercise
from course_kit.checks import CheckFailed, check_cases

CATALOGUE = [mistake for module in pkgutil.iter_modules(mistakes.__path__)
             for mistake in importlib.import_module(f"mistakes.{module.name}").MISTAKES]


def test_the_catalogue_covers_every_lesson():
    lessons = {module.name for module in pkgutil.iter_modules(mistakes.__path__)}
    assert lessons == {"lesson1_dot_product", "lesson2_additive", "lesson3_multihead", "lesson4_flash"}


def _failure(mistake) -> str:
    visible = visible_exercise(mistake.exercise)
    with pytest.raises(CheckFailed) as failure:
        check_cases(mistake.answer, visible["cases"], exercise=mistake.exercise, forbidden=tuple(visible["forbidden"]))
    return str(failure.value)


@pytest.mark.parametrize("mistake", CATALOGUE,
                         ids=lambda m: f"{get_exercise(m.exercise).lesson}: {m.exercise}: {m.name}")
def test_a_known_mistake_fails_a_visible_case_and_is_named(mistake):
    message = _failure(mistake)
    assert mistake.says in message, message


@functools.cache
def _failures_of(exercise: str) -> tuple[str, ...]:
    return tuple(_failure(mistake) for mistake in CATALOGUE if mistake.exercise == exercise)


HINTED = [(exercise, mistake.hint) for exercise in EXERCISES.values() for mistake in exercise.mistakes]


@pytest.mark.parametrize("exercise, hint", HINTED,
                         ids=[f"{exercise.lesson}: {exercise.name}: {hint[:50]}" for exercise, hint in HINTED])
def test_every_hint_an_exercise_gives_is_earned_by_a_catalogued_mistake(exercise, hint):
    """A hint that no catalogued mistake earns is a trap no test has seen fire: a mistaken reference with
    a bug of its own (one that raises, say, names an error no student raises) hints nobody."""
    assert any(hint in message for message in _failures_of(exercise.name)), (
        f"no catalogued mistake of {exercise.name} (tests/mistakes/) is told {hint!r}")
