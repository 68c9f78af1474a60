"""Additive and multiplicative attention scores, and the attention modules built on them."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from course_lib import (
    AdditiveAttention,
    Attention,
    AttentionOutput,
    DotScore,
    GeneralScore,
    additive_attention,
    additive_scores,
    dot_scores,
    general_scores,
    key_mask,
)


def params(g, d_q, d_k, h, dtype=torch.float32):
    return (torch.randn(h, d_q, generator=g, dtype=dtype), torch.randn(h, d_k, generator=g, dtype=dtype),
            torch.randn(h, generator=g, dtype=dtype))


def plain_additive_scores(query, key, W_q, W_k, v):
    """The formula, one pair at a time: v^T tanh(W_q q_i + W_k k_j)."""
    scores = torch.empty(query.shape[0], key.shape[0], dtype=query.dtype)
    for i, q in enumerate(query):
        for j, k in enumerate(key):
            scores[i, j] = v @ torch.tanh(W_q @ q + W_k @ k)
    return scores


def test_additive_scores_match_the_formula_pair_by_pair_with_different_query_and_key_sizes():
    g = torch.Generator().manual_seed(0)
    query, key = (torch.randn(3, 4, generator=g, dtype=torch.float64),
                  torch.randn(5, 7, generator=g, dtype=torch.float64))
    W_q, W_k, v = params(g, 4, 7, 6, torch.float64)
    torch.testing.assert_close(additive_scores(query, key, W_q, W_k, v), plain_additive_scores(query, key, W_q, W_k, v))


def test_additive_scores_equal_a_two_layer_network_built_from_nn_linear_on_every_pair():
    torch.manual_seed(0)
    W_q, W_k, v = nn.Linear(4, 8, bias=False), nn.Linear(6, 8, bias=False), nn.Linear(8, 1, bias=False)
    query, key = torch.randn(2, 3, 4), torch.randn(2, 5, 6)
    pairs = W_q(query)[:, :, None, :] + W_k(key)[:, None, :, :]  # (2, 3, 5, 8)
    expected = v(torch.tanh(pairs)).squeeze(-1)
    torch.testing.assert_close(additive_scores(query, key, W_q.weight, W_k.weight, v.weight[0]), expected)


def test_additive_scores_have_shape_lq_by_lk_with_any_leading_dims():
    g = torch.Generator().manual_seed(1)
    scores = additive_scores(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 6, 5), *params(g, 4, 5, 7))
    assert scores.shape == (2, 3, 4, 6)


def test_dot_scores_are_unscaled_sdpa_scores():
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    # with the identity as values, SDPA returns its softmax weights; scale=1 is the plain dot product
    expected = F.scaled_dot_product_attention(q, k, torch.eye(5).expand(2, 5, 5), scale=1.0)
    torch.testing.assert_close(torch.softmax(dot_scores(q, k), dim=-1), expected)


def test_general_scores_with_the_identity_are_dot_scores_and_are_bilinear():
    q, k = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(general_scores(q, k, torch.eye(4, dtype=torch.float64)), dot_scores(q, k))
    W = torch.randn(4, 6, dtype=torch.float64)
    k6 = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(general_scores(q, k6, W), torch.einsum("id,de,je->ij", q, W, k6))


def test_general_scores_weight_is_stored_as_nn_linear_projecting_the_keys_to_the_query_size():
    torch.manual_seed(6)
    to_query_size = nn.Linear(6, 4, bias=False)  # weight (d_q, d_k) = (4, 6), (out, in)
    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 6)
    expected = q @ to_query_size(k).transpose(-2, -1)  # q^T (W k) for every pair
    torch.testing.assert_close(general_scores(q, k, to_query_size.weight), expected)


@pytest.mark.parametrize("fn, args", [
    (dot_scores, (torch.randn(2, 3), torch.randn(4, 5))),
    (general_scores, (torch.randn(2, 3), torch.randn(4, 5), torch.randn(5, 3))),
    (additive_scores, (torch.randn(2, 3), torch.randn(4, 5), torch.randn(6, 5), torch.randn(6, 5), torch.randn(6))),
    (additive_scores, (torch.randn(2, 3), torch.randn(4, 5), torch.randn(6, 3), torch.randn(6, 5), torch.randn(7))),
])
def test_mismatched_sizes_raise_a_value_error_naming_the_shapes(fn, args):
    with pytest.raises(ValueError, match=r"\(\d+, \d+\)"):
        fn(*args)


def test_padded_keys_get_exactly_zero_weight_by_valid_lengths_and_by_mask():
    g = torch.Generator().manual_seed(2)
    query, key = torch.randn(3, 2, 4, generator=g), torch.randn(3, 6, 5, generator=g)
    key[1, 3:] = 1e4  # huge padding: it must not leak
    W_q, W_k, v = params(g, 4, 5, 8)
    lengths = torch.tensor([6, 3, 1])
    context, weights = additive_attention(query, key, key, W_q, W_k, v, valid_lens=lengths)
    padded = torch.arange(6) >= lengths[:, None, None]  # (3, 1, 6)
    assert torch.all(weights.masked_select(padded.expand_as(weights)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
    _, by_mask = additive_attention(query, key, key, W_q, W_k, v, mask=~padded)
    assert torch.equal(weights, by_mask)
    assert context.abs().max() < 1e3


def test_valid_lengths_per_query_mask_each_query_separately():
    lengths = torch.tensor([[1, 3], [2, 2]])  # (B, Lq)
    mask = key_mask(torch.zeros(2, 4, 1), valid_lens=lengths)
    assert mask.shape == (2, 2, 4)
    assert mask[0].tolist() == [[True, False, False, False], [True, True, True, False]]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.data())
def test_weights_are_a_distribution_over_the_real_keys_only(batch, n_queries, n_keys, data):
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, n_keys), min_size=batch, max_size=batch)))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    key = torch.randn(batch, n_keys, 3, generator=g)
    _, weights = additive_attention(torch.randn(batch, n_queries, 2, generator=g), key, key,
                                    *params(g, 2, 3, 4), valid_lens=lengths)
    real = torch.arange(n_keys) < lengths[:, None, None]
    assert torch.all(weights[~real.expand_as(weights)] == 0) and torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, n_queries))


def test_additive_scores_and_attention_pass_gradcheck_in_float64():
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randn(2, 3, 4, generator=g, dtype=torch.float64),
              torch.randn(2, 5, 6, generator=g, dtype=torch.float64),
              torch.randn(2, 5, 3, generator=g, dtype=torch.float64), *params(g, 4, 6, 7, torch.float64)]
    inputs = [x.requires_grad_() for x in inputs]
    lengths = torch.tensor([5, 2])
    assert torch.autograd.gradcheck(lambda q, k, W_q, W_k, v: additive_scores(q, k, W_q, W_k, v),
                                    [inputs[0], inputs[1], *inputs[3:]])
    assert torch.autograd.gradcheck(
        lambda q, k, val, W_q, W_k, v: additive_attention(q, k, val, W_q, W_k, v, valid_lens=lengths), inputs)


def test_additive_attention_module_agrees_with_the_formula_written_out():
    torch.manual_seed(4)
    attention = AdditiveAttention(query_size=3, key_size=5, hidden_size=8).double()
    query, key, value = (torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 6, 5, dtype=torch.float64),
                         torch.randn(2, 6, 2, dtype=torch.float64))
    lengths = torch.tensor([6, 4])
    context, weights = attention(query, key, value, valid_lens=lengths)
    for b in range(2):
        n = int(lengths[b])
        p = attention.score
        expected_weights = torch.softmax(plain_additive_scores(query[b], key[b, :n], p.W_q, p.W_k, p.v), dim=-1)
        torch.testing.assert_close(weights[b, :, :n], expected_weights)
        torch.testing.assert_close(context[b], expected_weights @ value[b, :n])


def test_attention_with_the_dot_score_is_sdpa_without_scaling():
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])[:, None, :]  # (2, 1, 5)
    context, _ = Attention(DotScore())(q, k, v, mask=mask)
    torch.testing.assert_close(context, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0))


def test_the_three_scorers_share_one_interface_and_train():
    torch.manual_seed(5)
    for score in [DotScore(), GeneralScore(4, 4), AdditiveAttention(4, 4, 8).score]:
        context, weights = Attention(score)(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 2),
                                            valid_lens=torch.tensor([5, 3]))
        assert context.shape == (2, 3, 2) and weights.shape == (2, 3, 5)
        if list(score.parameters()):
            context.sum().backward()
            assert all(p.grad is not None for p in score.parameters())


def test_mask_and_valid_lens_together_are_refused():
    with pytest.raises(ValueError, match="either mask or valid_lens"):
        key_mask(torch.zeros(1, 2, 3), mask=torch.ones(1, 2, dtype=torch.bool), valid_lens=torch.tensor([1]))


def test_function_and_module_return_the_same_named_context_and_weights():
    torch.manual_seed(7)
    attention = AdditiveAttention(query_size=3, key_size=5, hidden_size=4)
    query, key, value = torch.randn(2, 2, 3), torch.randn(2, 4, 5), torch.randn(2, 4, 6)
    lengths = torch.tensor([4, 3])
    by_module = attention(query, key, value, valid_lens=lengths)
    p = attention.score
    by_function = additive_attention(query, key, value, p.W_q, p.W_k, p.v, valid_lens=lengths)
    for output in (by_module, by_function):
        assert isinstance(output, AttentionOutput) and output._fields == ("context", "weights")
        assert output.context.shape == (2, 2, 6) and output.weights.shape == (2, 2, 4)
    torch.testing.assert_close(by_module.context, by_function.context)
    torch.testing.assert_close(by_module.weights, by_function.weights)


def test_masking_options_are_keyword_only_in_one_order_everywhere():
    query, key, params_ = torch.randn(1, 1, 2), torch.randn(1, 3, 2), params(torch.Generator().manual_seed(8), 2, 2, 3)
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    with pytest.raises(TypeError):
        additive_attention(query, key, key, *params_, mask)  # positional options are refused
    with pytest.raises(TypeError):
        Attention(DotScore())(query, key, key, mask)
    with pytest.raises(TypeError):
        key_mask(key, mask)
    for fn in (additive_attention, Attention.forward, key_mask):
        options = [name for name, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY]
        assert options == ["mask", "valid_lens"], f"{fn.__qualname__}: {options}"
