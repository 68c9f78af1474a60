"""The grader's verdict on recorded answers: computed from data only, never fooled by the recorder."""

from __future__ import annotations

import os
import pickle

import torch

import course_lib
from autograde.verdict import (
    cell_verdict,
    grading_cases,
    judge_recording,
    load_answers,
    recorded_exercises,
    sandbox_inputs,
    verdict_outputs,
)
from course_kit.answers import answers_to

EXERCISE = "softmax"


def record(tmp_path, fn, exercise=EXERCISE, student="alice"):
    """What record_answers would save for ``fn`` in the sandbox, and the grader's cases."""
    cases = grading_cases(exercise, student)
    spec = sandbox_inputs({exercise: cases})[exercise]
    path = tmp_path / "answers" / f"{exercise}.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(answers_to(fn, spec["cases"], spec["forbidden"]), path)
    return cases, path


def test_the_reference_passes_and_a_wrong_answer_fails_with_the_case_named(tmp_path):
    cases, path = record(tmp_path, course_lib.softmax)
    assert judge_recording(EXERCISE, cases, path) is None
    cases, path = record(tmp_path, lambda x, dim=-1: x.exp() / x.exp().sum(dim, keepdim=True))
    message = judge_recording(EXERCISE, cases, path)
    assert message.startswith(f"{EXERCISE}: ") and "magnitude 1e4" in message and "NaN" in message


def test_the_sandbox_gets_the_inputs_but_never_the_expected_outputs():
    spec = sandbox_inputs({EXERCISE: grading_cases(EXERCISE, "alice")})[EXERCISE]
    assert spec["cases"] and all(set(case) <= {"case", "hidden", "args", "kwargs", "method"} for case in spec["cases"])
    assert "softmax" in spec["forbidden"]


def test_a_measured_case_reaches_the_sandbox_with_its_limits_and_is_judged_on_them(tmp_path):
    """The sandbox's run_case measures only the cases that carry their limits: a recording of attention
    through the whole score matrix fails by its size, the tiled reference passes."""
    exercise = "flash_attention_forward"
    cases = grading_cases(exercise, "alice")
    given = sandbox_inputs({exercise: cases})[exercise]["cases"]
    limits = [{k: v for k, v in case.items() if k.startswith("max_")} for case in given]
    assert limits == [{k: v for k, v in case.items() if k.startswith("max_")} for case in cases]
    assert sum("max_tensor_elements" in limit for limit in limits) == 4  # two visible, two hidden

    def whole_matrix(q, k, v, *, is_causal=False, scale=None, block_q=16, block_k=16):
        scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if is_causal:
            scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
        return torch.exp(scores - scores.logsumexp(-1, keepdim=True)) @ v, scores.logsumexp(-1)

    for fn, problem in ((course_lib.flash_attention_forward, None), (whole_matrix, "x 512 tensor; at most 4,096")):
        path = tmp_path / f"{fn.__name__}.pt"
        torch.save(answers_to(fn, given, []), path)
        message = judge_recording(exercise, cases, path)
        assert message is None if problem is None else problem in message, message


def test_hidden_cases_are_the_same_for_a_student_on_every_run_and_differ_between_students_and_courses():
    first, again, other = (grading_cases(EXERCISE, s, "course-secret") for s in ("alice", "alice", "bob"))
    elsewhere = grading_cases(EXERCISE, "alice", "another-secret")
    hidden = lambda cases: [c["args"][0] for c in cases if c["hidden"]]  # noqa: E731
    same = lambda a, b: all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(hidden(a), hidden(b)))  # noqa: E731
    assert same(first, again) and not same(first, other) and not same(first, elsewhere)


def test_a_forbidden_call_fails_the_exercise_and_is_named(tmp_path):
    cases, path = record(tmp_path, lambda x, dim=-1: torch.softmax(x, dim))
    assert ("calls torch.softmax (or log_softmax), which this exercise does not allow"
            in judge_recording(EXERCISE, cases, path))
    cases, path = record(tmp_path, lambda x, dim=-1: torch.ops.aten._softmax(x, dim, False))
    assert "which this exercise does not allow" in judge_recording(EXERCISE, cases, path)


def test_changing_the_inputs_in_place_is_caught(tmp_path):
    def in_place(x, dim=-1):
        x.sub_(x.amax(dim, keepdim=True)).exp_()
        return x / x.sum(dim, keepdim=True)

    cases, path = record(tmp_path, in_place)
    assert "modified its input tensors in place" in judge_recording(EXERCISE, cases, path)


def test_missing_truncated_or_foreign_answer_files_fail_without_running_anything(tmp_path):
    cases = grading_cases(EXERCISE, "alice")
    assert "no answers were recorded" in judge_recording(EXERCISE, cases, tmp_path / "nothing.pt")
    short = tmp_path / "short.pt"
    torch.save([{"output": torch.zeros(1)}], short)
    assert "do not match" in judge_recording(EXERCISE, cases, short)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    hostile = tmp_path / "hostile.pt"
    with open(hostile, "wb") as f:
        pickle.dump([Payload()] * len(cases), f, protocol=2)
    assert "cannot be read" in judge_recording(EXERCISE, cases, hostile)
    assert not marker.exists()


def test_a_passing_cell_gets_a_tick_and_a_failing_one_an_error_nbgrader_scores_zero(tmp_path):
    cases, _ = record(tmp_path, course_lib.softmax)
    source = 'from course_kit.answers import record_answers\nrecord_answers("softmax", softmax)\n'
    assert recorded_exercises(source) == ["softmax"]
    answers = {"softmax": tmp_path / "answers" / "softmax.pt"}
    [tick] = cell_verdict(source, {"softmax": cases}, answers)
    assert tick.output_type == "stream" and "✓ softmax" in tick.text and "checked by the grader" in tick.text
    [error] = verdict_outputs(["softmax"], ["softmax: 0 of 12 graded cases pass."], {"softmax": cases})
    assert error.output_type == "error" and error.ename == "CheckFailed"
    [unjudged] = cell_verdict("check_exercise('softmax', softmax)", {"softmax": cases}, answers)
    assert unjudged.output_type == "error" and "records no answers" in unjudged.evalue


def test_the_code_check_reads_the_answer_not_the_self_checks_around_it(tmp_path):
    cases, _ = record(tmp_path, course_lib.softmax)
    source = 'record_answers("softmax", softmax)\n'
    honest = ("def softmax(x, dim=-1):\n    e = (x - x.amax(dim, keepdim=True)).exp()\n"
              "    return e / e.sum(dim, keepdim=True)\n\n"
              "assert torch.allclose(softmax(torch.ones(3)), torch.softmax(torch.ones(3), -1))  # my own check\n")
    answers = {"softmax": tmp_path / "answers" / "softmax.pt"}
    [tick] = cell_verdict(source, {"softmax": cases}, answers, honest)
    assert tick.output_type == "stream"
    delegating = "def softmax(x, dim=-1):\n    '''unlike torch.softmax'''\n    return torch.softmax(x, dim)\n"
    [error] = cell_verdict(source, {"softmax": cases}, answers, delegating)
    assert "your code calls torch.softmax (or log_softmax)" in error.evalue


def test_the_code_check_names_autograd_in_a_backward_that_must_recompute():
    from autograde.verdict import spelled_forbidden

    asked = ["    return torch.autograd.grad(out, (q, k, v), grad_out)\n",
             "    out.backward(grad_out)\n    return q.grad, k.grad, v.grad\n",
             "    from torch.autograd import grad\n    return grad(out, (q, k, v), grad_out)\n"]
    for body in asked:
        code = f"def flash_attention_backward(q, k, v, out, lse, grad_out):\n{body}"
        assert spelled_forbidden("flash_attention_backward", code) == ["torch.autograd.grad (or .backward())"], body
    said = ('def flash_attention_backward(q, k, v, out, lse, grad_out):\n'
            '    """not torch.autograd.grad"""  # nor .backward()\n')
    assert spelled_forbidden("flash_attention_backward", said) == []
    assert spelled_forbidden("flash_attention_forward", "def f(q):\n    return torch.autograd.grad(q, q)\n") == []


def test_answers_are_read_only_from_a_plain_file_of_bounded_size_and_never_quoted(tmp_path):
    cases, path = record(tmp_path, course_lib.softmax)
    assert isinstance(load_answers(path), list)
    secret = tmp_path / "grading_secret.txt"
    secret.write_text("s3cr3t-do-not-show")
    link = tmp_path / "link.pt"
    link.symlink_to(secret)
    hard = tmp_path / "hard.pt"
    os.link(secret, hard)
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    for bad in (link, hard, fifo):
        reason = load_answers(bad)
        assert reason == "the recorded answers are not a plain file", (bad, reason)
    assert "s3cr3t" not in judge_recording(EXERCISE, cases, secret)


def test_answers_that_unpack_to_gigabytes_are_refused_before_unpacking(tmp_path):
    import zipfile
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            for _ in range(128):
                member.write(bytes(2**20))  # 128 MiB of zeros, a few hundred KB packed
    assert bomb.stat().st_size < 2**20
    assert load_answers(bomb) == "the recorded answers unpack to too much data"


def test_a_changed_notebook_gets_fresh_hidden_cases_and_the_same_one_the_same():
    same = (grading_cases(EXERCISE, "alice", "secret", "digest-1"),
            grading_cases(EXERCISE, "alice", "secret", "digest-1"))
    changed = grading_cases(EXERCISE, "alice", "secret", "digest-2")
    hidden = lambda cases: [c["args"][0] for c in cases if c["hidden"]]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(hidden(same[0]), hidden(same[1])))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(hidden(same[0]), hidden(changed)))
