"""The hidden half of every test cell: record the student's answers for the grader to judge.

While grading, ``attention-course autograde`` runs each submission in a sandbox with a file
``grading_inputs.pt`` beside the notebook: for every exercise, the inputs of its visible and hidden
cases (never the expected outputs) and the fused operators it may not call. A graded test cell
calls ``record_answers(exercise, fn)``: ``fn`` runs on each case (:func:`course_kit.checks.run_case`),
and its answers are saved to ``answers/<exercise>.pt``. The grader, outside the sandbox, judges
them with :func:`course_kit.checks.judge` against the reference library's outputs. Nothing the
notebook does to its own process (replacing ``torch.allclose``, the check helpers, ``builtins``)
can change that verdict: it is not computed here.

Without ``grading_inputs.pt`` (the instructor running the source notebook, ``attention-course
validate``) the hidden test runs in the kernel instead, with the installed grader's full library
(its ``course_kit.grader`` entry point ``hidden_test``), when there is one.

Part of the student kit: it imports only torch and the kit's checks.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

import torch
from torch.autograd.profiler import profile

from course_kit.checks import FUSED, KIT_GRADER, run_case

GRADING_INPUTS_FILE = "grading_inputs.pt"
ANSWERS_DIR = "answers"


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
    if not os.path.exists(GRADING_INPUTS_FILE):
        grader = {point.name: point for point in entry_points(group=KIT_GRADER)}
        if "hidden_test" not in grader:
            raise RuntimeError(f"{exercise}: the hidden test runs while grading, or with the course's grader installed")
        grader["hidden_test"].load()(exercise, fn)
        return
    spec = torch.load(GRADING_INPUTS_FILE, weights_only=True)[exercise]
    answers = answers_to(fn, spec["cases"], spec["forbidden"])
    os.makedirs(ANSWERS_DIR, exist_ok=True)
    torch.save(answers, os.path.join(ANSWERS_DIR, f"{exercise}.pt"))
    print(f"{exercise}: answers to {len(answers)} cases recorded; the grader checks them")
