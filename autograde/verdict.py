"""The grader's half of every test cell: judge the answers a submission recorded, outside its sandbox.

Before a submission runs, :func:`grading_cases` draws each exercise's cases: the visible ones, and
hidden ones seeded by :func:`grading_seed` (an HMAC of the student, the exercise and the student's
code under the course's secret: grading the same notebook again gives the same grades, a changed
one gets fresh hidden cases, and no one without the secret can work them out).
:func:`sandbox_inputs` keeps only their inputs for the sandbox. After the run, :func:`load_answers`
reads what ``record_answers`` saved, as data (a regular file, no link, bounded sizes before
anything is unpacked, ``weights_only``), and :func:`cell_verdict` judges it with the same
functions as the visible tests (``course_kit.checks``). The verdict becomes the test cell's whole
output: an error (nbgrader scores the cell 0) with the reasons, or a tick. No verdict quotes a
hidden case's values.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import io
import os
import re
import stat
import tokenize
import zipfile
from pathlib import Path

import nbformat
import torch

from autograde.exercises import exercise_report, get_exercise, hidden_cases, visible_cases
from course_kit.checks import FUSED

RECORD_CALL = re.compile(r"""record_answers\(\s*["']([^"']+)["']\s*,\s*([A-Za-z_]\w*)?""")

# How the fused operators of answers.FUSED are spelled in code (strings and comments aside): the
# second check of a forbidden call, made here on the student's solution cell, where the submission
# cannot switch it off as it could the run-time check in its own process.
SPELLINGS = {
    "scaled_dot_product_attention": r"\.\s*_?scaled_dot_product|\bimport\b[^\n]*\bscaled_dot_product_attention\b",
    "multihead_attention": r"\bMultiheadAttention\b|multi_head_attention_forward|_native_multi_head_attention",
    "softmax": r"\.\s*_?(log_)?(softmax|softmin)\b|\b(Log)?Softmax\b|\bimport\b[^\n]*\b(log_)?softmax\b",
    "autograd": r"\bautograd\s*\.\s*(grad|backward)\b|\.\s*backward\s*\(|\bautograd\s+import\b",
}
MAX_ANSWERS_BYTES = 64 * 2**20  # an answers file larger than this is not read, packed or unpacked
MAX_ANSWERS_ENTRIES = 5_000  # tensors and records in one answers file


def grading_seed(student: str, exercise: str, secret: str = "", code_digest: str = "") -> int:
    """The seed of ``student``'s hidden cases for ``exercise``: HMAC-SHA256 under the course's
    ``secret`` (kept beside the gradebook) of the student, the exercise and the digest of the student's
    code. The same notebook gets the same cases at every grading; a changed one gets fresh cases, so
    inputs seen once are worth nothing."""
    message = "\0".join((student, exercise, code_digest)).encode()
    return int.from_bytes(hmac.new(secret.encode(), message, hashlib.sha256).digest()[:8], "big") & (2**63 - 1)


def grading_cases(exercise: str, student: str, secret: str = "", code_digest: str = "") -> list[dict]:
    """Every case ``student``'s answer to ``exercise`` is judged on: the visible ones, then hidden ones."""
    return visible_cases(exercise) + hidden_cases(exercise, grading_seed(student, exercise, secret, code_digest))


def sandbox_inputs(cases: dict[str, list[dict]]) -> dict[str, dict]:
    """What the sandbox gets for each exercise: the cases' inputs, the forbidden operators and the limits
    whose presence tells ``run_case`` to measure the call (``checks.Measure``), no outputs."""
    given = ("case", "hidden", "args", "kwargs", "method", "max_tensor_elements", "max_matmul_flops")
    return {
        exercise: {
            "cases": [{key: case[key] for key in given if key in case} for case in exercise_cases],
            "forbidden": list(get_exercise(exercise).forbidden),
        }
        for exercise, exercise_cases in cases.items()
    }


def recorded_exercises(source: str) -> list[str]:
    """The exercises a test cell's source records answers for (its ``record_answers`` calls)."""
    return [exercise for exercise, _ in RECORD_CALL.findall(source)]


def answer_source(student_code: str, name: str | None) -> str:
    """The definition of ``name`` (the function or class under test) in the solution cell, else all of
    it: what the student wrote around it (a check against torch's operator, say) is not the answer."""
    try:
        tree = ast.parse(student_code)
    except SyntaxError:
        return student_code
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_source_segment(student_code, node) or student_code
    return student_code


def code_only(source: str) -> str:
    """``source`` without its strings and comments (docstrings may name what the code must not call)."""
    lines: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT) or token.type >= tokenize.N_TOKENS:
                continue
            lines.append("\n" if token.type in (tokenize.NEWLINE, tokenize.NL) else token.string + " ")
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return source  # not Python: scanned as it is
    return "".join(lines)


def spelled_forbidden(exercise: str, student_code: str) -> list[str]:
    """The forbidden operators of ``exercise`` that ``student_code`` names (strings and comments aside)."""
    code = code_only(student_code)
    return [FUSED[key][0] for key in get_exercise(exercise).forbidden if re.search(SPELLINGS[key], code)]


def load_answers(path: Path) -> list | str:
    """The answers saved at ``path``, or why they cannot be judged.

    Only a regular file with no other link to it is opened, without following links; its size and
    what it unpacks to are checked before anything is unpacked; ``torch.load`` reads it with
    ``weights_only`` (tensors and containers: data, never code). The reason never quotes the file.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return "no answers were recorded"
    except OSError:
        return "the recorded answers are not a plain file"
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return "the recorded answers are not a plain file"
        if info.st_size > MAX_ANSWERS_BYTES:
            return f"the recorded answers are too large to read ({info.st_size} bytes)"
        data = file.read(MAX_ANSWERS_BYTES + 1)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ANSWERS_ENTRIES or sum(e.file_size for e in entries) > MAX_ANSWERS_BYTES:
                return "the recorded answers unpack to too much data"
        answers = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # anything but plain tensors and containers: not an answer
        return f"the recorded answers cannot be read ({type(error).__name__})"
    return answers


def judge_recording(exercise: str, cases: list[dict], answers_file: Path) -> str | None:
    """The failure message of ``exercise`` from its recorded answers, or None when every case passes."""
    answers = load_answers(answers_file)
    if isinstance(answers, str):
        return f"{exercise}: {answers}"
    if not isinstance(answers, list) or len(answers) != len(cases):
        return f"{exercise}: the recorded answers do not match the {len(cases)} cases"
    return exercise_report(exercise, cases, answers)


def verdict_outputs(exercises: list[str], problems: list[str | None], cases: dict[str, list[dict]]) -> list:
    """The test cell's outputs for these verdicts: a tick per exercise, or one error with the reasons."""
    failures = [problem for problem in problems if problem is not None]
    if failures:
        message = "\n".join(failures)
        return [nbformat.v4.new_output("error", ename="CheckFailed", evalue=message,
                                       traceback=[f"\x1b[31mCheckFailed\x1b[0m: {message}"])]
    lines = []
    for exercise in exercises:
        n_hidden = sum(case.get("hidden", False) for case in cases[exercise])
        lines.append(f"✓ {exercise}: all {len(cases[exercise])} cases pass "
                     f"({len(cases[exercise]) - n_hidden} visible, {n_hidden} hidden), checked by the grader\n")
    return [nbformat.v4.new_output("stream", name="stdout", text="".join(lines))]


def cell_verdict(source: str, cases: dict[str, list[dict]], answers: dict[str, Path], student_code: str = "",
                 run=None) -> list:
    """The whole output of a graded test cell: judged from the answers recorded for its exercises.

    ``student_code`` is the solution cell the test cell checks: an exercise whose answer (the
    definition of the function under test there) names one of its forbidden operators fails,
    whatever its answers. ``run`` (a ``kernel.CellRun``) says whether the cell ran; a test cell that
    records no exercise is not one the grader can judge, and scores 0.
    """
    calls = RECORD_CALL.findall(source)
    if not calls:
        return verdict_outputs([], ["this test cell records no answers, so the grader cannot judge it"], cases)
    exercises = [exercise for exercise, _ in calls]
    problems = []
    for e, name in calls:
        if spelled := spelled_forbidden(e, answer_source(student_code, name)):
            problems.append(f"{e}: your code calls {', '.join(spelled)}, which this exercise does not allow: "
                            "the exercise is to write it yourself")
        elif run is not None and run.status == "not run":
            problems.append(f"{e}: this test cell did not run ({run.reason or 'the run stopped before it'})")
        elif e not in cases or e not in answers:
            problems.append(f"{e}: no answers were recorded")
        else:
            problem = judge_recording(e, cases[e], answers[e])
            if problem is not None and run is not None and run.status == "interrupted":
                problem += f" (the cell {run.reason})"
            problems.append(problem)
    return verdict_outputs(exercises, problems, cases)
