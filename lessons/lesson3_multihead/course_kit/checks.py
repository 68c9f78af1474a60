"""Checking helpers: every test cell of the course calls one of these in one line.

A *case* is a dict: ``{"case": "causal mask, Lq=3, Lk=5", "hidden": False, "args": [...],
"kwargs": {...}, "expected": tensor, "atol": float, "rtol": float}``. One path judges every answer,
in a notebook and in the grader alike:

1. :func:`run_case` calls the function under test on a copy of the case's inputs and returns its
   *answer*: the output (or the error it raised), the forbidden operators it called, and whether it
   changed its inputs in place;
2. :func:`judge` says what is wrong with that answer, or None;
3. :func:`failure_report` lists every case, passing and failing, so the pattern shows
   ("scale=0.5 passes, the default scale fails").

The visible test of a notebook (:func:`check_exercise`) runs all three in the kernel. While grading,
``record_answers`` (:mod:`course_kit.answers`) saves the answers of step 1 and the grader runs
steps 2 and 3 outside the student's sandbox, on the same functions.

Outputs that need more than one tensor compared with one tensor:

* ``expected`` a tuple of tensors: the function returns a tuple (``context, weights``, say), each
  element compared in turn, named by the case's ``names`` (default ``output[i]``);
* ``expected`` a list of strings: translations, right when at least ``min_accuracy`` of them are
  exactly the expected ones;
* a trained model's predictions: with ``"argmax": True`` the output (logits) is reduced by
  ``argmax(-1)``, and with ``"min_row_accuracy": a`` it passes when at least a fraction ``a`` of its
  rows (sequences) equal the expected rows exactly. A ``torch.nn.Module`` under test runs in eval
  mode without gradients.

A failure of a hidden case never quotes a value: the values derive from inputs the student must not
see. This module is part of the student kit: it imports only the standard library and torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import tracemalloc
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

VISIBLE_CASES_FILE = "visible_cases.pt"
# (atol, rtol) by dtype of an expected output: an answer passes within atol + rtol * |expected|. The
# expected outputs are computed in float64 and rounded (flash-attn's attention_ref rule), so float32
# allows the rounding of a plain implementation; booleans and integers compare exactly.
TOLERANCES = {torch.float16: (2e-3, 1e-2), torch.bfloat16: (2e-2, 2e-2), torch.float32: (2e-5, 1e-4),
              torch.float64: (1e-10, 1e-8)}
MAX_DETAILED_FAILURES = 3
NOT_IMPLEMENTED = "not implemented yet: replace the `raise NotImplementedError()` line with your code"
KIT_GRADER = "course_kit.grader"  # entry points of the installed grader (pyproject.toml), for the instructor

# The fused operators an exercise can forbid: the name the student sees, the Python functions that
# reach it, and the ATen operators it dispatches to (for the grader's profiler, answers.py).
FUSED: dict[str, tuple[str, tuple[Callable, ...], tuple[str, ...]]] = {
    "scaled_dot_product_attention": (
        "torch.nn.functional.scaled_dot_product_attention",
        (torch.nn.functional.scaled_dot_product_attention,),
        ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product"),
    ),
    "multihead_attention": (
        "torch.nn.MultiheadAttention",
        (torch.nn.functional.multi_head_attention_forward, torch._native_multi_head_attention),
        ("aten::_native_multi_head_attention",),
    ),
    "softmax": (
        "torch.softmax (or log_softmax)",
        (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, torch.log_softmax,
         torch.nn.functional.log_softmax, torch.Tensor.log_softmax, torch.nn.functional.softmin),
        ("aten::_softmax", "aten::_log_softmax", "aten::_safe_softmax", "aten::softmax", "aten::log_softmax",
         "aten::_masked_softmax", "aten::_sparse_softmax", "aten::_sparse_log_softmax"),
    ),
    # A backward written by hand may not ask autograd for the answer; its engine's events name the rest.
    "autograd": (
        "torch.autograd.grad (or .backward())",
        (torch.autograd.grad, torch.autograd.backward, torch.Tensor.backward),
        ("autograd::engine::evaluate_function",),
    ),
}


class CheckFailed(AssertionError):
    """A test found a wrong answer. Jupyter shows only the message: no traceback, no test code."""

    def _render_traceback_(self) -> list[str]:  # IPython calls this instead of printing a traceback
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class ForbiddenCall(RuntimeError):
    """The function under test called a fused operator its exercise asks you to write yourself."""


class Forbid(TorchFunctionMode):
    """Stops at a forbidden torch function, however it was named or imported; ``seen`` lists them."""

    def __init__(self, forbidden: list[str] | tuple[str, ...]):
        super().__init__()
        self.functions = {fn: FUSED[key][0] for key in forbidden for fn in FUSED[key][1]}
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        try:
            name = self.functions.get(func)
        except TypeError:  # an unhashable callable: not one of ours
            name = None
        if name is not None:
            self.seen.append(name)
            raise ForbiddenCall(f"{name} is not allowed in this exercise")
        return func(*args, **(kwargs or {}))


class Measure(TorchDispatchMode):
    """What a call allocates and computes, seen at the level of torch's operators: the largest tensor
    any operator returned (not a view of another), and the multiply-adds of its matrix products.

    Work done outside torch is measured too, as memory: ``outside_torch_bytes`` is the peak of what
    Python objects and numpy arrays held during the call, above what they held before it
    (``tracemalloc``, which numpy reports its arrays' data to). A score matrix built in numpy or as
    Python lists shows there, not among torch's tensors."""

    PRODUCTS = {"aten.mm.default", "aten.bmm.default", "aten.addmm.default", "aten.baddbmm.default",
                "aten.addbmm.default", "aten.matmul.default"}

    def __init__(self, outside_torch: bool = True) -> None:
        super().__init__()
        self.largest: tuple[int, ...] = ()
        self.largest_elements = 0
        self.matmul_flops = 0
        self.outside_torch = outside_torch
        self.outside_torch_bytes = 0
        self._tracing_started = False
        self._baseline = 0

    def __enter__(self):
        if not self.outside_torch:
            return super().__enter__()
        self._tracing_started = not tracemalloc.is_tracing()
        if self._tracing_started:
            tracemalloc.start()
        self._baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return super().__enter__()

    def __exit__(self, *exc_info):
        try:
            return super().__exit__(*exc_info)
        finally:
            if self.outside_torch:
                self.outside_torch_bytes = max(0, tracemalloc.get_traced_memory()[1] - self._baseline)
                if self._tracing_started:
                    tracemalloc.stop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name in self.PRODUCTS:
            a, b = (args[-2], args[-1]) if name.startswith("aten.add") or name.startswith("aten.badd") else args[:2]
            batch = a.shape[0] if a.dim() == 3 else 1
            self.matmul_flops += 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
        if not getattr(func, "is_view", False):
            for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(tensor, torch.Tensor) and tensor.numel() > self.largest_elements:
                    self.largest_elements, self.largest = tensor.numel(), tuple(tensor.shape)
        return out


# --- step 1: the answer ---------------------------------------------------------------------------

def run_case(fn: Any, case: dict, forbidden: tuple[str, ...] = ()) -> dict:
    """What ``fn`` does on ``case``: ``{"output": ...}`` or ``{"error": ..., "not_implemented": ...}``,
    with the forbidden operators it called and whether it changed its inputs in place.

    ``fn`` runs on copies of the inputs (``fn.<method>`` when the case names one); a module runs in
    eval mode without gradients and is left as it was. The output is kept as plain tensors,
    containers and scalars: what ``torch.load(weights_only=True)`` reads back.
    """
    if _constrained(case):
        # A first call, not measured: torch imports hundreds of modules on a dispatch mode's first use
        # (40 MB of Python objects), and an operator can import more on its first call. Those are
        # not the answer's memory; the second call, measured, finds them loaded.
        with contextlib.suppress(Exception), Forbid(forbidden), Measure(outside_torch=False):
            _call(fn, _clone(case["args"]), _clone(case["kwargs"]), case.get("method"))
    args, kwargs = _clone(case["args"]), _clone(case["kwargs"])
    mode, measure = Forbid(forbidden), Measure() if _constrained(case) else contextlib.nullcontext()
    answer: dict[str, Any] = {}
    try:
        with mode, measure:
            answer["output"] = _plain(_call(fn, args, kwargs, case.get("method")))
    except Exception as error:  # the student's code raised: the judge says what
        answer["error"] = error_text(error)
        answer["error_type"] = type(error).__name__
        answer["not_implemented"] = _not_implemented(error)
    if isinstance(measure, Measure):
        answer["largest_tensor"], answer["matmul_flops"] = list(measure.largest), measure.matmul_flops
        answer["outside_torch_bytes"] = measure.outside_torch_bytes
    answer["forbidden"] = sorted(set(mode.seen))
    answer["inputs_changed"] = not (_same(case["args"], args) and _same(case["kwargs"], kwargs))
    return answer


def error_text(error: BaseException) -> str:
    """How an answer records the error it raised, and how a known mistake's error is recorded to match it."""
    return f"{type(error).__name__}: {error}"[:2000]


def _constrained(case: dict) -> bool:
    return "max_tensor_elements" in case or "max_matmul_flops" in case


def _call(fn: Callable, args: list, kwargs: dict, method: str | None = None) -> Any:
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


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).clone()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] if isinstance(value, list) else tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"unsupported": type(value).__name__}


def _same(a: Any, b: Any) -> bool:
    """Whether ``b`` still holds the inputs ``a`` (NaN equals NaN). Anything but tensors and their
    containers counts as the same: a module passed in is judged by its outputs."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and b.shape == a.shape and b.dtype == a.dtype
                and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(b) == len(a) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_same(v, b.get(k)) for k, v in a.items())
    return True


def _not_implemented(error: BaseException | None) -> bool:
    """True when ``error`` is, or was raised from, a NotImplementedError (a stub inside a Triton
    kernel, say, which Triton's interpreter re-raises as its own error)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, NotImplementedError):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


# --- step 2: the judgement ------------------------------------------------------------------------

def judge(answer: Any, case: dict) -> str | None:
    """What is wrong with ``answer`` (from :func:`run_case`) to ``case``, or None."""
    hidden = case.get("hidden", False)
    if not isinstance(answer, dict):
        return "no readable answer was recorded"
    if answer.get("forbidden"):
        calls = ", ".join(str(name) for name in answer["forbidden"])
        return f"calls {calls}, which this exercise does not allow: the exercise is to write it yourself"
    if "error" in answer:
        if answer.get("not_implemented"):
            return NOT_IMPLEMENTED
        # a hidden case's error message may quote its inputs: name the exception only
        raised = f"raised {answer.get('error_type', 'an error')}" if hidden else f"raised {answer['error']}"
        return _with_hints(raised, answer, case)
    if answer.get("inputs_changed"):
        return "modified its input tensors in place; compute a new tensor instead (e.g. x - m, not x -= m)"
    output = answer.get("output")
    if isinstance(output, dict) and set(output) == {"unsupported"}:
        return f"returned a {output['unsupported']}, which is not an answer the grader can compare"
    if _constrained(case) and (broken := constraint_problem(answer, case)) is not None:
        return broken
    problem = compare_case(output, case)
    return None if problem is None else _with_hints(problem, answer, case)


# What a measured call may hold outside torch (Measure): two float64 copies of the largest tensor it
# may allocate, and at least 128 KiB, for the Python objects any call creates (an honest tiled answer
# in torch holds a few KiB; the first call in a process up to about 35 KiB).
OUTSIDE_TORCH_BYTES_PER_ELEMENT = 16
OUTSIDE_TORCH_FLOOR_BYTES = 128 * 1024


def constraint_problem(answer: dict, case: dict) -> str | None:
    """Which constraint of ``case`` the call broke, and by how much, or None (see :class:`Measure`)."""
    largest, limit = answer.get("largest_tensor"), case.get("max_tensor_elements")
    if limit is not None:
        if not isinstance(largest, list):
            return "its memory use was not measured"
        if math.prod(largest) > limit:
            shape = " x ".join(map(str, largest))
            return (f"allocated a {shape} tensor; at most {limit:,} elements are allowed here "
                    f"({case.get('constraint', 'the constraint of the exercise')})")
        held = answer.get("outside_torch_bytes")
        allowed = max(OUTSIDE_TORCH_BYTES_PER_ELEMENT * limit, OUTSIDE_TORCH_FLOOR_BYTES)
        if not isinstance(held, int):
            return "its memory use outside torch was not measured"
        if held > allowed:
            return (f"held {held:,} bytes in numpy arrays or Python objects at once; at most {allowed:,} are "
                    f"allowed here, where torch's tensors may hold {limit:,} elements "
                    f"({case.get('constraint', 'the constraint of the exercise')})")
    flops, limit = answer.get("matmul_flops"), case.get("max_matmul_flops")
    if limit is not None:
        if not isinstance(flops, int):
            return "its matrix products were not counted"
        if flops > limit:
            return (f"its matrix products took {flops:,} multiply-adds x 2, {flops / limit:.2f}x the most allowed "
                    f"({case.get('constraint', 'the constraint of the exercise')})")
    return None


def _with_hints(problem: str, answer: dict, case: dict) -> str:
    """``problem`` followed by the hints of the known mistakes of ``case`` that ``answer`` (a wrong one) repeats.

    A mistake is recorded as the output it gives (``expected``) or, when it cannot run on the
    case's inputs, as the error it raises (``error``, e.g. a weight applied untransposed): an answer
    repeats it when its output matches, or when it raised that very error."""
    hints: list[str] = []
    for mistake in case.get("mistakes", ()):
        if "error" in mistake:
            repeated = answer.get("error") == mistake["error"]
        else:
            repeated = "error" not in answer and _matches(answer.get("output"), mistake["expected"], case)
        if repeated and mistake["hint"] not in hints:  # two ways to one wrong output: said once
            hints.append(mistake["hint"])
    return problem if not hints else problem.rstrip(".") + "".join(f". {hint}" for hint in hints)


def _matches(output: Any, mistaken: Any, case: dict) -> bool:
    """Whether ``output`` is what a known mistake gives on this case."""
    return compare(output, tuple(mistaken) if isinstance(mistaken, list) else mistaken,
                   atol=case["atol"], rtol=case["rtol"], names=case.get("names")) is None


def compare_case(actual: Any, case: dict) -> str | None:
    """What is wrong with ``actual`` as the output of ``case``, or None (see the module's docstring)."""
    expected, quote = case.get("expected"), not case.get("hidden", False)
    if expected is None:  # an answer only the grader's check of the whole exercise judges
        return None
    if isinstance(expected, list) and expected and isinstance(expected[0], str):  # translations
        sources = case["args"][0] if quote and case.get("args") else None
        return compare_translations(actual, expected, min_accuracy=case.get("min_accuracy", 1.0), sources=sources,
                                    quote=quote)
    if isinstance(expected, (tuple, list)):
        return compare(actual, tuple(expected), atol=case["atol"], rtol=case["rtol"], names=case.get("names"),
                       quote=quote)
    if case.get("argmax"):
        if not isinstance(actual, torch.Tensor) or not actual.is_floating_point() or actual.dim() < 1:
            return f"output: expected logits, a floating-point tensor (..., vocab), got {_describe(actual)}"
        actual = actual.argmax(dim=-1)
    if "min_row_accuracy" in case:
        return compare_rows(actual, expected, min_accuracy=case["min_row_accuracy"], quote=quote)
    return compare(actual, expected, atol=case["atol"], rtol=case["rtol"], quote=quote)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    if isinstance(value, (list, tuple, dict)):  # never the repr of a large container
        return f"{type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {str(value)[:80]!r}" if isinstance(value, (str, int, float, bool)) else \
        type(value).__name__


def _index(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), shape)) if len(shape) else ()


def compare(actual: Any, expected: torch.Tensor | tuple, *, atol: float, rtol: float, name: str = "output",
            names: list[str] | None = None, quote: bool = True) -> str | None:
    """What is wrong with ``actual`` compared with ``expected``, or None when it matches.

    Checked in order: type, shape, dtype, NaN/inf where there should be none, then the values
    (exactly for booleans and integers; within ``atol + rtol * |expected|`` for floats; NaN where
    NaN is expected matches). ``expected`` may be a tuple of tensors: then ``actual`` must be a tuple
    of as many tensors, compared one by one and reported by ``names``. With ``quote`` False the
    message gives no value and no index (a hidden case's values are not shown).
    """
    if isinstance(expected, (tuple, list)):
        return _compare_tuple(actual, tuple(expected), atol=atol, rtol=rtol, names=names, quote=quote)
    if not isinstance(actual, torch.Tensor):
        return f"{name}: expected a torch.Tensor, got {_describe(actual)}"
    if actual.shape != expected.shape:
        return f"{name}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}"
    if actual.dtype != expected.dtype:
        return f"{name}: expected dtype {expected.dtype}, got {actual.dtype}"
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if not expected.is_floating_point():
        wrong = actual != expected
        if not wrong.any():
            return None
        first = _index(int(wrong.flatten().nonzero()[0]), expected.shape)
        where = (f"; first at index {first}: expected {expected[first].item()}, got {actual[first].item()}"
                 if quote else "")
        return f"{name}: {int(wrong.sum())} of {expected.numel()} entries differ{where}"
    for bad, label in ((torch.isnan, "NaN"), (torch.isinf, "inf")):
        unexpected = bad(actual) & ~bad(expected)
        if unexpected.any():
            first = _index(int(unexpected.flatten().nonzero()[0]), expected.shape)
            where = f"; first at index {first} (expected {expected[first].item():.6g})" if quote else ""
            return (f"{name}: {int(unexpected.sum())} {label} value(s) where there should be none{where}. Look for "
                    "an overflowing exp (subtract the maximum first), a division by zero, or a row whose every "
                    "entry is masked")
    if not torch.equal(actual.isnan(), expected.isnan()):
        return f"{name}: NaN expected where the output has a number"
    special = ~torch.isfinite(expected)
    if not torch.equal(actual[special & ~expected.isnan()], expected[special & ~expected.isnan()]) \
            or (torch.isinf(actual) & ~special).any():
        return f"{name}: infinite values differ from the expected ones"
    finite = torch.isfinite(expected)
    error = torch.where(finite, (actual - expected).abs(), torch.zeros_like(actual))
    allowed = atol + rtol * expected.abs()
    if not (error > allowed).any():
        return None
    worst = _index(int(torch.argmax(error - allowed)), expected.shape)
    tolerance = f"(tolerance {atol:g} + {rtol:g}·|expected|)"
    if not quote:
        return f"{name}: values differ; largest error {error[worst].item():.3g} {tolerance}"
    return (f"{name}: largest error {error[worst].item():.3g} at index {worst}: expected "
            f"{expected[worst].item():.6g}, got {actual[worst].item():.6g} {tolerance}{_ratio_hint(actual, expected)}")


def _ratio_hint(actual: torch.Tensor, expected: torch.Tensor) -> str:
    """A hint when the output is the expected one times a constant (a missing or extra scale)."""
    scale = (expected * expected).sum().item()
    if not math.isfinite(scale) or scale == 0:
        return ""
    ratio = (actual * expected).sum().item() / scale  # least-squares fit actual ~ ratio * expected
    if not math.isfinite(ratio) or abs(ratio - 1) < 0.05 or ratio <= 0:
        return ""
    residual = (actual - ratio * expected).abs().max().item()
    if residual > 1e-3 * expected.abs().max().item():
        return ""
    return f". The whole output is {ratio:.3g}x the expected one: is a scale factor missing or applied twice?"


def _compare_tuple(actual: Any, expected: tuple, *, atol: float, rtol: float,
                   names: list[str] | None, quote: bool) -> str | None:
    names = list(names) if names is not None else [f"output[{i}]" for i in range(len(expected))]
    listing = f"({', '.join(names)})"
    if not isinstance(actual, (tuple, list)):
        return f"expected a tuple of {len(expected)} tensors {listing}, got {_describe(actual)}"
    if len(actual) != len(expected):
        return f"expected a tuple of {len(expected)} tensors {listing}, got a {type(actual).__name__} of {len(actual)}"
    for item, expected_item, item_name in zip(actual, expected, names):
        problem = compare(item, expected_item, atol=atol, rtol=rtol, name=item_name, quote=quote)
        if problem is not None:
            return problem
    return None


def compare_rows(actual: Any, expected: torch.Tensor, *, min_accuracy: float, name: str = "output",
                 quote: bool = True) -> str | None:
    """What is wrong with ``actual`` when fewer than ``min_accuracy`` of its rows equal ``expected``'s."""
    problem = compare(actual, expected, atol=0.0, rtol=0.0, name=name, quote=quote)
    if problem is None or problem.startswith(f"{name}: expected"):  # exact match, or wrong type/shape/dtype
        return problem
    right = (actual.detach().cpu() == expected).reshape(len(expected), -1).all(dim=1)
    accuracy = right.float().mean().item()
    if accuracy >= min_accuracy:
        return None
    first = int((~right).nonzero()[0])
    example = f"; first wrong row {first}: expected {expected[first].tolist()}, got {actual[first].tolist()}" \
        if quote else ""
    return f"{name}: {accuracy:.1%} of the {len(expected)} rows are entirely right, {min_accuracy:.0%} needed{example}"


def compare_translations(actual: Any, expected: list[str], *, min_accuracy: float, sources: list[str] | None = None,
                         quote: bool = True) -> str | None:
    """What is wrong with the translations ``actual`` when fewer than ``min_accuracy`` are exactly ``expected``."""
    if not isinstance(actual, (list, tuple)) or not all(isinstance(a, str) for a in actual):
        return f"expected a list of {len(expected)} strings (the translations), got {_describe(actual)}"
    if len(actual) != len(expected):
        return f"{len(expected)} sources gave {len(actual)} translations"
    wrong = [i for i, (a, e) in enumerate(zip(actual, expected)) if a != e]
    accuracy = 1 - len(wrong) / len(expected)
    if accuracy >= min_accuracy:
        return None
    message = (f"{accuracy:.1%} of {len(expected)} translated exactly right, {min_accuracy:.0%} needed. Train "
               "longer, or check the decoder step and the loss curve")
    if not quote:
        return message
    examples = "; ".join(f"{sources[i]!r}: expected {expected[i]!r}, got {actual[i]!r}" if sources else
                         f"#{i}: expected {expected[i]!r}, got {actual[i]!r}" for i in wrong[:MAX_DETAILED_FAILURES])
    return f"{message}; some it got wrong: {examples}"


# --- step 3: the report ---------------------------------------------------------------------------

def failure_report(exercise: str, results: list[tuple[dict, str | None]]) -> str | None:
    """One message for ``exercise`` from its ``(case, problem)`` results, or None if every case passes.

    Every case is listed, passing (✓) and failing (✗), visible ones first; the first few failures
    say what is wrong.
    """
    failures = [(case, problem) for case, problem in results if problem is not None]
    if not failures:
        return None
    if len(failures) == len(results) and all(problem == NOT_IMPLEMENTED for _, problem in failures):
        return f"{exercise}: {NOT_IMPLEMENTED}"
    counts = []
    for kind, hidden in (("visible", False), ("hidden", True)):
        mine = [problem for case, problem in results if case.get("hidden", False) == hidden]
        if mine:
            counts.append(f"{sum(p is None for p in mine)} of {len(mine)} {kind} cases pass")
    lines = [f"{exercise}: {', '.join(counts)}."]
    detailed = 0
    for case, problem in results:
        label = f"hidden: {case['case']}" if case.get("hidden") else case["case"]
        if problem is None:
            lines.append(f"  ✓ {label}")
        elif detailed < MAX_DETAILED_FAILURES:
            lines.append(f"  ✗ {label}: {problem}")
            detailed += 1
        else:
            lines.append(f"  ✗ {label}")
    return "\n".join(lines)


# --- the visible test -----------------------------------------------------------------------------

def load_visible_exercise(exercise: str, path: str = VISIBLE_CASES_FILE) -> dict:
    """``{"cases": [...], "forbidden": [...]}`` of ``exercise``: stored beside the notebook by the
    release, or computed by the installed grader for the instructor's source notebook."""
    if os.path.exists(path):
        stored = torch.load(path, weights_only=True)
        if exercise not in stored:
            raise CheckFailed(f"{path} has no cases for {exercise!r} (it has: {', '.join(stored)})")
        return stored[exercise]
    grader = {point.name: point for point in entry_points(group=KIT_GRADER)}
    if "visible_cases" not in grader:
        raise CheckFailed(f"cannot find {path} beside this notebook: it ships with the lesson's folder. Open the "
                          "notebook from inside that folder, or download the lesson again.")
    return grader["visible_cases"].load()(exercise)


def check_cases(fn: Any, cases: list[dict], *, exercise: str, forbidden: tuple[str, ...] = ()) -> None:
    """Run ``fn`` on every case; raise one CheckFailed that lists them all, or print a tick."""
    method = cases[0].get("method") if cases else None
    if fn is None:
        raise CheckFailed(f"{exercise}: {NOT_IMPLEMENTED}")
    if not callable(getattr(fn, method, None) if method else fn):
        raise CheckFailed(f"{exercise}: expected a {f'model with a {method} method' if method else 'function'}, "
                          f"got {_describe(fn)}")
    report = failure_report(exercise, [(case, judge(run_case(fn, case, forbidden), case)) for case in cases])
    if report:
        raise CheckFailed(report)
    print(f"✓ {exercise}: all {len(cases)} cases pass")


def check_exercise(exercise: str, fn: Any) -> None:
    """The visible test of ``exercise``: run ``fn`` on its stored cases and explain any failure."""
    visible = load_visible_exercise(exercise)
    check_cases(fn, visible["cases"], exercise=exercise, forbidden=tuple(visible["forbidden"]))
