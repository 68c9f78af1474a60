"""The grader's half of every test cell: judge the answers a submission recorded, outside its sandbox.

Before a submission runs, :func:`grading_cases` draws each exercise's cases (the visible ones and
hidden ones seeded by student and exercise, so that grading again gives the same grades) and
:func:`sandbox_inputs` keeps only their inputs for the sandbox (``answers.GRADING_INPUTS_FILE``).
After it ran, :func:`cell_verdict` loads what ``record_answers`` saved (``weights_only``: a
submission's files are data, never code, to the grader) and compares it with the reference's
outputs here, with the same comparisons as the visible tests. The verdict becomes the test cell's
output: an error (nbgrader scores the cell 0) with the reasons, or a tick.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import zlib
from pathlib import Path

import nbformat
import torch

from autograde.exercises import get_exercise, hidden_cases, visible_cases
from course_kit.answers import ANSWERS_DIR
from course_kit.checks import FUSED, failure_report, judge

RECORD_CALL = re.compile(r"""record_answers\(\s*["']([^"']+)["']\s*,\s*([A-Za-z_]\w*)?""")

# How the fused operators of answers.FUSED are spelled in code (strings and comments aside): the
# second check of a forbidden call, made here on the student's solution cell, where the submission
# cannot switch it off as it could the run-time check in its own process.
SPELLINGS = {
    "scaled_dot_product_attention": r"\.\s*_?scaled_dot_product|\bimport\b[^\n]*\bscaled_dot_product_attention\b",
    "multihead_attention": r"\bMultiheadAttention\b|multi_head_attention_forward|_native_multi_head_attention",
    "softmax": r"\.\s*_?(log_)?(softmax|softmin)\b|\b(Log)?Softmax\b|\bimport\b[^\n]*\b(log_)?softmax\b",
}
MAX_ANSWERS_BYTES = 256 * 2**20  # larger answer files are not read


def grading_seed(student: str, exercise: str, secret: str = "") -> int:
    """The seed of ``student``'s hidden cases for ``exercise``: fixed, so a re-run grades the same;
    with the course's ``secret`` (kept beside the gradebook) a student cannot work it out beforehand
    and compute the answers with the public reference library."""
    return zlib.crc32(f"{secret}/{student}/{exercise}".encode()) & 0x7FFFFFFF


def grading_cases(exercise: str, student: str, secret: str = "") -> list[dict]:
    """Every case ``student``'s answer to ``exercise`` is judged on: the visible ones, then hidden ones."""
    return visible_cases(exercise) + hidden_cases(exercise, grading_seed(student, exercise, secret))


def sandbox_inputs(cases: dict[str, list[dict]]) -> dict[str, dict]:
    """What the sandbox gets for each exercise: the cases' inputs and the forbidden operators, no outputs."""
    return {
        exercise: {
            "cases": [{key: case[key] for key in ("case", "hidden", "args", "kwargs", "method") if key in case}
                      for case in exercise_cases],
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


def judge_recording(exercise: str, cases: list[dict], answers_file: Path) -> str | None:
    """The failure message of ``exercise`` from its recorded answers, or None when every case passes."""
    if not answers_file.is_file():
        return (f"{exercise}: no answers were recorded: the test cell did not reach its hidden test "
                "(an error or the time limit stopped it, or the kernel died)")
    if answers_file.stat().st_size > MAX_ANSWERS_BYTES:
        return f"{exercise}: the recorded answers are too large to read ({answers_file.stat().st_size} bytes)"
    try:
        answers = torch.load(answers_file, weights_only=True)
    except Exception as error:  # anything but plain tensors and containers: not an answer
        return f"{exercise}: the recorded answers cannot be read ({type(error).__name__})"
    if not isinstance(answers, list) or len(answers) != len(cases):
        return f"{exercise}: the recorded answers do not match the {len(cases)} cases"
    return failure_report(exercise, [(case, judge(answer, case)) for case, answer in zip(cases, answers)])


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


def cell_verdict(source: str, cases: dict[str, list[dict]], workdir: Path, student_code: str = "") -> list | None:
    """The outputs of a graded test cell, judged from the answers in ``workdir``; None if it records none.

    ``student_code`` is the solution cell the test cell checks: an exercise whose answer (the
    definition of the function under test there) names one of its forbidden operators fails,
    whatever its answers.
    """
    calls = RECORD_CALL.findall(source)
    exercises = [exercise for exercise, _ in calls]
    if not exercises:
        return None
    problems = []
    for e, name in calls:
        if spelled := spelled_forbidden(e, answer_source(student_code, name)):
            problems.append(f"{e}: your code calls {', '.join(spelled)}, which this exercise does not allow: "
                            "the exercise is to write it yourself")
        else:
            problems.append(judge_recording(e, cases[e], workdir / ANSWERS_DIR / f"{e}.pt"))
    return verdict_outputs(exercises, problems, cases)
