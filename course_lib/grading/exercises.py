"""The graded exercises: their test inputs, and the live comparison with the reference library.

Instructor side only: this module never ships to students. For every exercise it makes two sets
of inputs. The *visible* set is small, readable and fixed (seeded by the exercise's name), and aims
at the mistakes students really make: overflow on large logits, mask polarity, a fully masked row,
the missing 1/sqrt(d), Lq != Lk, extra batch dims. The release stores its expected outputs beside
the notebook (``visible_cases.pt``). The *hidden* set is drawn fresh at grading time, with random
sizes and the edge cases (non-contiguous inputs, broadcast masks, float masks with -inf, custom
scale, length 1), and compared with ``course_lib`` live by :func:`check_against_reference`.

Expected outputs are computed by the reference in float64 and cast back to the input's dtype, so
they are as exact as the dtype allows (the rule of flash-attn's ``attention_ref``).
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

import course_lib
from course_lib.grading.checks import CheckFailed, check_cases

# (atol, rtol) by dtype of the expected output; booleans and integers compare exactly.
TOLERANCES = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-8)}

Inputs = list[tuple[str, list, dict]]  # (case description, args, kwargs)


@dataclass(frozen=True)
class Exercise:
    name: str
    lesson: str
    reference: Callable[..., torch.Tensor]
    visible_inputs: Callable[[torch.Generator], Inputs]
    hidden_inputs: Callable[[torch.Generator], Inputs]


# --- input makers -------------------------------------------------------------------------------

def _randn(g: torch.Generator, *shape: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def _size(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a transposed (non-contiguous) layout."""
    return x.transpose(-2, -1).contiguous().transpose(-2, -1)


def _nadaraya_watson_visible(g):
    keys = torch.sort(torch.rand(8, generator=g) * 5).values
    values = 2 * torch.sin(keys) + keys ** 0.8
    queries = torch.linspace(0, 5, 5)
    return [
        ("5 queries, 8 keys, bandwidth 1", [queries, keys, values], {}),
        ("narrow kernel, bandwidth 0.3", [queries, keys, values], {"bandwidth": 0.3}),
        ("a single key: every prediction is its value", [queries, keys[:1], values[:1]], {}),
        ("float64", [queries.double(), keys.double(), values.double()], {"bandwidth": 0.5}),
    ]


def _nadaraya_watson_hidden(g):
    lq, lk = _size(g, 1, 12), _size(g, 1, 40)
    keys = torch.rand(lk, generator=g) * 10
    return [
        (f"random, Lq={lq}, Lk={lk}", [_randn(g, lq) * 3, keys, _randn(g, lk)], {"bandwidth": 0.7}),
        # float64: in float32 the rounding of (q - k)^2 ~ 1e4 alone exceeds the tolerance
        ("queries far from every key (naive exp underflows), float64",
         [torch.tensor([100.0, -50.0], dtype=torch.float64), keys.double(), _randn(g, lk, dtype=torch.float64)],
         {"bandwidth": 1.0}),
        (f"float64, Lq={lq}, Lk={lk}", [_randn(g, lq, dtype=torch.float64), keys.double(),
                                          _randn(g, lk, dtype=torch.float64)], {"bandwidth": 2.0}),
    ]


def _softmax_visible(g):
    x = _randn(g, 3, 4)
    return [
        ("3x4 scores, dim=-1", [x], {}),
        ("3x4 scores, dim=0", [x], {"dim": 0}),
        ("x + 100: same probabilities as x", [x + 100], {}),
        ("logits of magnitude 1e4 (naive exp overflows)", [x * 1e4], {}),
        ("length 1", [_randn(g, 2, 1)], {}),
        ("batched (2, 3, 5), float64", [_randn(g, 2, 3, 5, dtype=torch.float64)], {}),
    ]


def _softmax_hidden(g):
    shape = (_size(g, 1, 4), _size(g, 1, 6), _size(g, 1, 9))
    return [
        (f"random {shape}", [_randn(g, *shape, scale=3)], {}),
        (f"random {shape}, dim=1", [_randn(g, *shape)], {"dim": 1}),
        ("logits around -1e4", [_randn(g, *shape) - 1e4], {}),
        ("logits of magnitude 1e30", [_randn(g, *shape, scale=1e30)], {}),
        ("non-contiguous input", [_noncontiguous(_randn(g, *shape))], {}),
        ("float64", [_randn(g, *shape, dtype=torch.float64, scale=50)], {"dim": -2}),
    ]


def _masked_softmax_visible(g):
    scores = _randn(g, 2, 4)
    return [
        ("padding: last key of row 0 and last two of row 1 masked (False)",
         [scores, torch.tensor([[True, True, True, False], [True, True, False, False]])], {}),
        ("mask (1, 4) broadcast over the rows", [scores, torch.tensor([[False, True, True, True]])], {}),
        ("causal 4x4 mask", [_randn(g, 4, 4), torch.ones(4, 4, dtype=torch.bool).tril()], {}),
        ("a fully masked row gives zeros, not NaN",
         [scores, torch.tensor([[True, False, True, False], [False, False, False, False]])], {}),
        ("float64 (2, 3, 4, 4) with a (4, 4) mask", [_randn(g, 2, 3, 4, 4, dtype=torch.float64),
                                                     torch.ones(4, 4, dtype=torch.bool).tril()], {}),
    ]


def _masked_softmax_hidden(g):
    b, lq, lk = _size(g, 1, 3), _size(g, 1, 7), _size(g, 1, 9)
    mask = torch.rand(b, lq, lk, generator=g) > 0.3
    mask[0, 0] = False  # one fully masked row
    return [
        (f"random mask (B={b}, Lq={lq}, Lk={lk}) with a fully masked row", [_randn(g, b, lq, lk, scale=3), mask], {}),
        ("mask (B, 1, Lk) broadcast over queries", [_randn(g, b, lq, lk), mask[:, :1, :]], {}),
        ("large scores (1e4)", [_randn(g, b, lq, lk, scale=1e4), mask], {}),
        ("softmax over dim=1 with a mask", [_randn(g, b, lq, lk), mask], {"dim": 1}),
        ("non-contiguous scores", [_noncontiguous(_randn(g, b, lq, lk)), mask], {}),
        ("float64, nothing masked", [_randn(g, b, lq, lk, dtype=torch.float64), torch.ones(lk, dtype=torch.bool)], {}),
    ]


def _causal_mask_visible(g):
    return [("n_q=1", [1], {}), ("n_q=4", [4], {}), ("Lq=3, Lk=5", [3, 5], {}), ("Lq=5, Lk=3", [5, 3], {})]


def _causal_mask_hidden(g):
    n_q, n_k = _size(g, 1, 30), _size(g, 1, 30)
    return [(f"n_q={n_q}", [n_q], {}), (f"Lq={n_q}, Lk={n_k}", [n_q, n_k], {}), ("keyword n_k", [2], {"n_k": 7})]


def _padding_mask_visible(g):
    return [
        ("lengths [1, 3, 2], max_len 4", [torch.tensor([1, 3, 2]), 4], {}),
        ("an empty and a full sequence", [torch.tensor([0, 4]), 4], {}),
        ("a single sequence at max_len", [torch.tensor([5]), 5], {}),
    ]


def _padding_mask_hidden(g):
    max_len = _size(g, 1, 20)
    lengths = torch.randint(0, max_len + 1, (_size(g, 1, 8),), generator=g)
    return [(f"random lengths, max_len {max_len}", [lengths, max_len], {}),
            ("max_len larger than every length", [lengths, max_len + 5], {})]


def _sdpa_visible(g):
    q, k, v = _randn(g, 4, 8), _randn(g, 4, 8), _randn(g, 4, 8)
    pad = torch.tensor([[True, True, True, True], [True, True, False, False]]).view(2, 1, 1, 4)  # (B, 1, 1, Lk)
    bias = torch.zeros(3, 5)
    bias[:, -1] = float("-inf")
    bias[1, 0] = -2.0
    fully_masked = torch.ones(3, 5, dtype=torch.bool)
    fully_masked[2] = False
    return [
        ("no mask, Lq=Lk=4, d=8", [q, k, v], {}),
        ("Lq=3, Lk=5, Dk=8, Dv=6", [_randn(g, 3, 8), _randn(g, 5, 8), _randn(g, 5, 6)], {}),
        ("batch (2, 2), padding mask (2, 1, 1, 4)",
         [_randn(g, 2, 2, 3, 8), _randn(g, 2, 2, 4, 8), _randn(g, 2, 2, 4, 8), pad], {}),
        ("float mask added to the scores (with -inf)", [_randn(g, 3, 8), _randn(g, 5, 8), _randn(g, 5, 4), bias], {}),
        ("is_causal, Lq=Lk=4", [q, k, v], {"is_causal": True}),
        ("is_causal, Lq=3, Lk=5 (top-left aligned)", [_randn(g, 3, 8), _randn(g, 5, 8), _randn(g, 5, 8)],
         {"is_causal": True}),
        ("scale=0.5 instead of 1/sqrt(d)", [q, k, v], {"scale": 0.5}),
        ("a query with every key masked gives zeros",
         [_randn(g, 3, 8), _randn(g, 5, 8), _randn(g, 5, 8), fully_masked], {}),
        ("float64, batch (2, 3)", [_randn(g, 2, 3, 4, 16, dtype=torch.float64), _randn(g, 2, 3, 6, 16, dtype=torch.float64),
                                   _randn(g, 2, 3, 6, 16, dtype=torch.float64)], {}),
    ]


def _sdpa_hidden(g):
    b, h, lq, lk, dk, dv = (_size(g, 1, 3), _size(g, 1, 4), _size(g, 1, 9), _size(g, 1, 9),
                            _size(g, 1, 32), _size(g, 1, 16))
    q, k, v = _randn(g, b, h, lq, dk), _randn(g, b, h, lk, dk), _randn(g, b, h, lk, dv)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    padding = (torch.arange(lk) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    bias = _randn(g, lq, lk)
    bias[torch.rand(lq, lk, generator=g) < 0.3] = float("-inf")
    return [
        (f"random (B={b}, H={h}, Lq={lq}, Lk={lk}, Dk={dk}, Dv={dv})", [q, k, v], {}),
        ("padding mask (B, 1, 1, Lk)", [q, k, v, padding], {}),
        ("float mask (Lq, Lk) with -inf entries", [q, k, v, bias], {}),
        ("is_causal", [q, k, v], {"is_causal": True}),
        ("is_causal, length 1 queries", [q[..., :1, :], k, v], {"is_causal": True}),
        ("non-contiguous query, key and value", [_noncontiguous(q), _noncontiguous(k), _noncontiguous(v)], {}),
        ("large logits (1e3), float64", [q.double() * 1e3, k.double(), v.double()], {}),  # float32 rounding > tol
        ("custom scale 1/d", [q, k, v], {"scale": 1.0 / dk}),
        ("float64", [q.double(), k.double(), v.double(), padding], {}),
    ]


def _sdpa_reference(query, key, value, attn_mask=None, is_causal=False, scale=None):
    return course_lib.scaled_dot_product_attention(query, key, value, attn_mask, is_causal=is_causal, scale=scale)


EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in (
        Exercise("nadaraya_watson", "lesson1_dot_product", course_lib.nadaraya_watson,
                 _nadaraya_watson_visible, _nadaraya_watson_hidden),
        Exercise("softmax", "lesson1_dot_product", course_lib.softmax, _softmax_visible, _softmax_hidden),
        Exercise("masked_softmax", "lesson1_dot_product", course_lib.masked_softmax,
                 _masked_softmax_visible, _masked_softmax_hidden),
        Exercise("causal_mask", "lesson1_dot_product", course_lib.causal_mask, _causal_mask_visible,
                 _causal_mask_hidden),
        Exercise("padding_mask", "lesson1_dot_product", course_lib.padding_mask, _padding_mask_visible,
                 _padding_mask_hidden),
        Exercise("scaled_dot_product_attention", "lesson1_dot_product", _sdpa_reference, _sdpa_visible, _sdpa_hidden),
    )
}


# --- cases ----------------------------------------------------------------------------------------

def _float64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.double()
    return value


def _case(exercise: Exercise, description: str, args: list, kwargs: dict) -> dict:
    """One case: the inputs and the reference's output, computed in float64 and cast back."""
    expected = exercise.reference(*map(_float64, args), **{k: _float64(v) for k, v in kwargs.items()})
    floats = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor) and a.is_floating_point()]
    if expected.is_floating_point() and floats:
        expected = expected.to(floats[0].dtype)
    atol, rtol = TOLERANCES.get(expected.dtype, (0.0, 0.0))
    return {"case": description, "args": args, "kwargs": kwargs, "expected": expected, "atol": atol, "rtol": rtol}


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"no exercise called {name!r}; the course has: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def exercises_of(lesson: str) -> list[Exercise]:
    return [e for e in EXERCISES.values() if e.lesson == lesson]


def visible_cases(exercise: str) -> list[dict]:
    """The fixed visible cases of ``exercise`` (seeded by its name: the release is reproducible)."""
    e = get_exercise(exercise)
    g = torch.Generator().manual_seed(zlib.crc32(e.name.encode()))
    return [_case(e, *inputs) for inputs in e.visible_inputs(g)]


def visible_cases_for_lesson(lesson: str) -> dict[str, list[dict]]:
    """What the release stores as ``visible_cases.pt`` for ``lesson``."""
    return {e.name: visible_cases(e.name) for e in exercises_of(lesson)}


def hidden_cases(exercise: str, seed: int) -> list[dict]:
    e = get_exercise(exercise)
    g = torch.Generator().manual_seed(seed)
    return [_case(e, *inputs) for inputs in e.hidden_inputs(g)]


def check_against_reference(exercise: str, fn: Callable, seed: int | None = None) -> None:
    """The hidden test of ``exercise``: compare ``fn`` with course_lib on fresh inputs and edge cases.

    ``seed`` None draws a fresh one; a failure names it, so the instructor can reproduce the run.
    """
    seed = secrets.randbelow(2**31) if seed is None else seed
    try:
        check_cases(fn, hidden_cases(exercise, seed), exercise=exercise, kind="hidden")
    except CheckFailed as failure:
        raise CheckFailed(f"{failure}\n  (hidden cases drawn with seed {seed})") from None
