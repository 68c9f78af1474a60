"""The catalogue of mistakes students really make, one module per lesson, as the code they write.

Each lesson's module defines ``MISTAKES``: a list of :class:`KnownMistake`, each a student-like
implementation of one exercise with one mistake in it, and the words its visible test's failure must
show (the name of the mistake, e.g. "sqrt(d)"). tests/test_known_mistakes.py runs every one through
the exercise's visible cases, exactly as a student's test cell does: it must fail at least one
visible case, and say so in those words. The hidden tests add fresh inputs; they are never the first
sight of a trap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KnownMistake:
    exercise: str  # the exercise's name (autograde.exercises)
    name: str  # the mistake, in a few words (the test's id)
    answer: Callable[..., Any]  # the student's function (or model), with the mistake in it
    says: str  # what the visible test's failure message must contain
