"""Lesson 2's graded exercises: additive attention and a decoder that learns to align.

The exercises take explicit tensors (query, key, the parameters W_q, W_k, v, ...), so a case is
a set of tensors and the check needs no module. Each exercise's function has the signature of its
reference in ``course_lib``, which is the reference itself; functions that return several tensors
are compared output by output, named by the library's NamedTuple (``AttentionOutput``'s
``context`` and ``weights``, ``DecoderStepOutput``'s ``logits``, ``hidden`` and ``weights``).
"""

from __future__ import annotations

import secrets

import torch

import course_lib
from course_kit.data.dates import make_date_splits
from autograde.exercises.base import Exercise, noncontiguous, randn, size
from course_kit.seq2seq import decoder_parameters

LESSON = "lesson2_additive"
MIN_TEST_ACCURACY = 0.9  # the trained-model check; the solution reaches about 99%


def _score_parameters(g, d_q, d_k, h, dtype=torch.float32):
    return [randn(g, h, d_q, dtype=dtype), randn(g, h, d_k, dtype=dtype), randn(g, h, dtype=dtype)]


def _additive_scores_visible(g):
    q, k = randn(g, 2, 3), randn(g, 4, 5)
    W_q, W_k, v = _score_parameters(g, 3, 5, 6)
    return [
        ("Lq=2 queries of size d_q=3, Lk=4 keys of size d_k=5, h=6", [q, k, W_q, W_k, v], {}),
        ("W_q = 0: every query scores the keys alike", [q, k, torch.zeros_like(W_q), W_k, v], {}),
        ("inputs x 100: tanh saturates at +-1", [q * 100, k * 100, W_q, W_k, v], {}),
        ("batch of 2, Lq=1, Lk=4", [randn(g, 2, 1, 3), randn(g, 2, 4, 5), W_q, W_k, v], {}),
        ("float64, d_q = d_k = 4, h=2", [randn(g, 3, 4, dtype=torch.float64), randn(g, 3, 4, dtype=torch.float64),
                                        *_score_parameters(g, 4, 4, 2, dtype=torch.float64)], {}),
    ]


def _additive_scores_hidden(g):
    b, lq, lk, d_q, d_k, h = (size(g, 1, 4), size(g, 1, 7), size(g, 1, 9), size(g, 1, 12), size(g, 1, 12),
                              size(g, 1, 16))
    q, k = randn(g, b, lq, d_q), randn(g, b, lk, d_k)
    params = _score_parameters(g, d_q, d_k, h)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, d_q={d_q}, d_k={d_k}, h={h})", [q, k, *params], {}),
        ("two batch dims (2, B)", [randn(g, 2, b, lq, d_q), randn(g, 2, b, lk, d_k), *params], {}),
        ("no batch dim", [q[0], k[0], *params], {}),
        ("non-contiguous queries and keys", [noncontiguous(q), noncontiguous(k), *params], {}),
        ("float64", [q.double(), k.double(), *[p.double() for p in params]], {}),
    ]


def _general_scores_visible(g):
    q, k = randn(g, 2, 3), randn(g, 4, 5)
    return [
        ("Lq=2 queries of size d_q=3, Lk=4 keys of size d_k=5, W (3, 5)", [q, k, randn(g, 3, 5)], {}),
        ("W = identity: the dot product", [randn(g, 2, 4), randn(g, 3, 4), torch.eye(4)], {}),
        ("batch of 2, Lq=3, Lk=5", [randn(g, 2, 3, 4), randn(g, 2, 5, 6), randn(g, 4, 6)], {}),
        ("float64", [randn(g, 3, 2, dtype=torch.float64), randn(g, 4, 3, dtype=torch.float64),
                     randn(g, 2, 3, dtype=torch.float64)], {}),
    ]


def _general_scores_hidden(g):
    b, lq, lk, d_q, d_k = size(g, 1, 4), size(g, 1, 7), size(g, 1, 9), size(g, 1, 12), size(g, 1, 12)
    q, k, W = randn(g, b, lq, d_q), randn(g, b, lk, d_k), randn(g, d_q, d_k)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, d_q={d_q}, d_k={d_k})", [q, k, W], {}),
        ("no batch dim", [q[0], k[0], W], {}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(W)], {}),
        ("float64", [q.double(), k.double(), W.double()], {}),
    ]


def _additive_attention_visible(g):
    q, k = randn(g, 2, 1, 3), randn(g, 2, 4, 5)
    params = _score_parameters(g, 3, 5, 6)
    huge = k.clone()
    huge[1, 2:] = 1e6  # the padded keys of sequence 1 hold huge values: any weight on them shows
    return [
        ("no padding: B=2, Lq=1, Lk=4, values = keys", [q, k, k, *params], {}),
        ("valid_lens [4, 2]: the last 2 keys of sequence 1 are padding", [q, k, k, *params],
         {"valid_lens": torch.tensor([4, 2])}),
        ("padded keys hold values 1e6: their weight must be exactly 0", [q, k, huge, *params],
         {"valid_lens": torch.tensor([4, 2])}),
        ("Lq=2 queries, values of size 2, valid_lens [1, 3]", [randn(g, 2, 2, 3), k, randn(g, 2, 4, 2), *params],
         {"valid_lens": torch.tensor([1, 3])}),
        ("float64, no valid_lens", [q.double(), k.double(), k.double(), *[p.double() for p in params]], {}),
    ]


def _additive_attention_hidden(g):
    b, lq, lk, d_q, d_k, d_v, h = (size(g, 1, 4), size(g, 1, 6), size(g, 1, 9), size(g, 1, 10), size(g, 1, 10),
                                   size(g, 1, 8), size(g, 1, 16))
    q, k, value = randn(g, b, lq, d_q), randn(g, b, lk, d_k), randn(g, b, lk, d_v)
    params = _score_parameters(g, d_q, d_k, h)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, d_q={d_q}, d_k={d_k}, Dv={d_v}, h={h})", [q, k, value, *params], {}),
        (f"valid_lens {lengths.tolist()}", [q, k, value, *params], {"valid_lens": lengths}),
        ("every sequence of length 1", [q, k, value, *params], {"valid_lens": torch.ones(b, dtype=torch.long)}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(value), *params],
         {"valid_lens": lengths}),
        ("float64", [q.double(), k.double(), value.double(), *[p.double() for p in params]],
         {"valid_lens": lengths}),
    ]


def _step_inputs(g, b, e, h, k, a, v, ls, lengths, dtype=torch.float32):
    params = {name: p.to(dtype) for name, p in decoder_parameters(e, h, k, a, v, generator=g).items()}
    return [randn(g, b, e, dtype=dtype), randn(g, b, h, dtype=dtype).tanh(), randn(g, b, ls, k, dtype=dtype),
            torch.tensor(lengths), params]


def _decoder_step_visible(g):
    return [
        ("B=2, E=3, H=4, annotations (2, 5, 6), a=5, V=7, source lengths [5, 3]",
         _step_inputs(g, 2, 3, 4, 6, 5, 7, 5, [5, 3]), {}),
        ("B=1, a single source character", _step_inputs(g, 1, 3, 4, 6, 5, 7, 1, [1]), {}),
        ("float64, B=3, source lengths [2, 4, 1]", _step_inputs(g, 3, 2, 5, 4, 3, 6, 4, [2, 4, 1], torch.float64), {}),
    ]


def _decoder_step_hidden(g):
    b, e, h, k, a, v, ls = (size(g, 1, 5), size(g, 1, 8), size(g, 1, 8), size(g, 1, 8), size(g, 1, 8),
                            size(g, 2, 12), size(g, 1, 9))
    lengths = torch.randint(1, ls + 1, (b,), generator=g).tolist()
    return [
        (f"random (B={b}, E={e}, H={h}, K={k}, a={a}, V={v}, Ls={ls}), lengths {lengths}",
         _step_inputs(g, b, e, h, k, a, v, ls, lengths), {}),
        ("float64", _step_inputs(g, b, e, h, k, a, v, ls, lengths, torch.float64), {}),
    ]


def fresh_test_pairs(n: int = 500, seed: int | None = None) -> list[tuple[str, str]]:
    """Dates the model has most likely never seen, drawn from a fresh seed (the trained model's hidden test)."""
    seed = secrets.randbelow(2**31) if seed is None else seed
    return make_date_splits(n_train=0, n_validation=0, n_test=n, seed=seed).test


# The trained model is called as model.translate(sources); at least 90% of its translations must be exact.
TRANSLATION_CHECK = {"method": "translate", "min_accuracy": 0.9}


def _translation_case(description: str, pairs: list[tuple[str, str]]) -> tuple:
    """Only the sources go to the student's model; the targets stay with the grader as the expected output."""
    return (description, [[source for source, _ in pairs]], {},
            {**TRANSLATION_CHECK, "expected": [target for _, target in pairs]})


def _trained_model_visible(g):
    test = make_date_splits(n_train=20_000, n_validation=1_000, n_test=1_000, seed=0).test  # the notebook's data.test
    return [_translation_case("the lesson's 1,000 test dates", test)]


def _trained_model_hidden(g):
    return [_translation_case("500 dates drawn afresh", fresh_test_pairs(500, seed=size(g, 0, 2**31 - 1)))]


def _targets_given(*args, **kwargs):
    raise AssertionError("the trained model's cases carry their expected translations")


EXERCISES = (
    Exercise("additive_scores", LESSON, course_lib.additive_scores, _additive_scores_visible, _additive_scores_hidden),
    Exercise("general_scores", LESSON, course_lib.general_scores, _general_scores_visible, _general_scores_hidden),
    Exercise("additive_attention", LESSON, course_lib.additive_attention, _additive_attention_visible,
             _additive_attention_hidden),
    Exercise("decoder_step", LESSON, course_lib.attention_decoder_step, _decoder_step_visible, _decoder_step_hidden),
    Exercise("trained_model", LESSON, _targets_given, _trained_model_visible, _trained_model_hidden),
)
