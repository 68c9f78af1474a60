"""Lesson 3's graded exercises: multi-head attention, positions, the KV cache (solutions/lesson3_multihead).

Every exercise but the trained model has the library function of its name as its reference, called
as the student's function is called: the student writes ``course_lib``'s signature (or the part of
it the cases use), so no adapter stands between the two. Weights are in torch's (out, in) layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import course_lib
from autograde.exercises.base import Exercise, Mistake, noncontiguous, randn, size
from course_kit.data.reversal import ReversalTask

LESSON = "lesson3_multihead"
# A trained model passes when at least this fraction of sequences is reversed without a mistake. The
# solution reverses 100% on every CPU path benchmarks/trained_models.py tries; a model without
# positions, about 0%. The margin is for the machines nobody tried: with a constant learning rate the
# same seed reversed 100% on one path and 52% on another.
MIN_SEQUENCE_ACCURACY = 0.9


def _weights(g, e_out, e_in, dtype=torch.float32):
    """A projection in torch's (out, in) layout, scaled as nn.Linear initialises (std ~ 1/sqrt(in))."""
    return randn(g, e_out, e_in, dtype=dtype, scale=1 / math.sqrt(e_in))


# --- split_heads / merge_heads --------------------------------------------------------------------

def _split_heads_visible(g):
    return [
        ("(B=2, L=3, E=8) into 2 heads", [randn(g, 2, 3, 8), 2], {}),
        ("(B=1, L=4, E=6) into 3 heads", [randn(g, 1, 4, 6), 3], {}),
        ("arange (L=2, E=4), no batch dim, 2 heads: head 0 holds features 0, 1 of both positions",
         [torch.arange(8.0).reshape(2, 4), 2], {}),
        ("one head: (B, L, E) -> (B, 1, L, E)", [randn(g, 2, 3, 4), 1], {}),
        ("float64, extra leading dims (2, 2, 5, 12), 4 heads", [randn(g, 2, 2, 5, 12, dtype=torch.float64), 4], {}),
    ]


def _split_heads_hidden(g):
    b, l, h, d = size(g, 1, 4), size(g, 1, 9), size(g, 1, 6), size(g, 1, 8)
    return [
        (f"random (B={b}, L={l}, E={h * d}), {h} heads", [randn(g, b, l, h * d), h], {}),
        ("E heads of width 1", [randn(g, b, l, h * d), h * d], {}),
        ("non-contiguous input", [noncontiguous(randn(g, b, l, h * d)), h], {}),
        ("length 1, float64", [randn(g, b, 1, h * d, dtype=torch.float64), h], {}),
    ]


def _merge_heads_visible(g):
    return [
        ("(B=2, H=2, L=3, D=4) -> (2, 3, 8)", [randn(g, 2, 2, 3, 4)], {}),
        ("arange (H=2, L=2, D=2), no batch dim: position 0 gets head 0's row 0, then head 1's",
         [torch.arange(8.0).reshape(2, 2, 2)], {}),
        ("one head", [randn(g, 2, 1, 3, 4)], {}),
        ("float64 (B=1, H=3, L=4, D=2)", [randn(g, 1, 3, 4, 2, dtype=torch.float64)], {}),
    ]


def _merge_heads_hidden(g):
    b, h, l, d = size(g, 1, 4), size(g, 1, 6), size(g, 1, 9), size(g, 1, 8)
    return [
        (f"random (B={b}, H={h}, L={l}, D={d})", [randn(g, b, h, l, d)], {}),
        ("non-contiguous input (a transposed view)", [randn(g, b, l, h, d).transpose(1, 2)], {}),
        ("extra leading dims, float64", [randn(g, 2, b, h, l, d, dtype=torch.float64)], {}),
    ]


# --- multihead_attention --------------------------------------------------------------------------

def _mha_weights(g, e, ek=None, dtype=torch.float32):
    """W_q (E, E), W_k and W_v (E, E_k), W_o (E, E): torch's (out, in) layout."""
    ek = ek or e
    return [_weights(g, e, e, dtype), _weights(g, e, ek, dtype), _weights(g, e, ek, dtype), _weights(g, e, e, dtype)]


def _multihead_visible(g):
    x, w = randn(g, 2, 4, 8), _mha_weights(g, 8)
    x_q, memory, w_cross = randn(g, 2, 3, 8), randn(g, 2, 5, 8), _mha_weights(g, 8)
    x_q6, memory6, w6 = randn(g, 1, 3, 8), randn(g, 1, 5, 6), _mha_weights(g, 8, ek=6)
    key, value = randn(g, 2, 5, 8), randn(g, 2, 5, 8)
    # (B, Lk): every sequence has padding and real keys, so a flipped mask leaves no row without keys
    takes_part = torch.tensor([[True, True, True, False], [True, True, False, False]])
    x64, w64 = randn(g, 2, 5, 12, dtype=torch.float64), _mha_weights(g, 12, dtype=torch.float64)
    return [
        ("self-attention, B=2, L=4, E=8, 2 heads", [x, x, x, *w, 2], {}),
        ("one head: plain attention on the projections", [x, x, x, *w, 1], {}),
        ("4 heads of width 2", [x, x, x, *w, 4], {}),
        ("cross-attention, Lq=3, Lk=5", [x_q, memory, memory, *w_cross, 2], {}),
        ("cross-attention, keys of width 6: W_k, W_v are (out, in) = (8, 6)", [x_q6, memory6, memory6, *w6, 2], {}),
        ("key and value are different tensors", [x_q, key, value, *w_cross, 2], {}),
        ("key_mask (True = takes part): the last key of sequence 0 and the last 2 of sequence 1 are padding",
         [x, x, x, *w, 2], {"key_mask": takes_part}),
        ("is_causal", [x, x, x, *w, 2], {"is_causal": True}),
        ("float64, 3 heads, causal", [x64, x64, x64, *w64, 3], {"is_causal": True}),
    ]


def _multihead_hidden(g):
    b, lq, lk, h, d = size(g, 1, 3), size(g, 1, 7), size(g, 1, 7), size(g, 1, 4), size(g, 1, 6)
    e = h * d
    x_q, key, value, w = randn(g, b, lq, e), randn(g, b, lk, e), randn(g, b, lk, e), _mha_weights(g, e)
    x_self = randn(g, b, lq, e)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    takes_part = torch.arange(lk)[None, :] < lengths[:, None]  # (B, Lk), every sequence keeps a key
    x64, w64 = randn(g, b, lq, e, dtype=torch.float64), _mha_weights(g, e, dtype=torch.float64)
    return [
        (f"cross-attention, B={b}, Lq={lq}, Lk={lk}, E={e}, {h} heads", [x_q, key, value, *w, h], {}),
        ("random key_mask", [x_q, key, value, *w, h], {"key_mask": takes_part}),
        ("self-attention, is_causal", [x_self, x_self, x_self, *w, h], {"is_causal": True}),
        ("non-contiguous inputs and weights",
         [noncontiguous(x_q), noncontiguous(key), noncontiguous(value), *map(noncontiguous, w), h], {}),
        ("single query", [x_q[:, :1], key, value, *w, h], {}),
        ("float64, causal", [x64, x64, x64, *w64, h], {"is_causal": True}),
    ]


# --- parity with nn.MultiheadAttention ------------------------------------------------------------

def _torch_parameters(g, e, dtype=torch.float32, bias=True):
    """in_proj_weight (3E, E), in_proj_bias (3E,), out_proj.weight (E, E), out_proj.bias (E,), as torch holds them."""
    in_w = randn(g, 3 * e, e, dtype=dtype, scale=1 / math.sqrt(e))
    out_w = randn(g, e, e, dtype=dtype, scale=1 / math.sqrt(e))
    if not bias:
        return [in_w, None, out_w, None]
    return [in_w, randn(g, 3 * e, dtype=dtype, scale=0.1), out_w, randn(g, e, dtype=dtype, scale=0.1)]


def _packed_visible(g):
    x = randn(g, 2, 4, 8)
    x_q, memory = randn(g, 2, 3, 8), randn(g, 2, 5, 8)
    params = _torch_parameters(g, 8)
    # torch: True = ignore. Every sequence has ignored and kept keys, so a misread mask leaves no row without keys
    ignore = torch.tensor([[False, False, False, False, True], [False, False, False, True, True]])
    x64 = randn(g, 1, 6, 6, dtype=torch.float64)
    no_bias = _torch_parameters(g, 8, bias=False)
    float64 = _torch_parameters(g, 6, dtype=torch.float64)
    value = randn(g, 2, 5, 8)
    return [
        ("self-attention, E=8, 2 heads", [x, x, x, *params, 2], {}),
        ("cross-attention, Lq=3, Lk=5, 4 heads, key and value the same tensor", [x_q, memory, memory, *params, 4], {}),
        ("cross-attention, Lq=3, Lk=5, 2 heads, key and value different tensors", [x_q, memory, value, *params, 2], {}),
        ("bias=False: in_proj_bias and out_proj_bias are None", [x, x, x, *no_bias, 2], {}),
        ("key_padding_mask in torch's polarity (True = ignore the key): the last key of sequence 0 and the last 2 "
         "of sequence 1 are ignored", [x_q, memory, memory, *params, 2], {"key_padding_mask": ignore}),
        ("float64, E=6, 3 heads", [x64, x64, x64, *float64, 3], {}),
    ]


def _packed_hidden(g):
    b, lq, lk, h, d = size(g, 1, 3), size(g, 1, 7), size(g, 1, 7), size(g, 1, 4), size(g, 1, 6)
    e = h * d
    x_q, k, v = randn(g, b, lq, e), randn(g, b, lk, e), randn(g, b, lk, e)
    params = _torch_parameters(g, e)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    ignore = torch.arange(lk)[None, :] >= lengths[:, None]  # (B, Lk), True = padding
    return [
        (f"random, B={b}, Lq={lq}, Lk={lk}, E={e}, {h} heads, distinct key and value", [x_q, k, v, *params, h], {}),
        ("random key_padding_mask (True = ignore)", [x_q, k, v, *params, h], {"key_padding_mask": ignore}),
        ("bias=False", [x_q, k, v, *_torch_parameters(g, e, bias=False), h], {}),
        ("float64", [x_q.double(), k.double(), v.double(), *_torch_parameters(g, e, dtype=torch.float64), h], {}),
    ]


# --- positions ------------------------------------------------------------------------------------

def _sinusoidal_visible(g):
    return [("4 positions, d_model=6", [4, 6], {}),
            ("a single position, p = 0: sin 0 = 0 in the even columns, cos 0 = 1 in the odd ones", [1, 8], {}),
            ("d_model=2: one sin/cos pair, theta_0 = 1", [5, 2], {}), ("50 positions, d_model=16", [50, 16], {}),
            ("keyword d_model=10, 3 positions", [3], {"d_model": 10})]


def _sinusoidal_hidden(g):
    length, d = size(g, 1, 64), 2 * size(g, 1, 16)
    return [(f"{length} positions, d_model={d}", [length, d], {}), ("keyword d_model", [3], {"d_model": 10})]


def _rope_visible(g):
    unit = torch.zeros(4, 2)
    unit[:, 0] = 1.0  # (1, 0) at 4 positions: rotated by 0, 1, 2, 3 radians
    return [
        ("(1, 0) at positions 0..3, d=2: rotated by p radians", [unit], {}),
        ("arange, L=3, d=4: the pairs are (x0, x1) and (x2, x3), theta = 1 and 1/100",
         [torch.arange(12.0).reshape(3, 4)], {}),
        ("(B=2, H=2, L=5, D=8)", [randn(g, 2, 2, 5, 8)], {}),
        ("float64, L=6, d=16", [randn(g, 6, 16, dtype=torch.float64)], {}),
        ("positions=tensor([5, 6, 7]): 3 new tokens after 5 cached ones, (B=1, H=2, L=3, D=4)",
         [randn(g, 1, 2, 3, 4)], {"positions": torch.tensor([5, 6, 7])}),
        ("(1, 0) at positions=tensor([1]): the row of position 1 above", [unit[:1]], {"positions": torch.tensor([1])}),
    ]


def _rope_hidden(g):
    b, h, l, d = size(g, 1, 3), size(g, 1, 3), size(g, 1, 12), 2 * size(g, 1, 8)
    start = size(g, 1, 40)
    return [
        (f"random (B={b}, H={h}, L={l}, D={d})", [randn(g, b, h, l, d)], {}),
        ("non-contiguous input", [noncontiguous(randn(g, b, l, d))], {}),
        ("float64, 200 positions, d=32", [randn(g, 200, 32, dtype=torch.float64)], {}),
        (f"positions {start} .. {start + l - 1}", [randn(g, b, h, l, d)],
         {"positions": torch.arange(start, start + l)}),
    ]


# --- decoding with a KV cache ---------------------------------------------------------------------

def _cached_inputs(g, b, t_old, t_new, e, h, dtype=torch.float32):
    x = randn(g, b, t_new, e, dtype=dtype)
    w = [_weights(g, e, e, dtype) for _ in range(4)]
    k_cache, v_cache = randn(g, b, h, t_old, e // h, dtype=dtype), randn(g, b, h, t_old, e // h, dtype=dtype)
    return [x, *w, h, k_cache, v_cache]


def _token_by_token(g, length=4, e=8, h=2):
    """One sequence in float64: its one causal pass (empty cache), then the same tokens decoded one at a time,
    each with the cache the step before returned; the steps' outputs are the rows of the one pass."""
    x = randn(g, 1, length, e, dtype=torch.float64)
    w = [_weights(g, e, e, torch.float64) for _ in range(4)]
    k_cache = v_cache = torch.zeros(1, h, 0, e // h, dtype=torch.float64)
    cases = [(f"one causal pass over a sequence of {length} tokens (empty cache), float64",
              [x, *w, h, k_cache, v_cache], {})]
    for t in range(length):
        cache = f"the cache step {t - 1} returned" if t else "an empty cache"
        cases.append((f"token by token, step {t}: token {t} of that sequence with {cache}; its output must be row "
                      f"{t} of the one pass", [x[:, t:t + 1], *w, h, k_cache, v_cache], {}))
        _, k_cache, v_cache = course_lib.cached_causal_attention(x[:, t:t + 1], *w, h, k_cache, v_cache)
    return cases


def _cached_visible(g):
    return [
        ("empty cache, one token (the first): position 0, it attends only to itself", _cached_inputs(g, 2, 0, 1, 8, 2),
         {}),
        ("3 cached tokens, one new token at position 3, E=8, 2 heads", _cached_inputs(g, 2, 3, 1, 8, 2), {}),
        ("4 cached tokens, 3 new tokens at once at positions 4, 5, 6: new token i sees keys 0 .. 4 + i",
         _cached_inputs(g, 1, 4, 3, 8, 2), {}),
        ("one head, 4 cached tokens", _cached_inputs(g, 1, 4, 1, 6, 1), {}),
        ("float64, 5 cached tokens, 2 new ones, 4 heads", _cached_inputs(g, 1, 5, 2, 8, 4, dtype=torch.float64), {}),
        *_token_by_token(g),
    ]


def _cached_hidden(g):
    b, t, n, h, d = size(g, 1, 3), size(g, 0, 12), size(g, 1, 4), size(g, 1, 4), 2 * size(g, 1, 3)
    inputs = _cached_inputs(g, b, t, n, h * d, h)
    return [
        (f"random, B={b}, {t} cached tokens, {n} new, E={h * d}, {h} heads", inputs, {}),
        ("non-contiguous cache", [*inputs[:6], noncontiguous(inputs[6]), noncontiguous(inputs[7])], {}),
        ("one new token after 30 cached ones", _cached_inputs(g, b, 30, 1, h * d, h), {}),
        ("empty cache, several tokens: one causal pass", _cached_inputs(g, b, 0, n + 1, h * d, h), {}),
        ("float64", _cached_inputs(g, b, t + 1, n, h * d, h, dtype=torch.float64), {}),
    ]


# --- known mistakes: each the reference with one mistake in it, in the plain torch a student writes (a
# mistake that cannot run on a case is recognised by the error it raises there: base.Mistake) ----------

FIXED_DIMS = ("transpose(1, 2) assumes exactly one batch dim: count the dims from the end, transpose(-3, -2), "
              "so that any leading dims work")
ALONG_THE_SEQUENCE = ("Heads cut along the sequence? Reshape (..., L, E) to (..., L, H, D), then move the heads "
                      "before the positions with transpose(-3, -2): a straight reshape to (..., H, L, D) has the "
                      "right shape and the wrong entries")


def _split_without_transpose(x, num_heads):
    *lead, length, width = x.shape
    return x.reshape(*lead, num_heads, length, width // num_heads)


SPLIT_HEADS_MISTAKES = (
    Mistake(ALONG_THE_SEQUENCE, _split_without_transpose),
    Mistake(FIXED_DIMS, lambda x, num_heads: x.reshape(*x.shape[:-1], num_heads, -1).transpose(1, 2)),
)
MERGE_HEADS_MISTAKES = (
    Mistake("Heads merged without the transpose? Move the positions back before the heads, transpose(-3, -2), "
            "then reshape (..., L, H, D) to (..., L, H * D)", lambda x: x.reshape(*x.shape[:-3], x.shape[-2], -1)),
    Mistake(FIXED_DIMS, lambda x: x.transpose(1, 2).reshape(*x.shape[:-3], x.shape[-2], -1)),
)


def _heads_attention(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale, masked where ``mask`` is False) v, over (..., H, L, D) heads, as a student writes it
    (course_lib.softmax: torch.softmax's, NaN for a row with every key masked, and the same bytes on every CPU)."""
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return course_lib.softmax(scores, dim=-1) @ v


def _multihead(scale_by_E=False, flip_key_mask=False, key_mask_dims=2, transpose_weights=True, project_out=True,
               causal=True, split=course_lib.split_heads, merge=course_lib.merge_heads):
    """multihead_attention with one of its steps done wrong, as a student writes it."""
    def attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
        def project(x, W):
            return x @ (W.T if transpose_weights else W)
        q, k, v = (split(project(x, W), num_heads) for x, W in ((query, W_q), (key, W_k), (value, W_v)))
        mask = None
        if key_mask is not None:
            key_mask = ~key_mask if flip_key_mask else key_mask
            mask = key_mask[:, None, None, :] if key_mask_dims == 2 else key_mask[:, None, :]
        if is_causal and causal:
            tril = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
            mask = tril if mask is None else mask & tril
        heads = _heads_attention(q, k, v, mask, scale=1 / math.sqrt(query.shape[-1]) if scale_by_E else None)
        merged = merge(heads)
        return project(merged, W_o) if project_out else merged
    return attention


def _merge_without_transpose(x):
    return x.reshape(*x.shape[:-3], x.shape[-2], -1)


MULTIHEAD_MISTAKES = (
    Mistake("Scores scaled by 1/sqrt(E)? Each head's dot products run over its own D = E / H features: scale by "
            "1/sqrt(D)", _multihead(scale_by_E=True)),
    Mistake("key_mask polarity flipped? Here True = the key takes part, False = padding (torch's key_padding_mask "
            "is the opposite)", _multihead(flip_key_mask=True)),
    Mistake("Does key_mask reach every head and query? Index it as key_mask[:, None, None, :], (B, 1, 1, Lk): a "
            "(B, 1, Lk) mask lines B up with the heads", _multihead(key_mask_dims=1)),
    Mistake("Weights applied untransposed? They are stored (out, in): Q = query @ W_q.T, and the output is "
            "merge_heads(...) @ W_o.T", _multihead(transpose_weights=False)),
    Mistake("Output projection missing? Merge the heads, then project: merge_heads(...) @ W_o.T",
            _multihead(project_out=False)),
    Mistake("is_causal ignored? With is_causal=True, query i attends only to keys j <= i", _multihead(causal=False)),
    Mistake(ALONG_THE_SEQUENCE, _multihead(split=_split_without_transpose, merge=_merge_without_transpose)),
)


def _packed(polarity_misread=False, transpose_weights=True, keys_from="key", values_from="value", cut="chunk",
            average=True, biases=True):
    """packed_multihead_attention with one of its steps done wrong, as a student writes it."""
    def attention(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, *,
                  key_padding_mask=None):
        inputs = {"query": query, "key": key, "value": value}
        if cut == "split":
            W_q, W_k, W_v = in_proj_weight.split(3)
        else:
            W_q, W_k, W_v = in_proj_weight.chunk(3, dim=0 if cut == "chunk" else 1)
        b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None and biases else (0.0, 0.0, 0.0)

        def project(x, W, b):
            return x @ (W.T if transpose_weights else W) + b
        q = course_lib.split_heads(project(query, W_q, b_q), num_heads)  # (B, H, Lq, D)
        k = course_lib.split_heads(project(inputs[keys_from], W_k, b_k), num_heads)
        v = course_lib.split_heads(project(inputs[values_from], W_v, b_v), num_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if key_padding_mask is not None:
            ignored = ~key_padding_mask if polarity_misread else key_padding_mask
            scores = scores.masked_fill(ignored[:, None, None, :], float("-inf"))
        weights = course_lib.softmax(scores, dim=-1)  # (B, H, Lq, Lk)
        output = course_lib.merge_heads(weights @ v) @ (out_proj_weight.T if transpose_weights else out_proj_weight)
        if out_proj_bias is not None and biases:
            output = output + out_proj_bias
        return output, weights.mean(dim=1) if average else weights
    return attention


PACKED_MISTAKES = (
    Mistake("key_padding_mask read the wrong way? In torch's polarity True = ignore the key: mask the True entries",
            _packed(polarity_misread=True)),
    Mistake("in_proj_weight's blocks applied untransposed? torch stores them (out, in), as nn.Linear does: "
            "Q = query @ W_q.T + b_q, and the output is ... @ out_proj_weight.T", _packed(transpose_weights=False)),
    Mistake("Keys and values projected from query? That holds for self-attention only: K = key @ W_k.T + b_k, "
            "V = value @ W_v.T + b_v", _packed(keys_from="query", values_from="query")),
    Mistake("Values projected from key? V = value @ W_v.T + b_v: key and value are different tensors in general",
            _packed(values_from="key")),
    Mistake("split(3) cuts pieces of 3 rows; in_proj_weight.chunk(3) cuts it into 3 pieces, [W_q; W_k; W_v], "
            "each (E, E)", _packed(cut="split")),
    Mistake("in_proj_weight cut along its columns? It is [W_q; W_k; W_v] stacked by rows: "
            "in_proj_weight.chunk(3, dim=0), each (E, E)", _packed(cut="columns")),
    Mistake("Weights of every head? torch averages them over the heads by default, weights.mean(dim=1): (B, Lq, Lk)",
            _packed(average=False)),
    Mistake("Biases left out? Add in_proj_bias's three blocks to Q, K and V, and out_proj_bias to the output, when "
            "they are not None", _packed(biases=False)),
)


def _sinusoidal(first=torch.sin, second=torch.cos, exponent_step=2, sign=-1, start=0, interleave=True):
    """sinusoidal_encoding with one mistake, as a student writes it."""
    def encoding(length, d_model):
        positions = torch.arange(start, start + length, dtype=torch.float64)[:, None]  # (L, 1)
        exponents = torch.arange(0, exponent_step * (d_model // 2), exponent_step, dtype=torch.float64) / d_model
        angles = positions * 10000.0 ** (sign * exponents)  # (L, d/2)
        if interleave:
            return torch.stack([first(angles), second(angles)], dim=-1).reshape(length, d_model).float()
        return torch.cat([first(angles), second(angles)], dim=-1).float()
    return encoding


EXPONENT = ("Frequency exponent off? theta_i = 10000^(-2i/d) for pair i: the exponent steps by 2/d per pair "
            "(torch.arange(0, d, 2) / d), not 1/d")
SINUSOIDAL_MISTAKES = (
    Mistake("sin and cos swapped? Even columns 2i hold sin(p theta_i), odd columns 2i + 1 hold cos(p theta_i)",
            _sinusoidal(first=torch.cos, second=torch.sin)),
    Mistake(EXPONENT, _sinusoidal(exponent_step=1)),
    Mistake("Frequencies above 1? theta_i = 10000^(-2i/d) shrinks with i: divide the position by 10000^(2i/d), "
            "do not multiply", _sinusoidal(sign=1)),
    Mistake("Sines and cosines in two halves? Interleave them: sin in the even columns, cos in the odd ones",
            _sinusoidal(interleave=False)),
    Mistake("Positions start at 0: the first row is sin 0 = 0, cos 0 = 1", _sinusoidal(start=1)),
)


def _rope(pairs="interleaved", direction=1, use_positions=True, exponent_step=2, interleave_back=True):
    """apply_rope with one mistake, as a student writes it."""
    def rope(x, positions=None):
        length, d = x.shape[-2:]
        positions = torch.arange(length) if positions is None or not use_positions else positions
        theta = 10000.0 ** (-torch.arange(0, exponent_step * (d // 2), exponent_step, dtype=torch.float64) / d)
        angles = positions.to(torch.float64)[:, None] * theta  # (L, d/2)
        cos, sin = angles.cos().to(x.dtype), (direction * angles.sin()).to(x.dtype)
        if pairs == "halves":  # GPT-NeoX: feature i with feature i + d/2
            first, second = x[..., : d // 2], x[..., d // 2:]
            return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
        first, second = x[..., 0::2], x[..., 1::2]
        a, b = first * cos - second * sin, first * sin + second * cos
        return torch.stack([a, b], dim=-1).flatten(-2) if interleave_back else torch.cat([a, b], dim=-1)
    return rope


ROPE_MISTAKES = (
    Mistake("Pairs (x[i], x[i + d/2])? That is GPT-NeoX's convention; this lesson pairs neighbours, "
            "(x[2i], x[2i+1]): x[..., 0::2] and x[..., 1::2]", _rope(pairs="halves")),
    Mistake("Rotated the wrong way? (x0, x1) turns to (x0 cos - x1 sin, x0 sin + x1 cos): (1, 0) at position p "
            "becomes (cos p, sin p)", _rope(direction=-1)),
    Mistake("positions ignored? When positions is given, row l sits at position positions[l], not l",
            _rope(use_positions=False)),
    Mistake(EXPONENT, _rope(exponent_step=1)),
    Mistake("Rotated pairs put back as two halves? Interleave them again: torch.stack([a, b], dim=-1).flatten(-2)",
            _rope(interleave_back=False)),
)


def _cached(mask="bottom-right", positions_from_cache=True, rotate_values=False, cache_rotated_keys=True):
    """cached_causal_attention with one mistake, as a student writes it."""
    def attention(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
        t_old, t_new = k_cache.shape[-2], x.shape[-2]
        positions = torch.arange(t_old, t_old + t_new) if positions_from_cache else torch.arange(t_new)
        q = course_lib.apply_rope(course_lib.split_heads(x @ W_q.T, num_heads), positions)  # (B, H, T_new, D)
        k_new = course_lib.split_heads(x @ W_k.T, num_heads)
        v_new = course_lib.split_heads(x @ W_v.T, num_heads)
        if cache_rotated_keys:
            k_cache = torch.cat([k_cache, course_lib.apply_rope(k_new, positions)], dim=-2)
            keys = k_cache
        else:  # caches the keys as projected, and rotates the whole cache at positions 0 .. T - 1 every call
            k_cache = torch.cat([k_cache, k_new], dim=-2)
            keys = course_lib.apply_rope(k_cache)
        v_cache = torch.cat([v_cache, course_lib.apply_rope(v_new, positions) if rotate_values else v_new], dim=-2)
        causal = {"bottom-right": torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=t_old),
                  "top-left": torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(), "none": None}[mask]
        return course_lib.merge_heads(_heads_attention(q, keys, v_cache, causal)) @ W_o.T, k_cache, v_cache
    return attention


CACHED_MISTAKES = (
    Mistake("Causal mask aligned top-left (is_causal=True)? With T_old cached tokens, new token i sees keys "
            "0 .. T_old + i: torch.ones(T_new, T_old + T_new).tril(diagonal=T_old)", _cached(mask="top-left")),
    Mistake("New tokens rotated from position 0? They sit after the cache, at T_old, T_old + 1, ...: positions = "
            "torch.arange(T_old, T_old + T_new), T_old = k_cache.shape[-2]", _cached(positions_from_cache=False)),
    Mistake("Values rotated? RoPE turns the queries and keys only; the values (and v_cache) stay as projected",
            _cached(rotate_values=True)),
    Mistake("No causal mask? New token i may not see the new tokens after it: mask the keys j > T_old + i",
            _cached(mask="none")),
    Mistake("Keys cached before rotation? The cache holds each key already rotated at its own position: rotate "
            "it once, when it is new", _cached(cache_rotated_keys=False)),
)


# --- the trained model ----------------------------------------------------------------------------

MODEL_CHECK = {"argmax": True, "min_row_accuracy": MIN_SEQUENCE_ACCURACY}


def _reversal_visible(g):
    task = ReversalTask()
    return [("the 1000 held-out sequences of ReversalTask()", [task.held_out_inputs], {}, MODEL_CHECK)]


PROBE_SEQUENCES = 64  # the sequences whose logits are recomputed from the model's own weights


def _reversal_hidden(g):
    task = ReversalTask()
    probe = task.held_out_inputs[:PROBE_SEQUENCES]
    # Fixed, not drawn per grading: a trained model's grade must not depend on the draw.
    return [("the model's logits on held-out sequences", [probe], {}, {"expected": None}),
            ("the model's weights", [], {}, {"expected": None, "method": "state_dict"})]


def reference_tiny_transformer(state: dict, tokens: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The logits the notebook's TinyTransformer computes with the weights ``state``, in course_lib's
    maths: embeddings plus sinusoidal positions, pre-LN blocks x + MHA(LN(x)), x + FFN(LN(x)), a
    final LayerNorm and a linear head. tokens (N, L) -> logits (N, L, vocab)."""
    def layer_norm(x, prefix):
        return F.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"])

    embedding = state["embedding.weight"]  # (vocab, E)
    x = embedding[tokens] + course_lib.sinusoidal_encoding(tokens.shape[1], embedding.shape[1], dtype=embedding.dtype)
    layers = sorted({int(name.split(".")[1]) for name in state if name.startswith("blocks.")})
    for i in layers:
        b = f"blocks.{i}"
        h = layer_norm(x, f"{b}.norm1")
        x = x + course_lib.multihead_attention(h, h, h, state[f"{b}.W_q"], state[f"{b}.W_k"], state[f"{b}.W_v"],
                                               state[f"{b}.W_o"], num_heads)
        h = F.linear(layer_norm(x, f"{b}.norm2"), state[f"{b}.feed_forward.0.weight"],
                     state[f"{b}.feed_forward.0.bias"])
        x = x + F.linear(F.relu(h), state[f"{b}.feed_forward.2.weight"], state[f"{b}.feed_forward.2.bias"])
    return F.linear(layer_norm(x, "final_norm"), state["head.weight"], state["head.bias"])  # (N, L, vocab)


def _same_function_as_the_notebooks_transformer(answers: list, cases: list) -> str | None:
    """The trained model computes what the notebook's TinyTransformer computes with its weights, for
    some number of heads: a model whose attention is wrong (scores scaled by 1/sqrt(E), say) fails
    here even when it learned to reverse."""
    by_name = {case["case"]: answer.get("output") for case, answer in zip(cases, answers)}
    logits, state = by_name.get("the model's logits on held-out sequences"), by_name.get("the model's weights")
    if not isinstance(logits, torch.Tensor) or not isinstance(state, dict):
        return "the grader could not read the model's logits and weights"
    tokens = ReversalTask().held_out_inputs[:PROBE_SEQUENCES]
    try:
        width = state["embedding.weight"].shape[1]
        candidates = [reference_tiny_transformer({k: v.double() for k, v in state.items()}, tokens, h)
                      for h in range(1, width + 1) if width % h == 0]
    except (KeyError, IndexError, RuntimeError, ValueError, AttributeError):
        return ("its weights are not those of the notebook's TinyTransformer (embedding, blocks.i.W_q ... W_o, "
                "norm1, norm2, feed_forward, final_norm, head): build the model with the notebook's class")
    if not any(torch.allclose(logits.double(), reference, atol=1e-3, rtol=1e-3) for reference in candidates):
        return ("the trained model does not compute what the notebook's TinyTransformer computes with its own "
                "weights: course_lib's multi-head attention gives other logits. Check multihead_attention (the "
                "scale is 1/sqrt(D) with D = E / H, not 1/sqrt(E); the head split) and sinusoidal_encoding")
    return None


def reversed_sequences(tokens: torch.Tensor) -> torch.Tensor:
    """What a perfect reversal model predicts: the tokens in reverse order (N, L)."""
    return tokens.flip(-1)


# Lesson 3 builds multi-head attention on F.scaled_dot_product_attention (Lesson 1's operator):
# what its attention exercises may not call is the finished module, nn.MultiheadAttention. Nothing
# fused splits heads or computes positions: those exercises forbid nothing.
FORBIDDEN = ("multihead_attention",)

# Every exercise's reference is the library function of its name, called as the student's is called.
EXERCISES = (
    Exercise("split_heads", LESSON, course_lib.split_heads, _split_heads_visible, _split_heads_hidden, (),
             SPLIT_HEADS_MISTAKES),
    Exercise("merge_heads", LESSON, course_lib.merge_heads, _merge_heads_visible, _merge_heads_hidden, (),
             MERGE_HEADS_MISTAKES),
    Exercise("multihead_attention", LESSON, course_lib.multihead_attention, _multihead_visible, _multihead_hidden,
             FORBIDDEN, MULTIHEAD_MISTAKES),
    Exercise("packed_multihead_attention", LESSON, course_lib.packed_multihead_attention, _packed_visible,
             _packed_hidden, FORBIDDEN, PACKED_MISTAKES),
    Exercise("sinusoidal_encoding", LESSON, course_lib.sinusoidal_encoding, _sinusoidal_visible, _sinusoidal_hidden,
             (), SINUSOIDAL_MISTAKES),
    Exercise("apply_rope", LESSON, course_lib.apply_rope, _rope_visible, _rope_hidden, (), ROPE_MISTAKES),
    Exercise("cached_causal_attention", LESSON, course_lib.cached_causal_attention, _cached_visible, _cached_hidden,
             FORBIDDEN, CACHED_MISTAKES),
    Exercise("reversal_model", LESSON, reversed_sequences, _reversal_visible, _reversal_hidden, FORBIDDEN,
             check_answers=_same_function_as_the_notebooks_transformer),
)
