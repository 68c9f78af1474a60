"""MultiHeadAttention and multihead_attention against torch.nn.MultiheadAttention, and GQA against F.sdpa."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from course_lib import MultiHeadAttention, merge_heads, multihead_attention, packed_multihead_attention, split_heads

# Same examples on every run and machine: no random seed, no example database.
DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)
# The target: parity with nn.MultiheadAttention to 1e-6 in float64 (the gaps seen are ~1e-15).
PARITY = dict(atol=1e-6, rtol=0.0)
E, H, B, LQ, LK = 12, 3, 2, 4, 6


# --- split and merge ------------------------------------------------------------------------------

@settings(max_examples=30, **DETERMINISTIC)
@given(b=st.integers(1, 3), length=st.integers(1, 6), heads=st.integers(1, 4), head_dim=st.integers(1, 5))
def test_split_heads_gives_head_h_the_features_h_times_d_to_h_plus_one_times_d(b, length, heads, head_dim):
    x = torch.randn(b, length, heads * head_dim)
    split = split_heads(x, heads)
    assert split.shape == (b, heads, length, head_dim)
    for h in range(heads):
        assert torch.equal(split[:, h], x[..., h * head_dim:(h + 1) * head_dim])
    assert torch.equal(merge_heads(split), x)


def test_split_heads_rejects_a_width_the_heads_do_not_divide():
    with pytest.raises(ValueError, match=r"E = 10 .* divisible by num_heads = 3"):
        split_heads(torch.randn(2, 4, 10), 3)


# --- parity with nn.MultiheadAttention ------------------------------------------------------------

def torch_module(kdim=None, vdim=None, bias=True, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    module = nn.MultiheadAttention(E, H, kdim=kdim, vdim=vdim, bias=bias, dropout=dropout, batch_first=True,
                                   dtype=torch.float64)
    if bias:  # torch initialises biases to 0: make them count
        with torch.no_grad():
            module.in_proj_bias.normal_() if module.in_proj_bias is not None else None
            module.out_proj.bias.normal_()
    return module


def masks(kind, lq, g):
    """The keyword arguments of one mask kind, in torch's polarity (True = ignore), for both modules alike."""
    ignore_padding = torch.tensor([[False] * LK, [False] * (LK - 2) + [True] * 2])  # last 2 keys of sequence 1
    ignore = torch.rand(lq, LK, generator=g) > 0.7
    ignore[:, 0] = False  # no fully masked row: torch gives NaN there, we give zeros
    float_mask = torch.randn(lq, LK, generator=g, dtype=torch.float64)
    future = torch.ones(lq, LK, dtype=torch.bool).triu(1)  # torch's causal attn_mask: True = may not attend
    per_head = torch.rand(B * H, lq, LK, generator=g) > 0.7  # torch's 3-D attn_mask, (B * H, Lq, Lk)
    per_head[..., 0] = False
    return {
        "none": {},
        "key_padding_mask": {"key_padding_mask": ignore_padding},
        "bool attn_mask": {"attn_mask": ignore},
        "float attn_mask": {"attn_mask": float_mask},
        "per-head bool attn_mask (B * H, Lq, Lk)": {"attn_mask": per_head},
        "padding and float attn_mask": {"key_padding_mask": ignore_padding, "attn_mask": float_mask},
        "is_causal": {"attn_mask": future, "is_causal": True},  # torch's is_causal is a hint: it needs the mask
        "is_causal and padding": {"key_padding_mask": ignore_padding, "attn_mask": future, "is_causal": True},
    }[kind]


MASK_KINDS = ["none", "key_padding_mask", "bool attn_mask", "float attn_mask",
              "per-head bool attn_mask (B * H, Lq, Lk)", "padding and float attn_mask", "is_causal",
              "is_causal and padding"]
ATTENTION_KINDS = {"self": (None, None), "cross": (None, None), "cross, kdim=5, vdim=7": (5, 7)}
WEIGHTS = {"no weights": (False, True), "averaged weights": (True, True), "per-head weights": (True, False)}


def inputs(attention, g):
    kdim, vdim = ATTENTION_KINDS[attention]
    if attention == "self":
        query = torch.randn(B, LK, E, generator=g, dtype=torch.float64)  # Lq = Lk
        return query, query, query
    return (torch.randn(B, LQ, E, generator=g, dtype=torch.float64),
            torch.randn(B, LK, kdim or E, generator=g, dtype=torch.float64),
            torch.randn(B, LK, vdim or E, generator=g, dtype=torch.float64))


# torch deprecates, but supports, a boolean key_padding_mask beside a float attn_mask
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask is deprecated")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_loaded_module_called_as_torchs_gives_torchs_outputs_and_weights(attention, mask_kind, weights, bias):
    kdim, vdim = ATTENTION_KINDS[attention]
    theirs = torch_module(kdim, vdim, bias).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    g = torch.Generator().manual_seed(1)
    query, key, value = inputs(attention, g)
    kwargs = masks(mask_kind, query.shape[1], g)
    need_weights, average = WEIGHTS[weights]
    kwargs |= {"need_weights": need_weights, "average_attn_weights": average}

    expected, expected_weights = theirs(query, key, value, **kwargs)
    actual, actual_weights = ours(query, key, value, **kwargs)

    torch.testing.assert_close(actual, expected, **PARITY)
    if need_weights:
        torch.testing.assert_close(actual_weights, expected_weights, **PARITY)
    else:
        assert actual_weights is None


@pytest.mark.parametrize("mask_kind", ["none", "key_padding_mask", "bool attn_mask", "is_causal and padding"])
def test_positional_arguments_are_torchs_in_torchs_order(mask_kind):
    """forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)."""
    theirs = torch_module().eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    g = torch.Generator().manual_seed(2)
    query, key, value = inputs("cross", g)
    kwargs = masks(mask_kind, LQ, g)
    for need_weights, average in [(True, True), (True, False), (False, True)]:
        args = (query, key, value, kwargs.get("key_padding_mask"), need_weights, kwargs.get("attn_mask"), average,
                kwargs.get("is_causal", False))
        expected, actual = theirs(*args), ours(*args)
        torch.testing.assert_close(actual[0], expected[0], **PARITY)
        if need_weights:
            torch.testing.assert_close(actual[1], expected[1], **PARITY)
        else:
            assert actual[1] is None and expected[1] is None


def test_defaults_are_torchs_need_weights_true_and_averaged_over_heads():
    theirs = torch_module().eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    x = torch.randn(B, LK, E, dtype=torch.float64)
    ignore = masks("key_padding_mask", LK, torch.Generator().manual_seed(0))["key_padding_mask"]
    expected, actual = theirs(x, x, x, ignore), ours(x, x, x, ignore)  # need_weights defaults to True
    assert actual.attn_weights.shape == (B, LK, LK)
    torch.testing.assert_close(actual.attn_weights, expected[1], **PARITY)
    torch.testing.assert_close(actual.attn_output, expected[0], **PARITY)
    assert actual.attn_weights[1, :, -2:].abs().max() == 0  # True in key_padding_mask: the key is ignored


def test_is_causal_alone_applies_the_causal_mask_torch_needs_as_attn_mask():
    theirs = torch_module().eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    x = torch.randn(B, LK, E, dtype=torch.float64)
    future = torch.ones(LK, LK, dtype=torch.bool).triu(1)
    torch.testing.assert_close(ours(x, x, x, is_causal=True)[0], theirs(x, x, x, attn_mask=future)[0], **PARITY)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask is deprecated")
@pytest.mark.parametrize("mask_kind", ["none", "key_padding_mask", "bool attn_mask",
                                       "per-head bool attn_mask (B * H, Lq, Lk)", "padding and float attn_mask",
                                       "is_causal and padding"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_packed_functional_form_gives_what_torchs_module_returns(mask_kind, bias):
    theirs = torch_module(bias=bias).eval()
    g = torch.Generator().manual_seed(3)
    query, key, value = inputs("cross", g)
    kwargs = masks(mask_kind, LQ, g)
    out_bias = theirs.out_proj.bias
    for need_weights, average in [(True, True), (True, False), (False, True)]:
        call = kwargs | {"need_weights": need_weights, "average_attn_weights": average}
        expected = theirs(query, key, value, **call)
        actual = packed_multihead_attention(query, key, value, theirs.in_proj_weight, theirs.in_proj_bias,
                                            theirs.out_proj.weight, out_bias, H, **call)
        torch.testing.assert_close(actual.attn_output, expected[0], **PARITY)
        if need_weights:
            torch.testing.assert_close(actual.attn_weights, expected[1], **PARITY)
        else:
            assert actual.attn_weights is None


def test_functional_form_takes_masks_in_the_course_polarity_under_another_name():
    """multihead_attention's key_mask is True where a key takes part: the opposite of key_padding_mask."""
    theirs = torch_module().eval()
    g = torch.Generator().manual_seed(4)
    query, key, value = inputs("cross", g)
    kwargs = masks("is_causal and padding", LQ, g)
    W_q, W_k, W_v = theirs.in_proj_weight.chunk(3)
    b_q, b_k, b_v = theirs.in_proj_bias.chunk(3)
    takes_part = torch.ones(LQ, LK, dtype=torch.bool).tril()  # F.scaled_dot_product_attention's polarity
    actual = multihead_attention(query, key, value, W_q, W_k, W_v, theirs.out_proj.weight, H, b_q=b_q, b_k=b_k,
                                 b_v=b_v, b_o=theirs.out_proj.bias, key_mask=~kwargs["key_padding_mask"],
                                 attn_mask=takes_part)
    torch.testing.assert_close(actual, theirs(query, key, value, **kwargs)[0], **PARITY)
    with pytest.raises(TypeError, match="key_padding_mask"):
        multihead_attention(query, key, value, W_q, W_k, W_v, theirs.out_proj.weight, H,
                            key_padding_mask=kwargs["key_padding_mask"])


def test_a_weight_in_in_out_layout_is_refused_with_a_message_that_says_so():
    x, memory = torch.randn(1, 3, 8), torch.randn(1, 5, 6)
    W, W_kv = torch.randn(8, 8), torch.randn(6, 8)  # W_kv in (in, out): (E_k, E) instead of (E, E_k)
    with pytest.raises(ValueError, match=r"W_k must be \(out, in\) with in = 6.*needs a transpose"):
        multihead_attention(x, memory, memory, W, W_kv, W_kv, W, 2)


def test_a_sequence_first_torch_module_is_refused_by_from_torch_and_loads_with_load_torch_parameters():
    theirs = nn.MultiheadAttention(E, H, dtype=torch.float64)  # batch_first=False: (L, B, E)
    with pytest.raises(ValueError, match="batch_first=False"):
        MultiHeadAttention.from_torch(theirs)
    ours = MultiHeadAttention(E, H, dtype=torch.float64)
    ours.load_torch_parameters(theirs)
    x = torch.randn(B, LK, E, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1))[0]
                               .transpose(0, 1), **PARITY)


def test_dropout_is_off_in_eval_mode_and_acts_on_the_weights_in_training_mode():
    theirs = torch_module(dropout=0.5).eval()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    x = torch.randn(B, LK, E, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x, x, x)[0], **PARITY)
    ours.train()
    torch.manual_seed(0)
    _, weights = ours(x, need_weights=True, average_attn_weights=False)
    # inverted dropout: each weight is 0 or twice its value; about half are dropped
    dropped = (weights == 0).double().mean().item()
    assert 0.35 < dropped < 0.65
    clean = MultiHeadAttention.from_torch(theirs).eval()(x, need_weights=True, average_attn_weights=False)[1]
    kept = weights != 0
    torch.testing.assert_close(weights[kept], 2 * clean[kept])


def test_torch_layout_with_separate_projection_weights_loads_too():
    theirs = torch_module(kdim=5, vdim=7)
    assert theirs.in_proj_weight is None  # torch keeps q_proj_weight, k_proj_weight, v_proj_weight
    ours = MultiHeadAttention.from_torch(theirs)
    assert torch.equal(ours.k_proj.weight, theirs.k_proj_weight)


def test_modules_with_extra_keys_are_refused():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, add_bias_kv=True, batch_first=True))


def test_a_query_with_every_key_masked_gets_zeros_not_nan():
    mha = MultiHeadAttention(E, H)
    x = torch.randn(1, 3, E)
    out, weights = mha(x, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))  # torch: True = ignore every key
    assert torch.equal(weights, torch.zeros(1, 3, 3))
    torch.testing.assert_close(out, mha.out_proj.bias.expand(1, 3, E))  # no head contributes: only b_O


# --- grouped-query attention ----------------------------------------------------------------------

@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_grouped_query_attention_matches_torch_sdpa_with_enable_gqa(num_kv_heads):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, dtype=torch.float64)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    q = split_heads(mha.q_proj(x), 4)
    k, v = split_heads(mha.k_proj(x), num_kv_heads), split_heads(mha.v_proj(x), num_kv_heads)
    expected = mha.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)))
    torch.testing.assert_close(mha(x, is_causal=True)[0], expected)
    assert mha.k_proj.weight.shape == (num_kv_heads * 4, 16)  # the cache shrinks with the projection


def test_grouped_query_attention_equals_multihead_with_each_kv_head_repeated_for_its_group():
    torch.manual_seed(0)
    gqa = MultiHeadAttention(16, 4, num_kv_heads=2, dtype=torch.float64)
    mha = MultiHeadAttention(16, 4, dtype=torch.float64)
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):  # kv head g serves query heads 2g and 2g + 1
            weight = getattr(gqa, name).weight.reshape(2, 4, 16).repeat_interleave(2, dim=0).reshape(16, 16)
            bias = getattr(gqa, name).bias.reshape(2, 4).repeat_interleave(2, dim=0).reshape(16)
            getattr(mha, name).weight.copy_(weight)
            getattr(mha, name).bias.copy_(bias)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(gqa(x)[0], mha(x)[0])


def test_num_kv_heads_equal_to_num_heads_is_plain_multihead_attention():
    torch.manual_seed(0)
    theirs = torch_module()
    ours = MultiHeadAttention(E, H, num_kv_heads=H, dtype=torch.float64)
    ours.load_torch_parameters(theirs)
    x = torch.randn(B, LK, E, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x, x, x)[0], **PARITY)


def test_num_kv_heads_must_divide_num_heads():
    with pytest.raises(ValueError, match="multiple of num_kv_heads = 3"):
        MultiHeadAttention(16, 4, num_kv_heads=3)


def test_functional_form_takes_torchs_out_in_layout_as_it_is():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, bias=False, dtype=torch.float64)
    x = torch.randn(B, LK, E, dtype=torch.float64)
    weights = [p.weight for p in (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj)]  # nn.Linear's (out, in)
    torch.testing.assert_close(multihead_attention(x, x, x, *weights, H), mha(x)[0])
