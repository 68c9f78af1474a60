"""Lesson 3's known mistakes (solutions/lesson3_multihead): splitting and merging heads, multi-head
attention from scratch and from nn.MultiheadAttention's packed weights, sinusoidal and rotary
positions, causal attention with a key/value cache. Each is the code a student writes, with one
mistake in it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mistakes import KnownMistake


def split(x, num_heads):  # (..., L, E) -> (..., H, L, D), right
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads).transpose(-3, -2)


def merge(x):  # (..., H, L, D) -> (..., L, E), right
    return x.transpose(-3, -2).reshape(*x.shape[:-3], x.shape[-2], x.shape[-3] * x.shape[-1])


# --- split_heads / merge_heads ---------------------------------------------------------------------

def split_without_transpose(x, num_heads):
    return x.reshape(*x.shape[:-2], num_heads, x.shape[-2], x.shape[-1] // num_heads)


def split_transposing_dims_1_and_2(x, num_heads):
    return x.reshape(*x.shape[:-1], num_heads, -1).transpose(1, 2)  # right only for (B, L, E)


def merge_without_transpose(x):
    return x.reshape(*x.shape[:-3], x.shape[-2], -1)


def merge_with_view(x):
    return x.transpose(-3, -2).view(*x.shape[:-3], x.shape[-2], -1)


def merge_transposing_dims_1_and_2(x):
    return x.transpose(1, 2).reshape(*x.shape[:-3], x.shape[-2], -1)  # right only for (B, H, L, D)


# --- multihead_attention ---------------------------------------------------------------------------

def mha_scaled_by_sqrt_E(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    q, k, v = split(query @ W_q.T, num_heads), split(key @ W_k.T, num_heads), split(value @ W_v.T, num_heads)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           scale=1 / math.sqrt(query.shape[-1]))
    return merge(heads) @ W_o.T


def mha_key_mask_flipped(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    q, k, v = split(query @ W_q.T, num_heads), split(key @ W_k.T, num_heads), split(value @ W_v.T, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(key_mask[:, None, None, :], float("-inf"))  # True read as "ignore"
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return merge(torch.softmax(scores, dim=-1) @ v) @ W_o.T


def mha_key_mask_without_head_dim(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None,
                                  is_causal=False):
    q, k, v = split(query @ W_q.T, num_heads), split(key @ W_k.T, num_heads), split(value @ W_v.T, num_heads)
    mask = None if key_mask is None else key_mask[:, None, :]  # (B, 1, Lk): B lines up with the heads
    return merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)) @ W_o.T


def mha_weights_untransposed(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    q, k, v = split(query @ W_q, num_heads), split(key @ W_k, num_heads), split(value @ W_v, num_heads)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)) @ W_o


def mha_without_output_projection(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None,
                                  is_causal=False):
    q, k, v = split(query @ W_q.T, num_heads), split(key @ W_k.T, num_heads), split(value @ W_v.T, num_heads)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal))


def mha_ignoring_is_causal(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    q, k, v = split(query @ W_q.T, num_heads), split(key @ W_k.T, num_heads), split(value @ W_v.T, num_heads)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) @ W_o.T


def mha_heads_cut_along_the_sequence(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None,
                                     is_causal=False):
    B, E = query.shape[0], W_q.shape[0]
    q = (query @ W_q.T).reshape(B, num_heads, query.shape[1], -1)
    k = (key @ W_k.T).reshape(B, num_heads, key.shape[1], -1)
    v = (value @ W_v.T).reshape(B, num_heads, value.shape[1], -1)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    return heads.reshape(B, query.shape[1], E) @ W_o.T


# --- packed_multihead_attention: nn.MultiheadAttention's parameters and polarity -------------------

def _packed(query, key, value, W, b, out_proj_weight, out_proj_bias, num_heads, key_padding_mask, *,
            ignore=True, average=True, bias=True, transpose=True):
    """What a student writes after cutting in_proj_weight into W = (W_q, W_k, W_v) and the bias into b."""
    projected = [x @ (w.T if transpose else w) + (beta if bias else 0) for x, w, beta in zip((query, key, value), W, b)]
    q, k, v = (split(x, num_heads) for x in projected)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill((key_padding_mask if ignore else ~key_padding_mask)[:, None, None, :],
                                    float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = merge(weights @ v) @ (out_proj_weight.T if transpose else out_proj_weight)
    if out_proj_bias is not None and bias:
        out = out + out_proj_bias
    return out, weights.mean(dim=1) if average else weights


def _biases(in_proj_bias):
    return in_proj_bias.chunk(3) if in_proj_bias is not None else (0.0, 0.0, 0.0)


def packed_mask_read_as_takes_part(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                                   num_heads, *, key_padding_mask=None):
    return _packed(query, key, value, in_proj_weight.chunk(3), _biases(in_proj_bias), out_proj_weight,
                   out_proj_bias, num_heads, key_padding_mask, ignore=False)


def packed_weights_untransposed(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                                num_heads, *, key_padding_mask=None):
    return _packed(query, key, value, in_proj_weight.chunk(3), _biases(in_proj_bias), out_proj_weight,
                   out_proj_bias, num_heads, key_padding_mask, transpose=False)


def packed_projecting_everything_from_query(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight,
                                            out_proj_bias, num_heads, *, key_padding_mask=None):
    packed = query @ in_proj_weight.T + (in_proj_bias if in_proj_bias is not None else 0.0)  # (B, Lq, 3E)
    q, k, v = (split(x, num_heads) for x in packed.chunk(3, dim=-1))  # right for self-attention only
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = merge(weights @ v) @ out_proj_weight.T
    return (out if out_proj_bias is None else out + out_proj_bias), weights.mean(dim=1)


def packed_values_from_key(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                           num_heads, *, key_padding_mask=None):
    return _packed(query, key, key, in_proj_weight.chunk(3), _biases(in_proj_bias), out_proj_weight,
                   out_proj_bias, num_heads, key_padding_mask)


def packed_cut_with_split(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                          num_heads, *, key_padding_mask=None):
    W_q, W_k, W_v = in_proj_weight.split(3)  # pieces of 3 rows, not 3 pieces
    return _packed(query, key, value, (W_q, W_k, W_v), _biases(in_proj_bias), out_proj_weight, out_proj_bias,
                   num_heads, key_padding_mask)


def packed_cut_along_the_columns(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                                 num_heads, *, key_padding_mask=None):
    return _packed(query, key, value, in_proj_weight.chunk(3, dim=1), _biases(in_proj_bias), out_proj_weight,
                   out_proj_bias, num_heads, key_padding_mask)


def packed_weights_of_every_head(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                                 num_heads, *, key_padding_mask=None):
    return _packed(query, key, value, in_proj_weight.chunk(3), _biases(in_proj_bias), out_proj_weight,
                   out_proj_bias, num_heads, key_padding_mask, average=False)


def packed_without_biases(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                          num_heads, *, key_padding_mask=None):
    return _packed(query, key, value, in_proj_weight.chunk(3), _biases(in_proj_bias), out_proj_weight,
                   out_proj_bias, num_heads, key_padding_mask, bias=False)


# --- sinusoidal_encoding ---------------------------------------------------------------------------

def _encoding(length, d_model, first=torch.sin, second=torch.cos, pair_step=2, sign=-1, start=0, interleave=True):
    positions = torch.arange(start, start + length, dtype=torch.float64)[:, None]  # (L, 1)
    theta = 10000.0 ** (sign * torch.arange(0, pair_step * (d_model // 2), pair_step, dtype=torch.float64) / d_model)
    angles = positions * theta  # (L, d/2)
    pairs = torch.stack([first(angles), second(angles)], dim=-1) if interleave else \
        torch.cat([first(angles), second(angles)], dim=-1)
    return pairs.reshape(length, d_model).float()


def encoding_with_sin_and_cos_swapped(length, d_model):
    return _encoding(length, d_model, first=torch.cos, second=torch.sin)


def encoding_with_exponent_i_over_d(length, d_model):
    return _encoding(length, d_model, pair_step=1)  # 10000^(-i/d) instead of 10000^(-2i/d)


def encoding_multiplying_by_10000_powers(length, d_model):
    return _encoding(length, d_model, sign=1)  # p * 10000^(2i/d): the exponent's sign lost


def encoding_in_two_halves(length, d_model):
    return _encoding(length, d_model, interleave=False)  # [sin ... | cos ...]


def encoding_from_position_1(length, d_model):
    return _encoding(length, d_model, start=1)


# --- apply_rope ------------------------------------------------------------------------------------

def rope(x, positions=None, exponent_step=2, direction=1, interleave_back=True):
    length, d = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    theta = 10000.0 ** (-torch.arange(0, exponent_step * (d // 2), exponent_step, dtype=torch.float64) / d)
    angles = positions.to(torch.float64)[:, None] * theta  # (L, d/2)
    cos, sin = angles.cos().to(x.dtype), (direction * angles.sin()).to(x.dtype)
    first, second = x[..., 0::2], x[..., 1::2]
    a, b = first * cos - second * sin, first * sin + second * cos
    return torch.stack([a, b], dim=-1).flatten(-2) if interleave_back else torch.cat([a, b], dim=-1)


def rope_pairing_halves(x, positions=None):  # GPT-NeoX's pairs (i, i + d/2)
    length, d = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.to(torch.float64)[:, None] * theta
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def rope_turning_the_wrong_way(x, positions=None):
    return rope(x, positions, direction=-1)


def rope_ignoring_positions(x, positions=None):
    return rope(x)


def rope_with_exponent_i_over_d(x, positions=None):
    return rope(x, positions, exponent_step=1)


def rope_putting_pairs_back_as_halves(x, positions=None):
    return rope(x, positions, interleave_back=False)


# --- cached_causal_attention -----------------------------------------------------------------------

def _cached(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache, *, from_zero=False, top_left=False,
            rotate_values=False, mask=True):
    t_old, t_new = k_cache.shape[-2], x.shape[-2]
    positions = torch.arange(t_new) if from_zero else torch.arange(t_old, t_old + t_new)
    q = rope(split(x @ W_q.T, num_heads), positions)
    k_cache = torch.cat([k_cache, rope(split(x @ W_k.T, num_heads), positions)], dim=-2)
    v_new = split(x @ W_v.T, num_heads)
    v_cache = torch.cat([v_cache, rope(v_new, positions) if rotate_values else v_new], dim=-2)
    if top_left:
        heads = F.scaled_dot_product_attention(q, k_cache, v_cache, is_causal=True)
    else:
        causal = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=t_old) if mask else None
        heads = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=causal)
    return merge(heads) @ W_o.T, k_cache, v_cache


def cached_with_top_left_mask(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    return _cached(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache, top_left=True)


def cached_rotating_from_position_0(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    return _cached(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache, from_zero=True)


def cached_rotating_values(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    return _cached(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache, rotate_values=True)


def cached_without_causal_mask(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    return _cached(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache, mask=False)


def cached_keys_unrotated(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    """Caches the keys as projected and rotates the whole cache, positions 0 .. T - 1, at every call."""
    t_old, t_new = k_cache.shape[-2], x.shape[-2]
    k_cache = torch.cat([k_cache, split(x @ W_k.T, num_heads)], dim=-2)
    v_cache = torch.cat([v_cache, split(x @ W_v.T, num_heads)], dim=-2)
    q = rope(split(x @ W_q.T, num_heads), torch.arange(t_old, t_old + t_new))
    causal = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=t_old)
    heads = F.scaled_dot_product_attention(q, rope(k_cache), v_cache, attn_mask=causal)
    return merge(heads) @ W_o.T, k_cache, v_cache


HEADS_ALONG_THE_SEQUENCE = "Heads cut along the sequence?"
FIXED_DIMS = "transpose(1, 2) assumes"
MISTAKES = [
    KnownMistake("split_heads", "reshaped straight to (B, H, L, D), no transpose", split_without_transpose,
                 HEADS_ALONG_THE_SEQUENCE),
    KnownMistake("split_heads", "transpose(1, 2): one batch dim assumed", split_transposing_dims_1_and_2, FIXED_DIMS),
    KnownMistake("merge_heads", "merged without the transpose", merge_without_transpose,
                 "Heads merged without the transpose?"),
    KnownMistake("merge_heads", "view after the transpose", merge_with_view, "Use .reshape(...) instead"),
    KnownMistake("merge_heads", "transpose(1, 2): one batch dim assumed", merge_transposing_dims_1_and_2, FIXED_DIMS),
    KnownMistake("multihead_attention", "scale 1/sqrt(E), not 1/sqrt(D)", mha_scaled_by_sqrt_E, "1/sqrt(E)?"),
    KnownMistake("multihead_attention", "key_mask polarity flipped", mha_key_mask_flipped,
                 "key_mask polarity flipped?"),
    KnownMistake("multihead_attention", "key_mask (B, 1, Lk): no head dim", mha_key_mask_without_head_dim,
                 "Does key_mask reach every head and query?"),
    KnownMistake("multihead_attention", "weights untransposed, (out, in) read as (in, out)", mha_weights_untransposed,
                 "Weights applied untransposed?"),
    KnownMistake("multihead_attention", "no output projection", mha_without_output_projection,
                 "Output projection missing?"),
    KnownMistake("multihead_attention", "is_causal ignored", mha_ignoring_is_causal, "is_causal ignored?"),
    KnownMistake("multihead_attention", "heads cut along the sequence", mha_heads_cut_along_the_sequence,
                 HEADS_ALONG_THE_SEQUENCE),
    KnownMistake("packed_multihead_attention", "key_padding_mask read as True = takes part",
                 packed_mask_read_as_takes_part, "key_padding_mask read the wrong way?"),
    KnownMistake("packed_multihead_attention", "in_proj_weight's blocks untransposed", packed_weights_untransposed,
                 "applied untransposed?"),
    KnownMistake("packed_multihead_attention", "keys and values projected from query (self-attention only)",
                 packed_projecting_everything_from_query, "Keys and values projected from query?"),
    KnownMistake("packed_multihead_attention", "values projected from key", packed_values_from_key,
                 "Values projected from key?"),
    KnownMistake("packed_multihead_attention", "in_proj_weight cut with split(3)", packed_cut_with_split,
                 "split(3) cuts"),
    KnownMistake("packed_multihead_attention", "in_proj_weight cut along its columns", packed_cut_along_the_columns,
                 "stacked by rows"),
    KnownMistake("packed_multihead_attention", "attention weights of every head, not averaged",
                 packed_weights_of_every_head, "averages them over the heads"),
    KnownMistake("packed_multihead_attention", "biases left out", packed_without_biases, "Biases left out?"),
    KnownMistake("sinusoidal_encoding", "sin and cos swapped", encoding_with_sin_and_cos_swapped,
                 "sin and cos swapped?"),
    KnownMistake("sinusoidal_encoding", "frequency exponent i/d, not 2i/d", encoding_with_exponent_i_over_d,
                 "Frequency exponent off?"),
    KnownMistake("sinusoidal_encoding", "p * 10000^(2i/d): exponent's sign lost", encoding_multiplying_by_10000_powers,
                 "Frequencies above 1?"),
    KnownMistake("sinusoidal_encoding", "sines and cosines in two halves", encoding_in_two_halves,
                 "in two halves?"),
    KnownMistake("sinusoidal_encoding", "positions from 1", encoding_from_position_1, "Positions start at 0"),
    KnownMistake("apply_rope", "pairs (x_i, x_{i + d/2}), GPT-NeoX's", rope_pairing_halves,
                 "Pairs (x[i], x[i + d/2])?"),
    KnownMistake("apply_rope", "rotated the wrong way", rope_turning_the_wrong_way, "Rotated the wrong way?"),
    KnownMistake("apply_rope", "positions ignored", rope_ignoring_positions, "positions ignored?"),
    KnownMistake("apply_rope", "frequency exponent i/d, not 2i/d", rope_with_exponent_i_over_d,
                 "Frequency exponent off?"),
    KnownMistake("apply_rope", "rotated pairs put back as two halves", rope_putting_pairs_back_as_halves,
                 "put back as two halves?"),
    KnownMistake("cached_causal_attention", "causal mask aligned top-left (is_causal=True)", cached_with_top_left_mask,
                 "aligned top-left"),
    KnownMistake("cached_causal_attention", "RoPE positions from 0: the cache's length forgotten",
                 cached_rotating_from_position_0, "rotated from position 0?"),
    KnownMistake("cached_causal_attention", "values rotated by RoPE", cached_rotating_values, "Values rotated?"),
    KnownMistake("cached_causal_attention", "no causal mask", cached_without_causal_mask, "No causal mask?"),
    KnownMistake("cached_causal_attention", "keys cached unrotated, the whole cache rotated at every call",
                 cached_keys_unrotated, "Keys cached before rotation?"),
]
