"""The hidden half of every test cell: record the student's answers for the grader to judge.

While ``attention-course autograde`` runs a submission, it gives the kernel, just before each test
cell runs and only until it ends, a file of that cell's cases: the inputs of its visible and hidden
cases (never the expected outputs) and the fused operators the exercise may not call. Its path is
in the environment variable ``COURSE_KIT_GRADING_INPUTS``. The test cell calls
``record_answers(exercise, fn)``: ``fn`` runs on each case (:func:`course_kit.checks.run_case`) and
its answers are saved in the folder named by ``COURSE_KIT_ANSWERS``. The grader moves them out of
the sandbox and judges them with :func:`course_kit.checks.judge` against the reference library's
outputs. Nothing the notebook does to its own process (replacing ``torch.allclose``, the check
helpers, ``builtins``) can change that verdict: it is not computed here.

Outside grading (the instructor running the source notebook, ``attention-course validate``) the
hidden test runs in the kernel instead, with the installed grader's full library (its
``course_kit.grader`` entry point ``hidden_test``), when there is one.

Part of the student kit: it imports only torch and the kit's checks.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

import torch
from torch.autograd.profiler import profile

from course_kit.checks import FUSED, KIT_GRADER, run_case

INPUTS_ENV = "COURSE_KIT_GRADING_INPUTS"  # set by the grader: the file of the current test cell's cases
ANSWERS_ENV = "COURSE_KIT_ANSWERS"  # set by the grader: where the answers go


def _fused_ops_called(names: set[str], forbidden: list[str]) -> list[str]:
    """The forbidden fused operators among the ATen operators the profiler saw (reached from C++, as
    ``torch.special.softmax`` reaches ``aten::_softmax``, where the function mode sees another name)."""
    return [FUSED[key][0] for key in forbidden for prefix in FUSED[key][2]
            if any(name.startswith(prefix) for name in names)]


def answers_to(fn: Any, cases: list[dict], forbidden: list[str]) -> list[dict]:
    """``fn``'s answer to every case. The profiler lists the ATen operators the calls ran; it is read
    from its raw results (its ``function_events`` build a Python object per call: 4.5 s for the
    79,000 operators of translating 1,000 dates, against 0.1 s here)."""
    try:
        with profile() as ops:
            answers = [run_case(fn, case, tuple(forbidden)) for case in cases]
        names = {event.name() for event in ops.kineto_results.events()}
    except RuntimeError:  # the profiler could not start (no thread left, say): the function mode still holds
        answers, names = [run_case(fn, case, tuple(forbidden)) for case in cases], set()
    if fused := _fused_ops_called(names, forbidden):
        for answer in answers:  # which case ran it is not recorded; the exercise fails either way
            answer["forbidden"] = sorted(set(answer["forbidden"]) | set(fused))
    return answers


def record_answers(exercise: str, fn: Any) -> None:
    """The hidden test of ``exercise``: record ``fn``'s answers for the grader (see the module doc)."""
    if INPUTS_ENV not in os.environ:
        grader = {point.name: point for point in entry_points(group=KIT_GRADER)}
        if "hidden_test" not in grader:
            raise RuntimeError(f"{exercise}: the hidden test runs while grading, or with the course's grader installed")
        grader["hidden_test"].load()(exercise, fn)
        return
    try:
        spec = torch.load(os.environ[INPUTS_ENV], weights_only=True)[exercise]
    except (OSError, KeyError):
        raise RuntimeError(f"{exercise}: the grader's cases are given only to the test cell that checks it") from None
    answers = answers_to(fn, spec["cases"], spec["forbidden"])
    os.makedirs(os.environ[ANSWERS_ENV], exist_ok=True)
    torch.save(answers, os.path.join(os.environ[ANSWERS_ENV], f"{exercise}.pt"))
    print(f"{exercise}: answers to {len(answers)} cases recorded; the grader checks them")
