"""Lesson 1's graded exercises: dot-product attention (solutions/lesson1_dot_product)."""

from __future__ import annotations

import math

import torch

import course_lib
from autograde.exercises.base import DEFAULT_FORBIDDEN, Exercise, Mistake, noncontiguous, rand, randn, size


def _nadaraya_watson_visible(g):
    keys = torch.sort(rand(g, 8) * 5).values
    values = 2 * torch.sin(keys) + keys ** 0.8
    queries = torch.linspace(0, 5, 5)
    # 100 and -50 are so far from the keys (in [0, 5)) that every exp(score) underflows, even in float64:
    # float64, as in float32 the rounding of (q - k)^2 ~ 1e4 alone would exceed the tolerance
    far = torch.tensor([100.0, -50.0, 2.5], dtype=torch.float64)
    return [
        ("5 queries, 8 keys, bandwidth h=1", [queries, keys, values], {}),
        ("bandwidth h=0.3, a narrow kernel", [queries, keys, values], {"bandwidth": 0.3}),
        ("a single key: every prediction is its value", [queries, keys[:1], values[:1]], {}),
        ("queries 100 and -50, far from every key: each exp(score) underflows unless shifted, float64",
         [far, keys.double(), values.double()], {}),
        ("float64, bandwidth h=0.5", [queries.double(), keys.double(), values.double()], {"bandwidth": 0.5}),
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
        ("3x4 scores, dim=-1: each row sums to 1", [x], {}),
        ("3x4 scores, dim=0: each column sums to 1", [x], {"dim": 0}),
        ("x + 100: the same probabilities as x (naive exp overflows in float32)", [x + 100], {}),
        # section 2's logits: exp overflows (and underflows) in float64 as well, so the naive
        # softmax is NaN here in every dtype, and a shift by the whole tensor's max leaves row 1 at 0/0
        ("rows [1000, 999, 998] and [-1000, -999, -998] (naive exp overflows)",
         [torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -999.0, -998.0]])], {}),
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
    padding = torch.tensor([[True, True, True, False], [True, True, False, False]])
    minus_inf_row = randn(g, 2, 4)
    minus_inf_row[1] = float("-inf")
    return [
        ("padding mask [[T, T, T, F], [T, T, F, F]]: True keys take part, False keys get weight 0",
         [scores, padding], {}),
        ("mask (1, 4) broadcast over the rows", [scores, torch.tensor([[False, True, True, True]])], {}),
        ("causal 4x4 mask", [randn(g, 4, 4), torch.ones(4, 4, dtype=torch.bool).tril()], {}),
        ("mask=None: a plain softmax", [scores], {}),
        ("scores of magnitude 1e4 with the padding mask (naive exp overflows)", [scores * 1e4, padding], {}),
        ("a fully masked row gives zeros, not NaN",
         [scores, torch.tensor([[True, False, True, False], [False, False, False, False]])], {}),
        ("mask=None, row 1 all -inf: counts as fully masked, zeros", [minus_inf_row], {}),
        ("dim=0 with the padding mask: each column sums to 1 over its True entries", [scores, padding], {"dim": 0}),
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
    return [("n_q=4: query i sees the keys j <= i, itself included", [4], {}),
            ("Lq=3, Lk=5: aligned top-left, query 0 sees key 0 only", [3, 5], {}),
            ("Lq=5, Lk=3: aligned top-left, the last queries see every key", [5, 3], {}),
            ("n_q=1", [1], {})]


def _causal_mask_hidden(g):
    n_q, n_k = size(g, 1, 30), size(g, 1, 30)
    return [(f"n_q={n_q}", [n_q], {}), (f"Lq={n_q}, Lk={n_k}", [n_q, n_k], {}), ("keyword n_k", [2], {"n_k": 7})]


def _padding_mask_visible(g):
    return [
        ("lengths [1, 3, 2], max_len 4: True at the positions j < length", [torch.tensor([1, 3, 2]), 4], {}),
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
        ("no mask, Lq=Lk=4, d=8, default scale 1/sqrt(8)", [q, k, v], {}),
        ("d=1, where the default scale 1/sqrt(d) is 1", [randn(g, 4, 1), randn(g, 4, 1), randn(g, 4, 8)], {}),
        ("scale=0.5 given: used instead of 1/sqrt(d)", [q, k, v], {"scale": 0.5}),
        ("Lq=3, Lk=5, Dk=8, Dv=6", [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 6)], {}),
        ("batch (2, 2), boolean padding mask (2, 1, 1, 4): True keys take part",
         [randn(g, 2, 2, 3, 8), randn(g, 2, 2, 4, 8), randn(g, 2, 2, 4, 8), pad], {}),
        ("float mask (0, -2 and -inf entries) added to the scores",
         [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 4), bias], {}),
        ("is_causal, Lq=Lk=4", [q, k, v], {"is_causal": True}),
        ("is_causal, Lq=3, Lk=5: aligned top-left, query 0 sees key 0 only",
         [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 8)], {"is_causal": True}),
        ("a query with every key masked gives zeros",
         [randn(g, 3, 8), randn(g, 5, 8), randn(g, 5, 8), fully_masked], {}),
        ("float64, batch (2, 3)", [randn(g, 2, 3, 4, 16, dtype=torch.float64),
                                   randn(g, 2, 3, 6, 16, dtype=torch.float64),
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


# --- the mistakes students really make, as the outputs they give (tests/mistakes/lesson1_dot_product.py
# holds them as student code); a failing answer that gives one of these outputs is told its hint.

def _naive_nadaraya_watson(queries, keys, values, bandwidth=1.0):
    kernel = torch.exp(-((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2))  # no max shift
    return kernel / kernel.sum(dim=1, keepdim=True) @ values


def _nadaraya_watson_with_score_over(denominator):
    """Nadaraya–Watson whose score is -(q - k)^2 / denominator(h) instead of / (2 h^2)."""
    def mistaken(queries, keys, values, bandwidth=1.0):
        return course_lib.nadaraya_watson(queries, keys, values, bandwidth=math.sqrt(denominator(bandwidth) / 2))
    return mistaken


def _naive_softmax(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)


def _masked_softmax_nan_when_fully_masked(scores, mask=None, dim=-1):
    return torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), dim=dim)


def _masked_softmax_without_the_shift(scores, mask=None, dim=-1):
    """Right in every respect but the max shift: fully masked rows give zeros, large scores overflow."""
    exp_scores = torch.exp(scores if mask is None else scores.masked_fill(~mask, float("-inf")))
    total = exp_scores.sum(dim=dim, keepdim=True)
    return exp_scores / total.masked_fill(total == 0, 1.0)


def _bottom_right_causal_mask(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.ones(n_q, n_k, dtype=torch.bool).tril(diagonal=n_k - n_q)


def _sdpa_with(*, scale_rule=None, mask_rule=None):
    """scaled_dot_product_attention with one mistake: the scale it uses is ``scale_rule(scale, d_k)``, or
    its mask and is_causal are ``mask_rule(attn_mask, is_causal, Lq, Lk)``."""
    def mistaken(query, key, value, attn_mask=None, is_causal=False, scale=None):
        if scale_rule is not None:
            scale = scale_rule(scale, query.shape[-1])
        if mask_rule is not None:
            attn_mask, is_causal = mask_rule(attn_mask, is_causal, query.shape[-2], key.shape[-2])
        return course_lib.scaled_dot_product_attention(query, key, value, attn_mask, is_causal=is_causal, scale=scale)
    return mistaken


def _sdpa_nan_when_fully_masked(query, key, value, attn_mask=None, is_causal=False, scale=None):
    scores = query @ key.transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if is_causal:
        attn_mask = course_lib.causal_mask(query.shape[-2], key.shape[-2])
    if attn_mask is not None and attn_mask.is_floating_point():
        scores, attn_mask = scores + attn_mask, None
    return _masked_softmax_nan_when_fully_masked(scores, attn_mask) @ value


SHIFT = "every exp(score) underflowed to 0 and 0/0 is NaN: subtract each row's largest score before torch.exp"
NO_SQRT_D = "scores are not divided by sqrt(d): multiply Q K^T by scale = 1/sqrt(d_k)"

NADARAYA_WATSON_MISTAKES = (
    Mistake(SHIFT, _naive_nadaraya_watson),
    Mistake("the weights do not sum to 1: divide each row of exp(scores) by its sum over the keys",
            lambda queries, keys, values, bandwidth=1.0: torch.exp(
                -((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2)) @ values),
    Mistake("the weights sum to 1 over the queries (dim 0): each query's weights must sum to 1 over the keys (dim 1)",
            lambda queries, keys, values, bandwidth=1.0: course_lib.softmax(
                -((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2), dim=0) @ values),
    Mistake("the score divides by h: the Gaussian kernel's score is -(q - k)**2 / (2 * h**2)",
            _nadaraya_watson_with_score_over(lambda h: h)),
    Mistake("the score divides by 2h: the Gaussian kernel's score is -(q - k)**2 / (2 * h**2)",
            _nadaraya_watson_with_score_over(lambda h: 2 * h)),
    Mistake("the score divides by h**2: the Gaussian kernel's score is -(q - k)**2 / (2 * h**2)",
            _nadaraya_watson_with_score_over(lambda h: h**2)),
)

SOFTMAX_MISTAKES = (
    Mistake("exp overflowed: subtract x.amax(dim, keepdim=True) before torch.exp", _naive_softmax),
    Mistake("a row far below the tensor's overall maximum underflowed to 0/0: subtract each row's own maximum, "
            "x.amax(dim=dim, keepdim=True), not x.max()",
            lambda x, dim=-1: _naive_softmax(x - x.max(), dim)),
    Mistake("the softmax runs along the last dimension whatever `dim` says: pass dim to .amax and .sum",
            lambda x, dim=-1: course_lib.softmax(x, dim=-1)),
    Mistake("the sum runs over the whole tensor: sum along dim only, with keepdim=True",
            lambda x, dim=-1: torch.exp(x - x.amax(dim=dim, keepdim=True)) / torch.exp(
                x - x.amax(dim=dim, keepdim=True)).sum()),
)

MASKED_SOFTMAX_MISTAKES = (
    Mistake("the mask's polarity is flipped: True means the key takes part, so fill -inf where the mask is False "
            "(~mask)", lambda scores, mask=None, dim=-1: course_lib.masked_softmax(
                scores, None if mask is None else ~mask, dim)),
    Mistake("masked scores were set to 0, and exp(0) = 1 still gives them weight: fill them with float('-inf')",
            lambda scores, mask=None, dim=-1: course_lib.softmax(
                scores if mask is None else scores.masked_fill(~mask, 0.0), dim)),
    Mistake("the masked weights were zeroed after the softmax, so the rest no longer sum to 1: mask the scores "
            "before it", lambda scores, mask=None, dim=-1: course_lib.softmax(scores, dim) * (
                1.0 if mask is None else mask)),
    Mistake("a fully masked row has max -inf, and -inf - (-inf) is NaN: give such a row zeros",
            _masked_softmax_nan_when_fully_masked),
    Mistake("exp overflowed: subtract the row's largest unmasked score before torch.exp",
            _masked_softmax_without_the_shift),
)

CAUSAL_MASK_MISTAKES = (
    Mistake("the diagonal is masked: query i may also see key i itself (j <= i, not j < i)",
            lambda n_q, n_k=None: torch.ones(n_q, n_q if n_k is None else n_k, dtype=torch.bool).tril(-1)),
    Mistake("the mask is transposed: query i sees the keys j <= i (lower triangle), not the future ones",
            lambda n_q, n_k=None: torch.ones(n_q, n_q if n_k is None else n_k, dtype=torch.bool).triu()),
    Mistake("True and False are swapped: True means the key takes part (j <= i)",
            lambda n_q, n_k=None: ~course_lib.causal_mask(n_q, n_k)),
    Mistake("the mask is aligned bottom-right: align it top-left, as is_causal=True in PyTorch "
            "(mask[i, j] = j <= i, whatever Lq and Lk)", _bottom_right_causal_mask),
)

PADDING_MASK_MISTAKES = (
    Mistake("one position too many is True: position j is real when j < lengths[b], not j <= lengths[b]",
            lambda lengths, max_len: torch.arange(max_len)[None, :] <= lengths[:, None]),
    Mistake("True and False are swapped: True marks the real tokens (j < lengths[b]), False the padding",
            lambda lengths, max_len: ~course_lib.padding_mask(lengths, max_len)),
)

SDPA_MISTAKES = (
    Mistake(NO_SQRT_D, _sdpa_with(scale_rule=lambda scale, d_k: 1.0 if scale is None else scale)),
    Mistake("scores are divided by d: the default scale is 1/sqrt(d_k), not 1/d_k",
            _sdpa_with(scale_rule=lambda scale, d_k: 1.0 / d_k if scale is None else scale)),
    Mistake("the scale argument is ignored: use it when given (scale=None means 1/sqrt(d_k))",
            _sdpa_with(scale_rule=lambda scale, d_k: None)),
    Mistake("the scores are divided by scale: scale is a factor, Q K^T * scale",
            _sdpa_with(scale_rule=lambda scale, d_k: None if scale is None else 1 / scale)),
    Mistake("the float mask is ignored: a float attn_mask is added to the scores",
            _sdpa_with(mask_rule=lambda mask, causal, lq, lk: (
                None if mask is not None and mask.is_floating_point() else mask, causal))),
    Mistake("the boolean mask's polarity is flipped: True means the key takes part",
            _sdpa_with(mask_rule=lambda mask, causal, lq, lk: (
                ~mask if mask is not None and mask.dtype == torch.bool else mask, causal))),
    Mistake("is_causal is ignored: with is_causal=True, query i sees only the keys j <= i",
            _sdpa_with(mask_rule=lambda mask, causal, lq, lk: (mask, False))),
    Mistake("the causal mask is aligned bottom-right: is_causal=True aligns it top-left, as causal_mask(Lq, Lk)",
            _sdpa_with(mask_rule=lambda mask, causal, lq, lk: (
                (_bottom_right_causal_mask(lq, lk), False) if causal else (mask, causal)))),
    Mistake("a query whose every key is masked got NaN: it must get zeros (your masked_softmax gives them)",
            _sdpa_nan_when_fully_masked),
)


# Every exercise that computes a softmax forbids torch's: writing it is the lesson (the notebook says so
# in each exercise's text; tests/test_exercises.py holds the two together).
WITHOUT_SOFTMAX = (*DEFAULT_FORBIDDEN, "softmax")

EXERCISES = (
    Exercise("nadaraya_watson", "lesson1_dot_product", course_lib.nadaraya_watson,
             _nadaraya_watson_visible, _nadaraya_watson_hidden, forbidden=WITHOUT_SOFTMAX,
             mistakes=NADARAYA_WATSON_MISTAKES),
    Exercise("softmax", "lesson1_dot_product", course_lib.softmax, _softmax_visible, _softmax_hidden,
             forbidden=WITHOUT_SOFTMAX, mistakes=SOFTMAX_MISTAKES),
    Exercise("masked_softmax", "lesson1_dot_product", course_lib.masked_softmax,
             _masked_softmax_visible, _masked_softmax_hidden, forbidden=WITHOUT_SOFTMAX,
             mistakes=MASKED_SOFTMAX_MISTAKES),
    Exercise("causal_mask", "lesson1_dot_product", course_lib.causal_mask, _causal_mask_visible,
             _causal_mask_hidden, mistakes=CAUSAL_MASK_MISTAKES),
    Exercise("padding_mask", "lesson1_dot_product", course_lib.padding_mask, _padding_mask_visible,
             _padding_mask_hidden, mistakes=PADDING_MASK_MISTAKES),
    Exercise("scaled_dot_product_attention", "lesson1_dot_product", _sdpa_reference, _sdpa_visible, _sdpa_hidden,
             forbidden=WITHOUT_SOFTMAX, mistakes=SDPA_MISTAKES),
)
