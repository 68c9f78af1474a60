"""Checking helpers: every test cell of the course calls one of these in one line.

A *case* is a dict: ``{"case": "causal mask, Lq=3, Lk=5", "args": [...], "kwargs": {...},
"expected": tensor, "atol": float, "rtol": float}``. The student's function runs on each case and
its output is compared with the expected one; a failure raises :class:`CheckFailed` with a message
that says which case, what was expected, what came, and where.

This module ships to students with every lesson (the *student kit*), so it imports only the
standard library and torch, and holds no reference implementation: visible tests compare with
expected outputs stored beside the notebook (``visible_cases.pt``), hidden tests with cases the
instructor's library computes at grading time.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

VISIBLE_CASES_FILE = "visible_cases.pt"
MAX_REPORTED_FAILURES = 3


class CheckFailed(AssertionError):
    """A test found a wrong answer. Jupyter shows only the message: no traceback, no test code."""

    def _render_traceback_(self) -> list[str]:  # IPython calls this instead of printing a traceback
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


def _index(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), shape)) if len(shape) else ()


def compare(actual: Any, expected: torch.Tensor | tuple, *, atol: float, rtol: float,
            name: str = "output") -> str | None:
    """What is wrong with ``actual`` compared with ``expected``, or None when it matches.

    Checked in order: type, shape, dtype, NaN/inf where there should be none, then the values
    (exactly for booleans and integers; within ``atol + rtol * |expected|`` for floats). When
    ``expected`` is a tuple of tensors (a function returning several results, e.g. the output
    and the log-sum-exp), ``actual`` must be a tuple or list of as many, compared one by one
    and named ``output[0]``, ``output[1]``, ...
    """
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            return f"{name}: expected a tuple of {len(expected)} tensors, got {_describe(actual)}"
        if len(actual) != len(expected):
            return f"{name}: expected a tuple of {len(expected)} tensors, got {len(actual)} values"
        for i, (a, e) in enumerate(zip(actual, expected)):
            problem = compare(a, e, atol=atol, rtol=rtol, name=f"{name}[{i}]")
            if problem is not None:
                return problem
        return None
    if not isinstance(actual, torch.Tensor):
        return f"{name}: expected a torch.Tensor, got {_describe(actual)}"
    if actual.shape != expected.shape:
        return f"{name}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}"
    if actual.dtype != expected.dtype:
        return f"{name}: expected dtype {expected.dtype}, got {actual.dtype}"
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if not expected.is_floating_point():
        wrong = actual != expected
        if wrong.any():
            first = _index(int(wrong.flatten().nonzero()[0]), expected.shape)
            return (f"{name}: {int(wrong.sum())} of {expected.numel()} entries differ; first at index {first}: "
                    f"expected {expected[first].item()}, got {actual[first].item()}")
        return None
    for bad, label in ((torch.isnan, "NaN"), (torch.isinf, "inf")):
        unexpected = bad(actual) & ~bad(expected)
        if unexpected.any():
            first = _index(int(unexpected.flatten().nonzero()[0]), expected.shape)
            return (f"{name}: {int(unexpected.sum())} {label} value(s) where there should be none; first at index "
                    f"{first} (expected {expected[first].item():.6g}). Look for an overflowing exp, a division "
                    "by zero, or a row whose every entry is masked")
    finite = torch.isfinite(expected)
    if not torch.equal(torch.isfinite(actual), finite) or not torch.equal(actual[~finite], expected[~finite]):
        return f"{name}: infinite values differ from the expected ones"
    error = torch.where(finite, (actual - expected).abs(), torch.zeros_like(actual))
    allowed = atol + rtol * expected.abs()
    if (error > allowed).any():
        worst = _index(int(torch.argmax(error - allowed)), expected.shape)
        return (f"{name}: largest error {error[worst].item():.3g} at index {worst}: expected "
                f"{expected[worst].item():.6g}, got {actual[worst].item():.6g} (tolerance {atol:g} + {rtol:g}·|expected|)")
    return None


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, equal_nan=True, atol=0, rtol=0))
    if isinstance(a, list):
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return all(_same(a[k], b[k]) for k in a)
    return True


def _not_implemented(error: BaseException | None) -> bool:
    """True when ``error`` is, or was raised from, a NotImplementedError (e.g. a stub inside a Triton
    kernel, which Triton's interpreter re-raises as its own error)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, NotImplementedError):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def run_case(fn: Callable, case: dict) -> str | None:
    """What goes wrong when ``fn`` runs on ``case``, or None when its output is right."""
    args, kwargs = _clone(case["args"]), _clone(case["kwargs"])
    try:
        actual = fn(*args, **kwargs)
    except Exception as error:  # the student's code raised: say what and where
        if _not_implemented(error):
            return "not implemented yet: replace the `raise NotImplementedError()` line with your code"
        return f"raised {type(error).__name__}: {error}"
    if not (_same(args, case["args"]) and _same(kwargs, case["kwargs"])):
        return "modified its input tensors in place; compute a new tensor instead (e.g. x - m, not x -= m)"
    return compare(actual, case["expected"], atol=case["atol"], rtol=case["rtol"])


def check_cases(fn: Callable, cases: list[dict], *, exercise: str, kind: str = "visible") -> None:
    """Run ``fn`` on every case; raise one CheckFailed describing the first failures, else print a tick."""
    if not callable(fn):
        raise CheckFailed(f"{exercise}: expected a function, got {_describe(fn)}")
    failures = [(case["case"], problem) for case in cases if (problem := run_case(fn, case)) is not None]
    if failures and failures[0][1].startswith("not implemented yet") and len(failures) == len(cases):
        raise CheckFailed(f"{exercise}: {failures[0][1]}")
    if failures:
        passed = len(cases) - len(failures)
        lines = [f"{exercise}: {passed} of {len(cases)} {kind} cases pass."]
        for case_name, problem in failures[:MAX_REPORTED_FAILURES]:
            lines.append(f"  • case '{case_name}': {problem}")
        if len(failures) > MAX_REPORTED_FAILURES:
            lines.append(f"  … and {len(failures) - MAX_REPORTED_FAILURES} more failing cases.")
        raise CheckFailed("\n".join(lines))
    print(f"✓ {exercise}: all {len(cases)} {kind} cases pass")


def load_visible_cases(exercise: str, path: str = VISIBLE_CASES_FILE) -> list[dict]:
    """The stored visible cases of ``exercise``, from ``path`` beside the notebook."""
    if os.path.exists(path):
        cases = torch.load(path, weights_only=True)
        if exercise not in cases:
            raise CheckFailed(f"{path} has no cases for {exercise!r} (it has: {', '.join(cases)})")
        return cases[exercise]
    try:  # the instructor's source notebook: compute the same cases with the full library
        from course_lib.grading.exercises import visible_cases
    except ImportError:
        raise CheckFailed(
            f"cannot find {path} beside this notebook: it ships with the lesson's folder. "
            "Open the notebook from inside that folder, or download the lesson again."
        ) from None
    return visible_cases(exercise)


def check_exercise(exercise: str, fn: Callable) -> None:
    """The visible test of ``exercise``: run ``fn`` on its stored cases and explain any failure."""
    check_cases(fn, load_visible_cases(exercise), exercise=exercise)
