"""Lesson 1's known mistakes, written as students write them (independently of the exercise definitions).

Each function below is one exercise's answer with one mistake in it, the way it shows up in real
submissions; ``MISTAKES`` pairs it with the words its visible test's failure must show.
"""

from __future__ import annotations

import math

import torch

from mistakes import KnownMistake

# --- exercise 1: softmax -------------------------------------------------------------------------

def softmax_without_the_shift(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_shifted_by_the_overall_max(x, dim=-1):
    e = torch.exp(x - x.max())  # one maximum for the whole tensor
    return e / e.sum(dim=dim, keepdim=True)


def softmax_along_the_last_dim(x, dim=-1):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def softmax_summed_over_everything(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum()


# --- exercise 2: Nadaraya–Watson ------------------------------------------------------------------

def nadaraya_watson_without_the_shift(queries, keys, values, bandwidth=1.0):
    kernel = torch.exp(-((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2))
    return (kernel / kernel.sum(dim=1, keepdim=True)) @ values


def nadaraya_watson_unnormalised(queries, keys, values, bandwidth=1.0):
    kernel = torch.exp(-((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2))
    return kernel @ values


def nadaraya_watson_normalised_over_the_queries(queries, keys, values, bandwidth=1.0):
    scores = -((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2)
    kernel = torch.exp(scores - scores.amax(dim=0, keepdim=True))
    return (kernel / kernel.sum(dim=0, keepdim=True)) @ values


def nadaraya_watson_over(denominator):
    """The score -(q - k)^2 / denominator(h), shifted and normalised correctly."""
    def nadaraya_watson(queries, keys, values, bandwidth=1.0):
        scores = -((queries[:, None] - keys[None, :]) ** 2) / denominator(bandwidth)
        kernel = torch.exp(scores - scores.amax(dim=1, keepdim=True))
        return (kernel / kernel.sum(dim=1, keepdim=True)) @ values
    return nadaraya_watson


# --- exercise 3: masked softmax -------------------------------------------------------------------

def _stable_softmax(scores, dim):
    row_max = scores.amax(dim=dim, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(scores - row_max)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


def masked_softmax_flipped(scores, mask=None, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))  # True read as "masked out"
    return _stable_softmax(scores, dim)


def masked_softmax_filled_with_zero(scores, mask=None, dim=-1):
    if mask is not None:
        scores = scores * mask  # masked scores become 0, not -inf
    return _stable_softmax(scores, dim)


def masked_softmax_masked_after(scores, mask=None, dim=-1):
    weights = _stable_softmax(scores, dim)
    return weights if mask is None else weights * mask  # zeroed, but not renormalised


def masked_softmax_nan_row(scores, mask=None, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = torch.exp(scores - scores.amax(dim=dim, keepdim=True))  # -inf - (-inf) on a fully masked row
    return e / e.sum(dim=dim, keepdim=True)


def masked_softmax_without_the_shift(scores, mask=None, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = torch.exp(scores)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


# --- exercises 4 and 5: the masks -----------------------------------------------------------------

def causal_mask_without_the_diagonal(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.arange(n_k)[None, :] < torch.arange(n_q)[:, None]


def causal_mask_transposed(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.arange(n_k)[None, :] >= torch.arange(n_q)[:, None]


def causal_mask_flipped(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.arange(n_k)[None, :] > torch.arange(n_q)[:, None]  # True where masked


def causal_mask_bottom_right(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.ones(n_q, n_k, dtype=torch.bool).tril(diagonal=n_k - n_q)  # the last query sees every key


def padding_mask_one_too_many(lengths, max_len):
    return torch.arange(max_len)[None, :] <= lengths[:, None]


def padding_mask_flipped(lengths, max_len):
    return torch.arange(max_len)[None, :] >= lengths[:, None]  # True at the padding


# --- exercise 6: scaled dot-product attention -----------------------------------------------------

def attention(scale_rule, mask_rule=None):
    """A scaled_dot_product_attention, right but for its scale (``scale_rule(scale, d)``) or its mask
    (``mask_rule(scores, attn_mask, is_causal)`` returns the masked scores)."""
    def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
        scores = query @ key.transpose(-2, -1) * scale_rule(scale, query.shape[-1])
        if mask_rule is not None:
            scores = mask_rule(scores, attn_mask, is_causal)
        elif is_causal:
            scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
        elif attn_mask is not None and attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        elif attn_mask is not None:
            scores = scores + attn_mask
        return _stable_softmax(scores, -1) @ value
    return scaled_dot_product_attention


def right_scale(scale, d):
    return 1 / math.sqrt(d) if scale is None else scale


def float_mask_ignored(scores, attn_mask, is_causal):
    if is_causal:
        return scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return scores.masked_fill(~attn_mask, float("-inf"))
    return scores


def boolean_mask_flipped(scores, attn_mask, is_causal):
    if is_causal:
        return scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return scores.masked_fill(attn_mask, float("-inf"))
    return scores if attn_mask is None else scores + attn_mask


def is_causal_ignored(scores, attn_mask, is_causal):
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return scores.masked_fill(~attn_mask, float("-inf"))
    return scores if attn_mask is None else scores + attn_mask


def causal_bottom_right(scores, attn_mask, is_causal):
    if is_causal:
        n_q, n_k = scores.shape[-2:]
        return scores.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q), float("-inf"))
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return scores.masked_fill(~attn_mask, float("-inf"))
    return scores if attn_mask is None else scores + attn_mask


def scaled_dot_product_attention_nan_row(query, key, value, attn_mask=None, is_causal=False, scale=None):
    scores = query @ key.transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if is_causal:
        attn_mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True) @ value


SQRT_D = "scores are not divided by sqrt(d)"
BANDWIDTH = "the Gaussian kernel's score is -(q - k)**2 / (2 * h**2)"

MISTAKES = [
    KnownMistake("softmax", "no max shift", softmax_without_the_shift, "subtract x.amax(dim, keepdim=True)"),
    KnownMistake("softmax", "one max for the whole tensor", softmax_shifted_by_the_overall_max,
                 "subtract each row's own maximum"),
    KnownMistake("softmax", "dim ignored, always the last", softmax_along_the_last_dim,
                 "the softmax runs along the last dimension whatever `dim` says"),
    KnownMistake("softmax", "sum over the whole tensor", softmax_summed_over_everything,
                 "the sum runs over the whole tensor"),

    KnownMistake("nadaraya_watson", "no max shift", nadaraya_watson_without_the_shift,
                 "subtract each row's largest score before torch.exp"),
    KnownMistake("nadaraya_watson", "weights not normalised", nadaraya_watson_unnormalised,
                 "the weights do not sum to 1"),
    KnownMistake("nadaraya_watson", "normalised over the queries", nadaraya_watson_normalised_over_the_queries,
                 "the weights sum to 1 over the queries (dim 0)"),
    KnownMistake("nadaraya_watson", "2h² written h", nadaraya_watson_over(lambda h: h),
                 f"the score divides by h: {BANDWIDTH}"),
    KnownMistake("nadaraya_watson", "2h² written 2h", nadaraya_watson_over(lambda h: 2 * h),
                 f"the score divides by 2h: {BANDWIDTH}"),
    KnownMistake("nadaraya_watson", "2h² written h²", nadaraya_watson_over(lambda h: h**2),
                 f"the score divides by h**2: {BANDWIDTH}"),

    KnownMistake("masked_softmax", "mask polarity flipped", masked_softmax_flipped, "the mask's polarity is flipped"),
    KnownMistake("masked_softmax", "masked with 0 instead of -inf", masked_softmax_filled_with_zero,
                 "fill them with float('-inf')"),
    KnownMistake("masked_softmax", "weights zeroed after the softmax", masked_softmax_masked_after,
                 "mask the scores before it"),
    KnownMistake("masked_softmax", "NaN for a fully masked row", masked_softmax_nan_row,
                 "a fully masked row has max -inf, and -inf - (-inf) is NaN"),
    KnownMistake("masked_softmax", "no max shift", masked_softmax_without_the_shift,
                 "subtract the row's largest unmasked score"),

    KnownMistake("causal_mask", "diagonal excluded (j < i)", causal_mask_without_the_diagonal,
                 "query i may also see key i itself"),
    KnownMistake("causal_mask", "transposed (j >= i)", causal_mask_transposed, "the mask is transposed"),
    KnownMistake("causal_mask", "polarity flipped (True = masked)", causal_mask_flipped,
                 "True and False are swapped"),
    KnownMistake("causal_mask", "aligned bottom-right for Lq != Lk", causal_mask_bottom_right,
                 "the mask is aligned bottom-right"),

    KnownMistake("padding_mask", "off by one (<= instead of <)", padding_mask_one_too_many,
                 "one position too many is True"),
    KnownMistake("padding_mask", "polarity flipped (True = padding)", padding_mask_flipped,
                 "True and False are swapped"),

    KnownMistake("scaled_dot_product_attention", "no 1/sqrt(d)",
                 attention(lambda scale, d: 1.0 if scale is None else scale), SQRT_D),
    KnownMistake("scaled_dot_product_attention", "divided by d, not sqrt(d)",
                 attention(lambda scale, d: 1 / d if scale is None else scale),
                 "the default scale is 1/sqrt(d_k), not 1/d_k"),
    KnownMistake("scaled_dot_product_attention", "custom scale ignored",
                 attention(lambda scale, d: 1 / math.sqrt(d)), "the scale argument is ignored"),
    KnownMistake("scaled_dot_product_attention", "divided by the custom scale",
                 attention(lambda scale, d: 1 / math.sqrt(d) if scale is None else 1 / scale),
                 "scale is a factor, Q K^T * scale"),
    KnownMistake("scaled_dot_product_attention", "float mask ignored", attention(right_scale, float_mask_ignored),
                 "the float mask is ignored"),
    KnownMistake("scaled_dot_product_attention", "boolean mask polarity flipped",
                 attention(right_scale, boolean_mask_flipped), "the boolean mask's polarity is flipped"),
    KnownMistake("scaled_dot_product_attention", "is_causal ignored",
                 attention(right_scale, is_causal_ignored), "is_causal is ignored"),
    KnownMistake("scaled_dot_product_attention", "causal mask aligned bottom-right",
                 attention(right_scale, causal_bottom_right), "the causal mask is aligned bottom-right"),
    KnownMistake("scaled_dot_product_attention", "NaN for a fully masked query", scaled_dot_product_attention_nan_row,
                 "a query whose every key is masked got NaN"),
]
