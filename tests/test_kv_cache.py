"""Decoding with a KV cache gives the outputs of causal attention over the whole sequence; the cache's size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib import CausalSelfAttention, KVCache, cached_causal_attention, kv_cache_bytes


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1], ids=["multi-head", "grouped-query", "multi-query"])
def test_token_by_token_decoding_with_the_cache_equals_the_whole_sequence(num_kv_heads):
    torch.manual_seed(0)
    layer = CausalSelfAttention(16, 4, num_kv_heads=num_kv_heads, dtype=torch.float64)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    cache = KVCache()
    steps = torch.cat([layer(x[:, t:t + 1], cache) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, layer(x))
    assert cache.keys.shape == (2, num_kv_heads, 9, 4)


def test_a_prompt_in_one_call_then_tokens_one_at_a_time_equals_the_whole_sequence():
    torch.manual_seed(0)
    layer = CausalSelfAttention(8, 2, dtype=torch.float64)
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    cache = KVCache()
    prompt = layer(x[:, :4], cache)  # several new tokens at once: the mask is aligned bottom-right
    rest = [layer(x[:, t:t + 1], cache) for t in range(4, 7)]
    torch.testing.assert_close(torch.cat([prompt, *rest], dim=1), layer(x))


def test_causal_self_attention_is_torchs_multihead_attention_with_a_causal_mask():
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(12, 3, batch_first=True, dtype=torch.float64)
    layer = CausalSelfAttention(12, 3, dtype=torch.float64)
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
    torch.testing.assert_close(out, x)  # identity projections: its own value comes back
    assert k.shape == v.shape == (1, 2, 1, 2)


def test_kv_cache_append_concatenates_along_the_tokens():
    cache = KVCache()
    cache.append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    keys, values = cache.append(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert len(cache) == 4 and keys.shape == values.shape == (1, 2, 4, 4) and keys[0, 0, -1, 0] == 1


@pytest.mark.parametrize("num_kv_heads", [8, 2, 1])
def test_cache_bytes_formula_matches_the_tensors_a_decoder_really_holds(num_kv_heads):
    layers, tokens = 3, 5
    stack = [CausalSelfAttention(32, 8, num_kv_heads=num_kv_heads, dtype=torch.float16) for _ in range(layers)]
    caches = [KVCache() for _ in range(layers)]
    with torch.no_grad():
        for t in range(tokens):
            h = torch.randn(2, 1, 32, dtype=torch.float16)
            for layer, cache in zip(stack, caches):
                h = layer(h, cache)
    measured = sum(c.keys.nbytes + c.values.nbytes for c in caches)
    assert measured == kv_cache_bytes(layers, num_kv_heads, head_dim=4, num_tokens=tokens, batch_size=2)


def test_grouped_query_attention_divides_the_cache_by_the_group_size():
    full = kv_cache_bytes(num_layers=80, num_kv_heads=64, head_dim=128, num_tokens=4096)
    assert kv_cache_bytes(num_layers=80, num_kv_heads=8, head_dim=128, num_tokens=4096) * 8 == full
