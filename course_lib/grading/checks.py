"""Checking helpers: every test cell of the course calls one of these in one line.

A *case* is a dict: ``{"case": "causal mask, Lq=3, Lk=5", "args": [...], "kwargs": {...},
"expected": tensor, "atol": float, "rtol": float}``. The student's function runs on each case and
its output is compared with the expected one; a failure raises :class:`CheckFailed` with a message
that says which case, what was expected, what came, and where.

Two kinds of output need more than one tensor compared with one tensor:

* ``expected`` a tuple of tensors: the function returns a tuple (e.g. an output and updated
  caches, or ``context, weights``), each element compared in turn, named by the case's ``names``
  (default ``output[i]``);
* a trained model's predictions: with ``"argmax": True`` the output (logits) is reduced by
  ``argmax(-1)`` before comparing, and with ``"min_row_accuracy": a`` it passes when at least a
  fraction ``a`` of its rows (e.g. sequences) equal the expected rows exactly. A ``torch.nn.Module``
  under test runs in eval mode without gradients.

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
NOT_IMPLEMENTED = "not implemented yet: replace the `raise NotImplementedError()` line with your code"


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


def compare(actual: Any, expected: torch.Tensor | tuple, *, atol: float, rtol: float, name: str = "output",
            names: list[str] | None = None) -> str | None:
    """What is wrong with ``actual`` compared with ``expected``, or None when it matches.

    Checked in order: type, shape, dtype, NaN/inf where there should be none, then the values
    (exactly for booleans and integers; within ``atol + rtol * |expected|`` for floats).
    ``expected`` may be a tuple of tensors (a function returning ``context, weights``): then
    ``actual`` must be a tuple of as many tensors, compared one by one and reported by ``names``
    (default ``output[0]``, ``output[1]``, ...).
    """
    if isinstance(expected, (tuple, list)):
        return _compare_tuple(actual, tuple(expected), atol=atol, rtol=rtol, names=names)
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


def _compare_tuple(actual: Any, expected: tuple, *, atol: float, rtol: float,
                   names: list[str] | None) -> str | None:
    names = list(names) if names is not None else [f"output[{i}]" for i in range(len(expected))]
    listing = f"({', '.join(names)})"
    if not isinstance(actual, (tuple, list)):
        return f"expected a tuple of {len(expected)} tensors {listing}, got {_describe(actual)}"
    if len(actual) != len(expected):
        return f"expected a tuple of {len(expected)} tensors {listing}, got a {type(actual).__name__} of {len(actual)}"
    for item, expected_item, item_name in zip(actual, expected, names):
        problem = compare(item, expected_item, atol=atol, rtol=rtol, name=item_name)
        if problem is not None:
            return problem
    return None


def compare_rows(actual: Any, expected: torch.Tensor, *, min_accuracy: float, name: str = "output") -> str | None:
    """What is wrong with ``actual`` when fewer than ``min_accuracy`` of its rows equal ``expected``'s."""
    problem = compare(actual, expected, atol=0.0, rtol=0.0, name=name)
    if problem is None or problem.startswith(f"{name}: expected"):  # exact match, or wrong type/shape/dtype
        return problem
    right = (actual.detach().cpu() == expected).reshape(len(expected), -1).all(dim=1)
    accuracy = right.float().mean().item()
    if accuracy >= min_accuracy:
        return None
    first = int((~right).nonzero()[0])
    return (f"{name}: {accuracy:.1%} of the {len(expected)} rows are entirely right, {min_accuracy:.0%} needed; "
            f"first wrong row {first}: expected {expected[first].tolist()}, got {actual[first].tolist()}")


def compare_translations(actual: Any, expected: list[str], *, min_accuracy: float,
                         sources: list[str] | None = None) -> str | None:
    """What is wrong with the translations ``actual`` when fewer than ``min_accuracy`` are exactly ``expected``."""
    if not isinstance(actual, (list, tuple)) or not all(isinstance(a, str) for a in actual):
        return f"expected a list of {len(expected)} strings (the translations), got {_describe(actual)}"
    if len(actual) != len(expected):
        return f"{len(expected)} sources gave {len(actual)} translations"
    wrong = [i for i, (a, e) in enumerate(zip(actual, expected)) if a != e]
    accuracy = 1 - len(wrong) / len(expected)
    if accuracy >= min_accuracy:
        return None
    examples = "; ".join(f"{sources[i]!r}: expected {expected[i]!r}, got {actual[i]!r}" if sources else
                         f"#{i}: expected {expected[i]!r}, got {actual[i]!r}" for i in wrong[:MAX_REPORTED_FAILURES])
    return (f"{accuracy:.1%} of {len(expected)} translated exactly right, {min_accuracy:.0%} needed; "
            f"some it got wrong: {examples}")


def compare_case(actual: Any, case: dict) -> str | None:
    """What is wrong with ``actual`` as the output of ``case``, or None (see the module's docstring)."""
    expected = case["expected"]
    if isinstance(expected, list) and expected and isinstance(expected[0], str):  # translations
        return compare_translations(actual, expected, min_accuracy=case.get("min_accuracy", 1.0),
                                    sources=case["args"][0] if case.get("args") else None)
    if isinstance(expected, (tuple, list)):
        return compare(actual, tuple(expected), atol=case["atol"], rtol=case["rtol"], names=case.get("names"))
    if case.get("argmax"):
        if not isinstance(actual, torch.Tensor) or not actual.is_floating_point() or actual.dim() < 1:
            return f"output: expected logits, a floating-point tensor (..., vocab), got {_describe(actual)}"
        actual = actual.argmax(dim=-1)
    if "min_row_accuracy" in case:
        return compare_rows(actual, expected, min_accuracy=case["min_row_accuracy"])
    return compare(actual, expected, atol=case["atol"], rtol=case["rtol"])


def _call(fn: Callable, args: list, kwargs: dict, method: str | None = None) -> Any:
    """``fn(*args, **kwargs)``, or ``fn.<method>(...)``; a torch module runs in eval mode, without
    gradients, and is left as it was."""
    target = getattr(fn, method, fn) if method else fn  # e.g. model.translate, or a plain function
    if not isinstance(fn, torch.nn.Module):
        return target(*args, **kwargs)
    was_training = fn.training
    fn.eval()
    try:
        with torch.no_grad():
            return target(*args, **kwargs)
    finally:
        fn.train(was_training)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    """Whether ``b`` still holds the inputs ``a`` (as ``_clone`` copies them, or as the grader reads
    them back from a recording, dict keys as strings); NaN equals NaN. Anything else, e.g. a module
    passed in, counts as the same: its outputs are what is judged."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and b.shape == a.shape and b.dtype == a.dtype
                and (torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, equal_nan=True, atol=0,
                                                                                  rtol=0))))
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(b) == len(a) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_same(v, b[k] if k in b else b.get(str(k))) for k, v in a.items())
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
        actual = _call(fn, args, kwargs, case.get("method"))
    except Exception as error:  # the student's code raised: say what and where
        if _not_implemented(error):
            return NOT_IMPLEMENTED
        return f"raised {type(error).__name__}: {error}"
    if not (_same(args, case["args"]) and _same(kwargs, case["kwargs"])):
        return "modified its input tensors in place; compute a new tensor instead (e.g. x - m, not x -= m)"
    return compare_case(actual, case)


def failure_report(exercise: str, results: list[tuple[str, str | None]], kind: str = "visible") -> str | None:
    """One message for the failing ``(case name, problem)`` results of ``exercise``, or None if none fails."""
    failures = [(name, problem) for name, problem in results if problem is not None]
    if not failures:
        return None
    if failures[0][1] == NOT_IMPLEMENTED and len(failures) == len(results):
        return f"{exercise}: {NOT_IMPLEMENTED}"
    lines = [f"{exercise}: {len(results) - len(failures)} of {len(results)} {kind} cases pass."]
    for case_name, problem in failures[:MAX_REPORTED_FAILURES]:
        lines.append(f"  • case '{case_name}': {problem}")
    if len(failures) > MAX_REPORTED_FAILURES:
        lines.append(f"  … and {len(failures) - MAX_REPORTED_FAILURES} more failing cases.")
    return "\n".join(lines)


def check_cases(fn: Callable, cases: list[dict], *, exercise: str, kind: str = "visible") -> None:
    """Run ``fn`` on every case; raise one CheckFailed describing the first failures, else print a tick."""
    method = cases[0].get("method") if cases else None
    if not callable(getattr(fn, method, None) if method else fn):
        raise CheckFailed(f"{exercise}: expected a {f'model with a {method} method' if method else 'function'}, "
                          f"got {_describe(fn)}")
    report = failure_report(exercise, [(case["case"], run_case(fn, case)) for case in cases], kind)
    if report:
        raise CheckFailed(report)
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


def check_translations(translate: Any, pairs: list[tuple[str, str]], *, min_accuracy: float,
                       exercise: str, kind: str = "visible") -> None:
    """The test of a trained model: run ``translate`` on the sources of ``pairs``, count exact matches.

    ``translate`` maps a list of source strings to a list of translations: a model with a
    ``translate`` method, or the method itself; None means the model was not built yet. The accuracy
    is computed here, from the targets in ``pairs``; the check passes when at least ``min_accuracy``
    of the translations are exactly right.
    """
    if translate is None:
        raise CheckFailed(f"{exercise}: not implemented yet: build and train the model in the cell above")
    translate = getattr(translate, "translate", translate)
    if not callable(translate):
        raise CheckFailed(f"{exercise}: expected a function or method that translates, got {_describe(translate)}")
    sources = [source for source, _ in pairs]
    try:
        translations = list(translate(sources))
    except Exception as error:
        if _not_implemented(error):
            raise CheckFailed(f"{exercise}: not implemented yet: a function the model calls raises "
                              "NotImplementedError") from None
        raise CheckFailed(f"{exercise}: translating raised {type(error).__name__}: {error}") from None
    if len(translations) != len(sources):
        raise CheckFailed(f"{exercise}: {len(sources)} sources gave {len(translations)} translations")
    wrong = [(s, t, out) for (s, t), out in zip(pairs, translations) if out != t]
    accuracy = 1 - len(wrong) / len(pairs)
    if accuracy < min_accuracy:
        examples = "\n".join(f"  • {s!r}: expected {t!r}, got {out!r}" for s, t, out in wrong[:MAX_REPORTED_FAILURES])
        raise CheckFailed(f"{exercise}: {accuracy:.1%} of {len(pairs)} {kind} examples translated exactly right, "
                          f"{min_accuracy:.0%} needed. Some it got wrong:\n{examples}\n  Train longer, or check the "
                          "decoder step and the loss curve.")
    print(f"✓ {exercise}: {accuracy:.1%} of {len(pairs)} {kind} examples translated exactly right "
          f"({min_accuracy:.0%} needed)")
