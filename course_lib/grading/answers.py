"""The hidden half of every test cell: record the student's answers for the grader to judge.

While grading, ``attention-course autograde`` runs each submission in a sandbox with a file
``grading_inputs.pt`` beside the notebook: for every exercise, the inputs of its visible and hidden
cases (never the expected outputs) and the fused operators it may not call. A graded test cell
calls ``record_answers(exercise, fn)``: ``fn`` runs on each case, and what it returns (or raises,
or calls that it may not) is saved to ``answers/<exercise>.pt``. The grader, outside the
sandbox, compares those answers with the reference library's outputs and writes the cell's
verdict. Nothing the notebook does to its own process (replacing ``torch.allclose``, the check
helpers, ``builtins``) can change that verdict: it is not computed here.

Without ``grading_inputs.pt`` (the instructor running the source notebook, ``attention-course
validate``, plain ``nbgrader autograde``) it runs the hidden test in the kernel instead, with the
instructor's full library (``check_against_reference``).

This module ships with every lesson (the student kit): it imports only torch and the checks.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.autograd.profiler import profile
from torch.overrides import TorchFunctionMode

from course_lib.grading.checks import _call, _clone, _not_implemented

GRADING_INPUTS_FILE = "grading_inputs.pt"
ANSWERS_DIR = "answers"

# The fused operators an exercise can forbid: what the student sees named, the Python functions
# that reach it, and the ATen operators it dispatches to (caught however the call was spelled).
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
        ("aten::_softmax", "aten::_log_softmax", "aten::_safe_softmax", "aten::softmax", "aten::log_softmax"),
    ),
}


class ForbiddenCall(RuntimeError):
    """The function under test called a fused operator its exercise asks you to write yourself."""


class _Forbid(TorchFunctionMode):
    """Stops at a forbidden torch function, however the student named or imported it."""

    def __init__(self, forbidden: list[str], seen: list[str]):
        super().__init__()
        self.functions = {fn: FUSED[key][0] for key in forbidden for fn in FUSED[key][1]}
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = self.functions.get(func) if _hashable(func) else None
        if name is not None:
            self.seen.append(name)
            raise ForbiddenCall(f"{name} is not allowed in this exercise")
        return func(*args, **(kwargs or {}))


def _fused_ops_called(names: set[str], forbidden: list[str]) -> list[str]:
    """The forbidden fused operators among the ATen operators the profiler saw (e.g. reached from
    C++, as ``torch.special.softmax`` reaches ``aten::_softmax``, where the function mode sees another name)."""
    return [FUSED[key][0] for key in forbidden for prefix in FUSED[key][2]
            if any(name.startswith(prefix) for name in names)]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _plain(value: Any) -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads back: tensors, containers, scalars."""
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).clone()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] if isinstance(value, list) else tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"unsupported": f"{type(value).__name__}"}


def _answer(fn: Any, case: dict, forbidden: list[str]) -> dict:
    """What ``fn`` does on ``case``: its output or error, forbidden calls, its inputs afterwards."""
    args, kwargs = _clone(case["args"]), _clone(case["kwargs"])
    seen: list[str] = []
    answer: dict[str, Any] = {}
    try:
        with _Forbid(forbidden, seen):
            answer["output"] = _plain(_call(fn, args, kwargs, case.get("method")))
    except Exception as error:  # the student's code raised: the grader says what
        answer["error"] = f"{type(error).__name__}: {error}"[:2000]
        answer["not_implemented"] = _not_implemented(error)
    answer["forbidden"] = sorted(set(seen))
    answer["args"], answer["kwargs"] = _plain(args), _plain(kwargs)  # to catch changes made in place
    return answer


def _operator_names(ops: profile) -> set[str]:
    """The names of the operators a profile saw. Read from the profiler's raw results: its
    ``function_events`` builds a Python object per call, 4.5 s for the 79,000 operators of
    translating 1,000 dates, against 0.1 s here."""
    return {event.name() for event in ops.kineto_results.events()}


def answers_to(fn: Any, cases: list[dict], forbidden: list[str]) -> list[dict]:
    """``fn``'s answer to every case. The profiler lists the ATen operators the calls ran (a
    TorchDispatchMode would too, but imports torch._dynamo, 2 s, on its first use in a kernel)."""
    try:
        with profile() as ops:
            answers = [_answer(fn, case, forbidden) for case in cases]
        names = _operator_names(ops)
    except RuntimeError:  # the profiler could not start (no thread left, say): the function mode still holds
        answers, names = [_answer(fn, case, forbidden) for case in cases], set()
    if fused := _fused_ops_called(names, forbidden):
        for answer in answers:  # which case ran it is not recorded; the exercise fails either way
            answer["forbidden"] = sorted(set(answer["forbidden"]) | set(fused))
    return answers


def record_answers(exercise: str, fn: Any) -> None:
    """The hidden test of ``exercise``: record ``fn``'s answers for the grader (see the module doc)."""
    if not os.path.exists(GRADING_INPUTS_FILE):
        try:
            from course_lib.grading.exercises import check_against_reference  # the instructor's full library
        except ImportError:
            raise RuntimeError(f"{exercise}: the hidden test runs while grading, or with the instructor's "
                               "course_lib installed") from None
        check_against_reference(exercise, fn)
        return
    spec = torch.load(GRADING_INPUTS_FILE, weights_only=True)[exercise]
    answers = answers_to(fn, spec["cases"], spec["forbidden"])
    os.makedirs(ANSWERS_DIR, exist_ok=True)
    torch.save(answers, os.path.join(ANSWERS_DIR, f"{exercise}.pt"))
    print(f"{exercise}: answers to {len(answers)} cases recorded; the grader checks them")
