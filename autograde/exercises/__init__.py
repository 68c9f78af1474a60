"""The graded exercises: their test inputs, and the live comparison with the reference library.

Instructor side only: this package never ships to students. Each lesson defines its exercises in a
module named for the lesson (``lesson1_dot_product.py``, ...), from the pieces in ``base.py``, and
is registered in ``LESSON_MODULES`` below. For every exercise there are two sets of inputs. The
*visible* set is small, readable and fixed (seeded by the exercise's name), and aims
at the mistakes students really make: overflow on large logits, mask polarity, a fully masked row,
the missing 1/sqrt(d), Lq != Lk, extra batch dims. The release stores its expected outputs beside
the notebook (``visible_cases.pt``). The *hidden* set is drawn fresh at grading time, with random
sizes and the edge cases (non-contiguous inputs, broadcast masks, float masks with -inf, custom
scale, length 1), and compared with ``course_lib`` live by :func:`check_against_reference`.

Expected outputs are computed by the reference in float64 and cast back to the input's dtype, so
they are as exact as the dtype allows (the rule of flash-attn's ``attention_ref``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import secrets
import zlib
from collections.abc import Callable
from typing import Any

import torch

from autograde.exercises import lesson1_dot_product, lesson2_additive, lesson3_multihead, lesson4_flash
from autograde.exercises.base import Exercise
from course_kit.checks import TOLERANCES, CheckFailed, compare, error_text, failure_report, judge, run_case

# Each lesson's exercises live in a module named after the lesson; register a new one here.
LESSON_MODULES = (lesson1_dot_product, lesson2_additive, lesson3_multihead, lesson4_flash)
EXERCISES: dict[str, Exercise] = {e.name: e for module in LESSON_MODULES for e in module.EXERCISES}


# --- cases ----------------------------------------------------------------------------------------

def _float64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.double()
    if isinstance(value, dict):  # e.g. a model's parameters by name
        return {k: _float64(v) for k, v in value.items()}
    return value


def _float_tensors(values: list) -> list[torch.Tensor]:
    found = []
    for value in values:
        if isinstance(value, dict):
            found += _float_tensors(list(value.values()))
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            found.append(value)
    return found


def _case(exercise: Exercise, hidden: bool, description: str, args: list, kwargs: dict,
          options: dict | None = None) -> dict:
    """One case: the inputs and the reference's output, computed in float64 and cast back.

    A reference may return a tuple of tensors; a NamedTuple's field names then name the outputs in
    failure messages (stored as ``names``, the tuple as a plain tuple so it loads with weights_only).
    ``options``, an optional fourth item of an exercise's input tuples, adds the comparison keys of
    ``checks.compare_case`` (``argmax``, ``min_row_accuracy``, ``min_accuracy``) to the case, and
    ``method`` (call ``fn.method`` rather than ``fn``); an ``expected`` option gives the expected
    output itself (e.g. the target translations), in place of the reference's; ``max_tensor_elements``
    and ``max_matmul_flops`` (with their ``constraint``) limit what the call allocates and multiplies
    (``checks.Measure``), and such a case names no mistakes.
    """
    options = dict(options or {})
    if "max_tensor_elements" in options or "max_matmul_flops" in options:
        # a case that measures memory or products is large to make them plain: the small cases name mistakes
        exercise = dataclasses.replace(exercise, mistakes=())
    if "expected" in options:
        return {"case": description, "hidden": hidden, "args": args, "kwargs": kwargs, "atol": 0.0, "rtol": 0.0,
                **options}
    expected, names = _output(exercise.reference, args, kwargs)
    first_float = next((o for o in _tensors(expected) if o.is_floating_point()), None)
    atol, rtol = TOLERANCES.get(first_float.dtype, (0.0, 0.0)) if first_float is not None else (0.0, 0.0)
    case = {"case": description, "hidden": hidden, "args": args, "kwargs": kwargs, "expected": expected,
            "atol": atol, "rtol": rtol}
    if names is not None:
        case["names"] = names
    mistakes = []
    for mistake in exercise.mistakes:  # only the mistakes this case can tell from the right answer
        try:
            wrong, _ = _output(mistake.reference, args, kwargs)
        except Exception as error:  # a mistake that cannot run on these inputs: recognised by its error
            mistakes.append({"hint": mistake.hint, "error": error_text(error)})
            continue
        if compare(wrong, expected, atol=atol, rtol=rtol) is not None:
            mistakes.append({"hint": mistake.hint, "expected": wrong})
    # two mistakes with the same output (or error) here cannot be told apart by this case: name neither;
    # one mistake written two ways (the same hint) is named once
    mistakes = [m for i, m in enumerate(mistakes) if not any(
        _alike(m, other, atol, rtol) and (other["hint"] != m["hint"] or j < i)
        for j, other in enumerate(mistakes) if j != i)]
    if mistakes:
        case["mistakes"] = mistakes
    return {**case, **options}


def _alike(a: dict, b: dict, atol: float, rtol: float) -> bool:
    """Whether two recorded mistakes give the same output, or raise the same error, on a case."""
    if "error" in a or "error" in b:
        return a.get("error") == b.get("error")
    return compare(a["expected"], b["expected"], atol=atol, rtol=rtol) is None


def _output(reference: Callable, args: list, kwargs: dict) -> tuple[object, list[str] | None]:
    """``reference`` on the inputs, in float64, cast back to the inputs' dtype; with its outputs' names."""
    result = reference(*map(_float64, args), **{k: _float64(v) for k, v in kwargs.items()})
    names = list(result._fields) if hasattr(result, "_fields") else None
    several = isinstance(result, (tuple, list))
    outputs = tuple(result) if several else (result,)
    floats = _float_tensors([*args, *kwargs.values()])
    if floats:
        outputs = tuple(o.to(floats[0].dtype) if isinstance(o, torch.Tensor) and o.is_floating_point() else o
                        for o in outputs)
    return (outputs if several else outputs[0]), names


def _tensors(value: object) -> list[torch.Tensor]:
    return [v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, torch.Tensor)]


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"no exercise called {name!r}; the course has: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def exercises_of(lesson: str) -> list[Exercise]:
    return [e for e in EXERCISES.values() if e.lesson == lesson]


def visible_cases(exercise: str) -> list[dict]:
    """The fixed visible cases of ``exercise`` (seeded by its name: the release is reproducible)."""
    return copy.deepcopy(_visible_cases(exercise))  # a copy: the caller may change it


@functools.cache  # the same for every submission a grading run prepares (Lesson 2's: 20,000 dates drawn)
def _visible_cases(exercise: str) -> list[dict]:
    e = get_exercise(exercise)
    g = torch.Generator().manual_seed(zlib.crc32(e.name.encode()))
    return [_case(e, False, *inputs) for inputs in e.visible_inputs(g)]


def visible_exercise(exercise: str) -> dict:
    """What a notebook's visible test needs of ``exercise``: its cases and the operators it forbids."""
    return {"cases": visible_cases(exercise), "forbidden": list(get_exercise(exercise).forbidden)}


def visible_cases_for_lesson(lesson: str) -> dict[str, dict]:
    """What the release stores as ``visible_cases.pt`` for ``lesson``."""
    return {e.name: visible_exercise(e.name) for e in exercises_of(lesson)}


def hidden_cases(exercise: str, seed: int) -> list[dict]:
    e = get_exercise(exercise)
    g = torch.Generator().manual_seed(seed)
    return [_case(e, True, *inputs) for inputs in e.hidden_inputs(g)]


def exercise_report(exercise: str, cases: list[dict], answers: list) -> str | None:
    """The failure message of ``exercise`` from its answers to ``cases`` (one each), or None: every case
    judged by ``course_kit.checks.judge``, then the exercise's own check of the answers together."""
    report = failure_report(exercise, [(case, judge(answer, case)) for case, answer in zip(cases, answers)])
    check = get_exercise(exercise).check_answers
    if check is not None and report is None:
        problem = check(answers, cases)
        if problem is not None:
            return f"{exercise}: {problem}"
    return report


def check_against_reference(exercise: str, fn: Callable, seed: int | None = None) -> None:
    """The hidden test of ``exercise``: compare ``fn`` with course_lib on fresh inputs and edge cases.

    ``seed`` None draws a fresh one; a failure names it, so the instructor can reproduce the run.
    """
    seed = secrets.randbelow(2**31) if seed is None else seed
    cases = visible_cases(exercise) + hidden_cases(exercise, seed)
    forbidden = get_exercise(exercise).forbidden
    report = exercise_report(exercise, cases, [run_case(fn, case, forbidden) for case in cases])
    if report is not None:
        raise CheckFailed(f"{report}\n  (hidden cases drawn with seed {seed})")
    print(f"✓ {exercise}: all {len(cases)} cases pass, checked against course_lib (seed {seed})")
