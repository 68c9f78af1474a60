"""Decoding with a KV cache (and RoPE) gives the outputs of one causal pass over the whole sequence;
the cache's size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import CausalSelfAttention, KVCache, cached_causal_attention, kv_cache_bytes


def rope_by_complex_numbers(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE as RoFormer's section 3.2 writes it: pair (x[2i], x[2i+1]) times e^{i p theta_i}."""
    d = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64), positions[:, None] * theta)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).reshape(x.shape).to(x.dtype)


def one_causal_pass_by_torch(layer: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The whole sequence at once: torch's projections, RoPE at positions 0 .. L-1, F.sdpa with is_causal."""
    mha = layer.attention
    def heads(t, n):  # (B, L, n * D) -> (B, n, L, D)
        return t.unflatten(-1, (n, -1)).transpose(1, 2)

    q, k, v = heads(mha.q_proj(x), mha.num_heads), heads(mha.k_proj(x), mha.num_kv_heads), heads(
        mha.v_proj(x), mha.num_kv_heads)
    positions = torch.arange(x.shape[1], dtype=torch.float64)
    if layer.rope:
        q, k = rope_by_complex_numbers(q, positions), rope_by_complex_numbers(k, positions)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=mha.num_kv_heads != mha.num_heads)
    return mha.out_proj(out.transpose(1, 2).flatten(-2))


@pytest.mark.parametrize("rope", [True, False], ids=["RoPE", "no RoPE"])
@pytest.mark.parametrize("num_kv_heads", [4, 2, 1], ids=["multi-head", "grouped-query", "multi-query"])
def test_one_pass_is_torchs_causal_attention_with_rope_at_positions_0_to_L_minus_1(num_kv_heads, rope):
    torch.manual_seed(0)
    layer = CausalSelfAttention(16, 4, num_kv_heads=num_kv_heads, rope=rope, dtype=torch.float64)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), one_causal_pass_by_torch(layer, x))


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1], ids=["multi-head", "grouped-query", "multi-query"])
def test_token_by_token_decoding_with_the_cache_equals_the_whole_sequence(num_kv_heads):
    torch.manual_seed(0)
    layer = CausalSelfAttention(16, 4, num_kv_heads=num_kv_heads, dtype=torch.float64)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    cache = KVCache()
    steps = torch.cat([layer(x[:, t:t + 1], cache) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, one_causal_pass_by_torch(layer, x))
    assert cache.keys.shape == (2, num_kv_heads, 9, 4) and len(cache) == 9


def test_a_prompt_in_one_call_then_chunks_equals_the_whole_sequence():
    torch.manual_seed(0)
    layer = CausalSelfAttention(8, 2, dtype=torch.float64)
    x = torch.randn(1, 10, 8, dtype=torch.float64)
    cache = KVCache()
    # several new tokens against a non-empty cache: the mask is aligned bottom-right, positions go on
    outputs = [layer(x[:, :4], cache), layer(x[:, 4:7], cache), layer(x[:, 7:8], cache), layer(x[:, 8:], cache)]
    torch.testing.assert_close(torch.cat(outputs, dim=1), one_causal_pass_by_torch(layer, x))


def test_several_new_tokens_need_the_bottom_right_mask_and_their_absolute_positions():
    """What a top-left mask (torch's is_causal=True) or RoPE from position 0 would give is not the answer."""
    torch.manual_seed(0)
    E, H, t_old, t_new = 8, 2, 4, 3
    W_q, W_k, W_v, W_o = (torch.randn(E, E, dtype=torch.float64) / E**0.5 for _ in range(4))
    x = torch.randn(1, t_old + t_new, E, dtype=torch.float64)
    empty = torch.zeros(1, H, 0, E // H, dtype=torch.float64)
    prompt = cached_causal_attention(x[:, :t_old], W_q, W_k, W_v, W_o, H, empty, empty)
    new = cached_causal_attention(x[:, t_old:], W_q, W_k, W_v, W_o, H, prompt.k_cache, prompt.v_cache)
    whole = cached_causal_attention(x, W_q, W_k, W_v, W_o, H, empty, empty)
    torch.testing.assert_close(new.output, whole.output[:, t_old:])

    def heads(t):
        return t.unflatten(-1, (H, -1)).transpose(1, 2)

    positions = torch.arange(t_old, t_old + t_new, dtype=torch.float64)
    q = rope_by_complex_numbers(heads(x[:, t_old:] @ W_q.T), positions)
    k_new = rope_by_complex_numbers(heads(x[:, t_old:] @ W_k.T), positions)
    torch.testing.assert_close(new.k_cache[..., t_old:, :], k_new)  # the cache holds rotated keys
    k, v = new.k_cache, new.v_cache
    def merge(t):
        return t.transpose(1, 2).flatten(-2) @ W_o.T

    top_left = merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert (top_left - new.output).abs().max() > 0.1
    bottom_right = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=t_old)
    torch.testing.assert_close(merge(F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right)), new.output)
    q_from_zero = rope_by_complex_numbers(heads(x[:, t_old:] @ W_q.T), torch.arange(t_new, dtype=torch.float64))
    assert (merge(F.scaled_dot_product_attention(q_from_zero, k, v, attn_mask=bottom_right)) - new.output
            ).abs().max() > 0.01


def test_without_rope_causal_self_attention_is_torchs_multihead_attention_with_a_causal_mask():
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(12, 3, batch_first=True, dtype=torch.float64)
    layer = CausalSelfAttention(12, 3, rope=False, dtype=torch.float64)
    layer.attention.load_torch_parameters(theirs)
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch: True = may not attend
    torch.testing.assert_close(layer(x), theirs(x, x, x, attn_mask=future, need_weights=False)[0])


def test_the_first_token_with_an_empty_cache_attends_only_to_itself():
    E = 4
    W = torch.eye(E, dtype=torch.float64)
    x = torch.randn(1, 1, E, dtype=torch.float64)
    empty = torch.zeros(1, 2, 0, 2, dtype=torch.float64)
    out, k, v = cached_causal_attention(x, W, W, W, W, 2, empty, empty)
    torch.testing.assert_close(out, x)  # identity projections, position 0 (no rotation): its own value comes back
    assert k.shape == v.shape == (1, 2, 1, 2)


def test_a_cache_of_the_wrong_shape_is_refused_with_the_shape_it_needs():
    W = torch.eye(4)
    with pytest.raises(ValueError, match=r"k_cache and v_cache must be \(B, H_kv, T_old, D\) = \(1, 2, T_old, 2\)"):
        cached_causal_attention(torch.randn(1, 1, 4), W, W, W, W, 2, torch.zeros(1, 0, 2), torch.zeros(1, 0, 2))


@pytest.mark.parametrize("num_kv_heads", [8, 2, 1])
def test_cache_bytes_formula_matches_the_tensors_a_decoder_really_holds(num_kv_heads):
    layers, tokens = 3, 5
    stack = [CausalSelfAttention(32, 8, num_kv_heads=num_kv_heads, dtype=torch.float16) for _ in range(layers)]
    caches = [KVCache() for _ in range(layers)]
    with torch.no_grad():
        for _t in range(tokens):
            h = torch.randn(2, 1, 32, dtype=torch.float16)
            for layer, cache in zip(stack, caches):
                h = layer(h, cache)
    measured = sum(c.keys.nbytes + c.values.nbytes for c in caches)
    assert measured == kv_cache_bytes(layers, num_kv_heads, head_dim=4, num_tokens=tokens, batch_size=2)


def test_grouped_query_attention_divides_the_cache_by_the_group_size():
    full = kv_cache_bytes(num_layers=80, num_kv_heads=64, head_dim=128, num_tokens=4096)
    assert kv_cache_bytes(num_layers=80, num_kv_heads=8, head_dim=128, num_tokens=4096) * 8 == full
