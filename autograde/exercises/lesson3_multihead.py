"""Lesson 3's graded exercises: multi-head attention, positions, the KV cache (solutions/lesson3_multihead)."""

from __future__ import annotations

import math

import torch

import course_lib
from course_kit.data.reversal import ReversalTask
from autograde.exercises.base import Exercise, noncontiguous, randn, size

LESSON = "lesson3_multihead"
# A trained model passes when at least this fraction of sequences is reversed without a mistake.
MIN_SEQUENCE_ACCURACY = 0.99


def _weights(g, e_in, e_out, dtype=torch.float32):
    """A projection in the lesson's (in, out) layout, scaled as nn.Linear initialises (std ~ 1/sqrt(in))."""
    return randn(g, e_in, e_out, dtype=dtype, scale=1 / math.sqrt(e_in))


# --- split_heads / merge_heads --------------------------------------------------------------------

def _split_heads_visible(g):
    return [
        ("(B=2, L=3, E=8) into 2 heads", [randn(g, 2, 3, 8), 2], {}),
        ("(B=1, L=4, E=6) into 3 heads", [randn(g, 1, 4, 6), 3], {}),
        ("arange (L=2, E=4), no batch dim, 2 heads", [torch.arange(8.0).reshape(2, 4), 2], {}),
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
        ("arange (H=2, L=2, D=2), no batch dim", [torch.arange(8.0).reshape(2, 2, 2)], {}),
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

def _mha_inputs(g, b, lq, lk, e, ek=None, dtype=torch.float32):
    ek = ek or e
    x_q, x_kv = randn(g, b, lq, e, dtype=dtype), randn(g, b, lk, ek, dtype=dtype)
    w = [_weights(g, e, e, dtype), _weights(g, ek, e, dtype), _weights(g, ek, e, dtype), _weights(g, e, e, dtype)]
    return x_q, x_kv, w


def _multihead_visible(g):
    x, _, w = _mha_inputs(g, 2, 4, 4, 8)
    x_q, x_kv, w_cross = _mha_inputs(g, 2, 3, 5, 8)
    x_q6, x_kv6, w6 = _mha_inputs(g, 1, 3, 5, 8, ek=6)
    padding = torch.tensor([[True, True, True, True], [True, True, False, False]])  # (B, Lk)
    x64, _, w64 = _mha_inputs(g, 2, 5, 5, 12, dtype=torch.float64)
    return [
        ("self-attention, B=2, L=4, E=8, 2 heads", [x, x, *w, 2], {}),
        ("one head: plain attention on the projections", [x, x, *w, 1], {}),
        ("4 heads of width 2", [x, x, *w, 4], {}),
        ("cross-attention, Lq=3, Lk=5", [x_q, x_kv, *w_cross, 2], {}),
        ("cross-attention, keys of width 6 (W_k, W_v are 6 x 8)", [x_q6, x_kv6, *w6, 2], {}),
        ("key_padding_mask (True = takes part): last 2 keys of sequence 1 are padding",
         [x, x, *w, 2], {"key_padding_mask": padding}),
        ("is_causal", [x, x, *w, 2], {"is_causal": True}),
        ("float64, 3 heads, causal", [x64, x64, *w64, 3], {"is_causal": True}),
    ]


def _multihead_hidden(g):
    b, lq, lk, h, d = size(g, 1, 3), size(g, 1, 7), size(g, 1, 7), size(g, 1, 4), size(g, 1, 6)
    e = h * d
    x_q, x_kv, w = _mha_inputs(g, b, lq, lk, e)
    x_self, _, _ = _mha_inputs(g, b, lq, lq, e)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    padding = torch.arange(lk)[None, :] < lengths[:, None]  # (B, Lk), every sequence keeps a key
    x64, _, w64 = _mha_inputs(g, b, lq, lq, e, dtype=torch.float64)
    return [
        (f"cross-attention, B={b}, Lq={lq}, Lk={lk}, E={e}, {h} heads", [x_q, x_kv, *w, h], {}),
        ("random key_padding_mask", [x_q, x_kv, *w, h], {"key_padding_mask": padding}),
        ("self-attention, is_causal", [x_self, x_self, *w, h], {"is_causal": True}),
        ("non-contiguous inputs and weights", [noncontiguous(x_q), noncontiguous(x_kv), *map(noncontiguous, w), h], {}),
        ("single query", [x_q[:, :1], x_kv, *w, h], {}),
        ("float64, causal", [x64, x64, *w64, h], {"is_causal": True}),
    ]


def _multihead_attention_reference(x_q, x_kv, W_q, W_k, W_v, W_o, num_heads, key_padding_mask=None,
                                   is_causal=False):
    return course_lib.multihead_attention(x_q, x_kv, x_kv, W_q, W_k, W_v, W_o, num_heads,
                                          key_padding_mask=key_padding_mask, is_causal=is_causal)[0]


# --- parity with nn.MultiheadAttention ------------------------------------------------------------

def _torch_parameters(g, e, dtype=torch.float32, bias=True):
    """in_proj_weight (3E, E), in_proj_bias (3E,), out_proj.weight (E, E), out_proj.bias (E,), as torch holds them."""
    in_w = randn(g, 3 * e, e, dtype=dtype, scale=1 / math.sqrt(e))
    out_w = randn(g, e, e, dtype=dtype, scale=1 / math.sqrt(e))
    if not bias:
        return [in_w, None, out_w, None]
    return [in_w, randn(g, 3 * e, dtype=dtype, scale=0.1), out_w, randn(g, e, dtype=dtype, scale=0.1)]


def _torch_mha_visible(g):
    x = randn(g, 2, 4, 8)
    x_q, x_kv = randn(g, 2, 3, 8), randn(g, 2, 5, 8)
    params = _torch_parameters(g, 8)
    ignore = torch.tensor([[False, False, False, False, False], [False, False, False, True, True]])  # torch: True = ignore
    x64 = randn(g, 1, 6, 6, dtype=torch.float64)
    return [
        ("self-attention, E=8, 2 heads", [x, x, x, *params, 2], {}),
        ("cross-attention, Lq=3, Lk=5, 4 heads", [x_q, x_kv, x_kv, *params, 4], {}),
        ("bias=False: in_proj_bias and out_proj_bias are None", [x, x, x, *_torch_parameters(g, 8, bias=False), 2], {}),
        ("key_padding_mask in torch's polarity (True = ignore the key)",
         [x_q, x_kv, x_kv, *params, 2], {"key_padding_mask": ignore}),
        ("float64, E=6, 3 heads", [x64, x64, x64, *_torch_parameters(g, 6, dtype=torch.float64), 3], {}),
    ]


def _torch_mha_hidden(g):
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


def _torch_mha_reference(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                         num_heads, key_padding_mask=None):
    """torch's packed layout unpacked into the lesson's: W = weight.T, and the mask's polarity flipped."""
    W_q, W_k, W_v = (w.T for w in in_proj_weight.chunk(3))
    b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
    return course_lib.multihead_attention(
        query, key, value, W_q, W_k, W_v, out_proj_weight.T, num_heads, b_q=b_q, b_k=b_k, b_v=b_v, b_o=out_proj_bias,
        key_padding_mask=None if key_padding_mask is None else ~key_padding_mask)[0]


# --- positions ------------------------------------------------------------------------------------

def _sinusoidal_visible(g):
    return [("4 positions, d_model=6", [4, 6], {}), ("a single position", [1, 8], {}),
            ("d_model=2: one sin/cos pair", [5, 2], {}), ("50 positions, d_model=16", [50, 16], {})]


def _sinusoidal_hidden(g):
    length, d = size(g, 1, 64), 2 * size(g, 1, 16)
    return [(f"{length} positions, d_model={d}", [length, d], {}), ("keyword d_model", [3], {"d_model": 10})]


def _rope_visible(g):
    unit = torch.zeros(4, 2)
    unit[:, 0] = 1.0  # (1, 0) at 4 positions: rotated by 0, 1, 2, 3 radians
    return [
        ("(1, 0) at positions 0..3, d=2: rotated by p radians", [unit], {}),
        ("L=3, d=4: pairs are (x0, x1) and (x2, x3)", [torch.arange(12.0).reshape(3, 4)], {}),
        ("(B=2, H=2, L=5, D=8)", [randn(g, 2, 2, 5, 8)], {}),
        ("float64, L=6, d=16", [randn(g, 6, 16, dtype=torch.float64)], {}),
    ]


def _rope_hidden(g):
    b, h, l, d = size(g, 1, 3), size(g, 1, 3), size(g, 1, 12), 2 * size(g, 1, 8)
    return [
        (f"random (B={b}, H={h}, L={l}, D={d})", [randn(g, b, h, l, d)], {}),
        ("non-contiguous input", [noncontiguous(randn(g, b, l, d))], {}),
        ("float64, 200 positions, d=32", [randn(g, 200, 32, dtype=torch.float64)], {}),
    ]


# --- decoding with a KV cache ---------------------------------------------------------------------

def _decode_inputs(g, b, t_old, e, h, dtype=torch.float32):
    x_t = randn(g, b, 1, e, dtype=dtype)
    w = [_weights(g, e, e, dtype) for _ in range(4)]
    k_cache, v_cache = randn(g, b, h, t_old, e // h, dtype=dtype), randn(g, b, h, t_old, e // h, dtype=dtype)
    return [x_t, *w, h, k_cache, v_cache]


def _decode_visible(g):
    return [
        ("empty cache (the first token): it attends only to itself", _decode_inputs(g, 2, 0, 8, 2), {}),
        ("3 cached tokens, E=8, 2 heads", _decode_inputs(g, 2, 3, 8, 2), {}),
        ("one head", _decode_inputs(g, 1, 4, 6, 1), {}),
        ("float64, 5 cached tokens, 4 heads", _decode_inputs(g, 1, 5, 8, 4, dtype=torch.float64), {}),
    ]


def _decode_hidden(g):
    b, t, h, d = size(g, 1, 3), size(g, 0, 12), size(g, 1, 4), size(g, 1, 6)
    inputs = _decode_inputs(g, b, t, h * d, h)
    return [
        (f"random, B={b}, {t} cached tokens, E={h * d}, {h} heads", inputs, {}),
        ("non-contiguous cache", [*inputs[:6], noncontiguous(inputs[6]), noncontiguous(inputs[7])], {}),
        ("float64", _decode_inputs(g, b, t + 1, h * d, h, dtype=torch.float64), {}),
    ]


def _decode_reference(x_t, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    return course_lib.cached_causal_attention(x_t, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache)


# --- the trained model ----------------------------------------------------------------------------

MODEL_CHECK = {"argmax": True, "min_row_accuracy": MIN_SEQUENCE_ACCURACY}


def _reversal_visible(g):
    task = ReversalTask()
    return [("the 1000 held-out sequences of ReversalTask()", [task.held_out_inputs], {}, MODEL_CHECK)]


def _reversal_hidden(g):
    task = ReversalTask()
    order = torch.randperm(len(task.held_out_inputs), generator=g)
    fresh = torch.randint(0, task.vocab_size, (500, task.length), generator=g)
    return [("the held-out sequences, shuffled", [task.held_out_inputs[order]], {}, MODEL_CHECK),
            ("500 new random sequences", [fresh], {}, MODEL_CHECK)]


def reversed_sequences(tokens: torch.Tensor) -> torch.Tensor:
    """What a perfect reversal model predicts: the tokens in reverse order (N, L)."""
    return tokens.flip(-1)


# Lesson 3 builds multi-head attention on F.scaled_dot_product_attention (Lesson 1's operator):
# what its exercises may not call is the finished module, nn.MultiheadAttention.
FORBIDDEN = ("multihead_attention",)

EXERCISES = (
    Exercise("split_heads", LESSON, course_lib.split_heads, _split_heads_visible, _split_heads_hidden, FORBIDDEN),
    Exercise("merge_heads", LESSON, course_lib.merge_heads, _merge_heads_visible, _merge_heads_hidden, FORBIDDEN),
    Exercise("multihead_attention", LESSON, _multihead_attention_reference, _multihead_visible, _multihead_hidden,
             FORBIDDEN),
    Exercise("mha_with_torch_weights", LESSON, _torch_mha_reference, _torch_mha_visible, _torch_mha_hidden,
             FORBIDDEN),
    Exercise("sinusoidal_encoding", LESSON, course_lib.sinusoidal_encoding, _sinusoidal_visible, _sinusoidal_hidden,
             FORBIDDEN),
    Exercise("apply_rope", LESSON, course_lib.apply_rope, _rope_visible, _rope_hidden, FORBIDDEN),
    Exercise("decode_step", LESSON, _decode_reference, _decode_visible, _decode_hidden, FORBIDDEN),
    Exercise("reversal_model", LESSON, reversed_sequences, _reversal_visible, _reversal_hidden, FORBIDDEN),
)
