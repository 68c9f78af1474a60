"""Lesson 1's graded exercises: dot-product attention (solutions/lesson1_dot_product)."""

from __future__ import annotations

import torch

import course_lib
from autograde.exercises.base import DEFAULT_FORBIDDEN, Exercise, noncontiguous, rand, randn, size


def _nadaraya_watson_visible(g):
    keys = torch.sort(rand(g, 8) * 5).values
    values = 2 * torch.sin(keys) + keys ** 0.8
    queries = torch.linspace(0, 5, 5)
    return [
        ("5 queries, 8 keys, bandwidth 1", [queries, keys, values], {}),
        ("narrow kernel, bandwidth 0.3", [queries, keys, values], {"bandwidth": 0.3}),
        ("a single key: every prediction is its value", [queries, keys[:1], values[:1]], {}),
        ("float64", [queries.double(), keys.double(), values.double()], {"bandwidth": 0.5}),
    ]


def _nadaraya_watson_hidden(g):
    lq, lk = size(g, 1, 12), size(g, 1, 40)
    keys = rand(g, lk) * 10
    return [
        (f"random, Lq={lq}, Lk={lk}", [randn(g, lq) * 3, keys, randn(g, lk)], {"bandwidth": 0.7}),
        # float64: in float32 the rounding of (q - k)^2 ~ 1e4 alone exceeds the tolerance
        ("queries far from every key (naive exp underflows), float64",
         [torch.tensor([100.0, -50.0], dtype=torch.float64), keys.double(), randn(g, lk, dtype=torch.float64)],
         {"bandwidth": 1.0}),
        (f"float64, Lq={lq}, Lk={lk}", [randn(g, lq, dtype=torch.float64), keys.double(),
                                          randn(g, lk, dtype=torch.float64)], {"bandwidth": 2.0}),
    ]


def _softmax_visible(g):
    x = randn(g, 3, 4)
    return [
        ("3x4 scores, dim=-1", [x], {}),
        ("3x4 scores, dim=0", [x], {"dim": 0}),
        ("x + 100: same probabilities as x", [x + 100], {}),
        ("logits of magnitude 1e4 (naive exp overflows)", [x * 1e4], {}),
        ("length 1", [randn(g, 2, 1)], {}),
        ("batched (2, 3, 5), float64", [randn(g, 2, 3, 5, dtype=torch.float64)], {}),
    ]


def _softmax_hidden(g):
    shape = (size(g, 1, 4), size(g, 1, 6), size(g, 1, 9))
    return [
        (f"random {shape}", [randn(g, *shape, scale=3)], {}),
        (f"random {shape}, dim=1", [randn(g, *shape)], {"dim": 1}),
        ("logits around -1e4", [randn(g, *shape) - 1e4], {}),
        ("logits of magnitude 1e30", [randn(g, *shape, scale=1e30)], {}),
        ("non-contiguous input", [noncontiguous(randn(g, *shape))], {}),
        ("float64", [randn(g, *shape, dtype=torch.float64, scale=50)], {"dim": -2}),
    ]


def _masked_softmax_visible(g):
    scores = randn(g, 2, 4)
    return [
        ("padding: last key of row 0 and last two of row 1 masked (False)",
         [scores, torch.tensor([[True, True, True, False], [True, True, False, False]])], {}),
        ("mask (1, 4) broadcast over the rows", [scores, torch.tensor([[False, True, True, True]])], {}),
        ("causal 4x4 mask", [randn(g, 4, 4), torch.ones(4, 4, dtype=torch.bool).tril()], {}),
        ("a fully masked row gives zeros, not NaN",
         [scores, torch.tensor([[True, False, True, False], [False, False, False, False]])], {}),
        ("float64 (2, 3, 4, 4) with a (4, 4) mask", [randn(g, 2, 3, 4, 4, dtype=torch.float64),
                                                     torch.ones(4, 4, dtype=torch.bool).tril()], {}),
    ]


def _masked_softmax_hidden(g):
    b, lq, lk = size(g, 1, 3), size(g, 1, 7), size(g, 1, 9)
    mask = rand(g, b, lq, lk) > 0.3
    mask[0, 0] = False  # one fully masked row
    return [
        (f"random mask (B={b}, Lq={lq}, Lk={lk}) with a fully masked row", [randn(g, b, lq, lk, scale=3), mask], {}),
        ("mask (B, 1, Lk) broadcast over queries", [randn(g, b, lq, lk), mask[:, :1, :]], {}),
        ("large scores (1e4)", [randn(g, b, lq, lk, scale=1e4), mask], {}),
        ("softmax over dim=1 with a mask", [randn(g, b, lq, lk), mask], {"dim": 1}),
        ("non-contiguous scores", [noncontiguous(randn(g, b, lq, lk)), mask], {}),
        ("float64, nothing masked", [randn(g, b, lq, lk, dtype=torch.float64), torch.ones(lk, dtype=torch.bool)], {}),
    ]


def _causal_mask_visible(g):
    return [("n_q=1", [1], {}), ("n_q=4", [4], {}), ("Lq=3, Lk=5", [3, 5], {}), ("Lq=5, Lk=3", [5, 3], {})]


def _causal_mask_hidden(g):
    n_q, n_k = size(g, 1, 30), size(g, 1, 30)
    return [(f"n_q={n_q}", [n_q], {}), (f"Lq={n_q}, Lk={n_k}", [n_q, n_k], {}), ("keyword n_k", [2], {"n_k": 7})]


def _padding_mask_visible(g):
    return [
        ("lengths [1, 3, 2], max_len 4", [torch.tensor([1, 3, 2]), 4], {}),
        ("an empty and a full sequence", [torch.tensor([0, 4]), 4], {}),
        ("a single sequence at max_len", [torch.tensor([5]), 5], {}),
    ]


def _padding_mask_hidden(g):
    max_len = size(g, 1, 20)
    lengths = torch.randint(0, max_len + 1, (size(g, 1, 8),), generator=g)
    return [(f"random lengths, max_len {max_len}", [lengths, max_len], {}),
            ("max_len larger than every length", [lengths, max_len + 5], {})]


def _sdpa_visible(g):
    q, k, v = randn(g, 4, 8), randn(g, 4, 8), randn(g, 4, 8)
    pad = torch.tensor([[True, True, True, True], [True, True, False, False]]).view(2, 1, 1, 4)  # (B, 1, 1, Lk)
    bias = torch.zeros(3, 5)
    bias[:, -1] = float("-inf")
    bias[1, 0] = -2.0
    fully_masked = torch.ones(3, 5, dtype=torch.bool)
    fully_masked[2] = False
    return [
        ("no mask, Lq=Lk=4, d=8", [q, k, v], {}),
        ("Lq=3, Lk=5, Dk=8, Dv=6", [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 6)], {}),
        ("batch (2, 2), padding mask (2, 1, 1, 4)",
         [randn(g, 2, 2, 3, 8), randn(g, 2, 2, 4, 8), randn(g, 2, 2, 4, 8), pad], {}),
        ("float mask added to the scores (with -inf)", [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 4), bias], {}),
        ("is_causal, Lq=Lk=4", [q, k, v], {"is_causal": True}),
        ("is_causal, Lq=3, Lk=5 (top-left aligned)", [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 8)],
         {"is_causal": True}),
        ("scale=0.5 instead of 1/sqrt(d)", [q, k, v], {"scale": 0.5}),
        ("a query with every key masked gives zeros",
         [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 8), fully_masked], {}),
        ("float64, batch (2, 3)", [randn(g, 2, 3, 4, 16, dtype=torch.float64), randn(g, 2, 3, 6, 16, dtype=torch.float64),
                                   randn(g, 2, 3, 6, 16, dtype=torch.float64)], {}),
    ]


def _sdpa_hidden(g):
    b, h, lq, lk, dk, dv = (size(g, 1, 3), size(g, 1, 4), size(g, 1, 9), size(g, 1, 9),
                            size(g, 1, 32), size(g, 1, 16))
    q, k, v = randn(g, b, h, lq, dk), randn(g, b, h, lk, dk), randn(g, b, h, lk, dv)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    padding = (torch.arange(lk) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    bias = randn(g, lq, lk)
    bias[rand(g, lq, lk) < 0.3] = float("-inf")
    return [
        (f"random (B={b}, H={h}, Lq={lq}, Lk={lk}, Dk={dk}, Dv={dv})", [q, k, v], {}),
        ("padding mask (B, 1, 1, Lk)", [q, k, v, padding], {}),
        ("float mask (Lq, Lk) with -inf entries", [q, k, v, bias], {}),
        ("is_causal", [q, k, v], {"is_causal": True}),
        ("is_causal, length 1 queries", [q[..., :1, :], k, v], {"is_causal": True}),
        ("non-contiguous query, key and value", [noncontiguous(q), noncontiguous(k), noncontiguous(v)], {}),
        ("large logits (1e3), float64", [q.double() * 1e3, k.double(), v.double()], {}),  # float32 rounding > tol
        ("custom scale 1/d", [q, k, v], {"scale": 1.0 / dk}),
        ("float64", [q.double(), k.double(), v.double(), padding], {}),
    ]


def _sdpa_reference(query, key, value, attn_mask=None, is_causal=False, scale=None):
    return course_lib.scaled_dot_product_attention(query, key, value, attn_mask, is_causal=is_causal, scale=scale)


EXERCISES = (
    Exercise("nadaraya_watson", "lesson1_dot_product", course_lib.nadaraya_watson,
             _nadaraya_watson_visible, _nadaraya_watson_hidden),
    # The two softmax exercises ask for the function itself: torch's softmax would be the answer.
    Exercise("softmax", "lesson1_dot_product", course_lib.softmax, _softmax_visible, _softmax_hidden,
             forbidden=(*DEFAULT_FORBIDDEN, "softmax")),
    Exercise("masked_softmax", "lesson1_dot_product", course_lib.masked_softmax,
             _masked_softmax_visible, _masked_softmax_hidden, forbidden=(*DEFAULT_FORBIDDEN, "softmax")),
    Exercise("causal_mask", "lesson1_dot_product", course_lib.causal_mask, _causal_mask_visible,
             _causal_mask_hidden),
    Exercise("padding_mask", "lesson1_dot_product", course_lib.padding_mask, _padding_mask_visible,
             _padding_mask_hidden),
    Exercise("scaled_dot_product_attention", "lesson1_dot_product", _sdpa_reference, _sdpa_visible, _sdpa_hidden),
)


