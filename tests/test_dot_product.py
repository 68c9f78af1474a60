"""attention_weights and scaled_dot_product_attention against F.scaled_dot_product_attention."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import attention_weights, causal_mask, padding_mask, scaled_dot_product_attention

# Same examples on every run and machine: no random seed, no example database.
DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)


def qkv(q_shape, k_shape, v_shape, dtype, rng):
    return tuple(
        torch.randn(shape, generator=rng, dtype=dtype) for shape in (q_shape, k_shape, v_shape)
    )


def make_mask(kind, q_shape, k_shape, dtype, rng):
    """attn_mask of the given kind for queries (..., Lq, Dk) and keys (..., Lk, Dk)."""
    Lq, Lk = q_shape[-2], k_shape[-2]
    if kind is None:
        return None
    if kind == "bool (Lq, Lk)":
        mask = torch.rand(Lq, Lk, generator=rng) < 0.6
        mask[:, 0] = True
        return mask
    if kind == "padding (B, 1, 1, Lk)":
        return padding_mask(torch.tensor([Lk, 2]), Lk)[:, None, None, :]
    if kind == "float bias (Lq, Lk)":
        return torch.randn(Lq, Lk, generator=rng, dtype=dtype)
    if kind == "float -inf (Lq, Lk)":
        bias = torch.zeros(Lq, Lk, dtype=dtype)
        bias[torch.rand(Lq, Lk, generator=rng) < 0.4] = float("-inf")
        bias[:, -1] = 0.0
        return bias
    raise ValueError(kind)


CASES = {
    # name: (query shape, key shape, value shape, mask kind, extra kwargs)
    "single head": ((5, 8), (5, 8), (5, 8), None, {}),
    "batched (B, H, L, D)": ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8), None, {}),
    "Lq != Lk, Dv != Dk": ((2, 3, 4, 8), (2, 3, 7, 8), (2, 3, 7, 5), None, {}),
    "leading dims broadcast": ((2, 3, 4, 8), (3, 6, 8), (1, 6, 5), None, {}),
    "length 1": ((1, 4), (1, 4), (1, 3), None, {}),
    "one query, many keys": ((2, 1, 4), (2, 6, 4), (2, 6, 3), None, {}),
    "custom scale": ((2, 4, 8), (2, 6, 8), (2, 6, 8), None, {"scale": 0.3}),
    "bool mask (Lq, Lk) over (B, H)": (
        (2, 3, 4, 8),
        (2, 3, 6, 8),
        (2, 3, 6, 5),
        "bool (Lq, Lk)",
        {},
    ),
    "padding mask (B, 1, 1, Lk)": (
        (2, 3, 4, 8),
        (2, 3, 6, 8),
        (2, 3, 6, 5),
        "padding (B, 1, 1, Lk)",
        {},
    ),
    "float mask as bias": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), "float bias (Lq, Lk)", {}),
    "float mask with -inf": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), "float -inf (Lq, Lk)", {}),
    "causal, Lq == Lk": ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 4), None, {"is_causal": True}),
    "causal, Lq < Lk": ((2, 3, 3, 8), (2, 3, 7, 8), (2, 3, 7, 4), None, {"is_causal": True}),
    "causal, Lq > Lk": ((2, 3, 7, 8), (2, 3, 3, 8), (2, 3, 3, 4), None, {"is_causal": True}),
    "causal, custom scale": (
        (2, 5, 8),
        (2, 5, 8),
        (2, 5, 8),
        None,
        {"is_causal": True, "scale": 2.0},
    ),
    "grouped-query attention": (
        (2, 6, 4, 8),
        (2, 2, 5, 8),
        (2, 2, 5, 3),
        None,
        {"enable_gqa": True},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_sdpa_matches_torch(case, dtype, tol, rng):
    q_shape, k_shape, v_shape, mask_kind, kwargs = case
    query, key, value = qkv(q_shape, k_shape, v_shape, dtype, rng)
    attn_mask = make_mask(mask_kind, q_shape, k_shape, dtype, rng)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, **kwargs)
    actual = scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, **kwargs)
    assert actual.shape == expected.shape and actual.dtype == dtype
    torch.testing.assert_close(actual, expected, **tol)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_attention_weights_match_torch(case, dtype, tol, rng):
    q_shape, k_shape, _, mask_kind, kwargs = case
    query, key, _ = qkv(q_shape, k_shape, k_shape, dtype, rng)
    attn_mask = make_mask(mask_kind, q_shape, k_shape, dtype, rng)
    # Values = identity (with key's leading dims), so torch's output is its weight matrix.
    identity = torch.eye(k_shape[-2], dtype=dtype).expand(*k_shape[:-1], k_shape[-2])
    expected = F.scaled_dot_product_attention(query, key, identity, attn_mask=attn_mask, **kwargs)
    actual = attention_weights(query, key, attn_mask=attn_mask, **kwargs)
    torch.testing.assert_close(actual, expected, **tol)


def test_sdpa_of_non_contiguous_views_matches_torch(dtype, tol, rng):
    query = torch.randn(2, 3, 8, 5, generator=rng, dtype=dtype).transpose(-2, -1)  # (2, 3, 5, 8)
    key = torch.randn(2, 3, 12, 8, generator=rng, dtype=dtype)[:, :, ::2]  # (2, 3, 6, 8)
    value = torch.randn(2, 6, 3, 4, generator=rng, dtype=dtype).transpose(1, 2)  # (2, 3, 6, 4)
    mask = (torch.rand(6, 5, generator=rng) < 0.7).T  # (5, 6)
    assert not any(t.is_contiguous() for t in (query, key, value, mask))
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    actual = scaled_dot_product_attention(query, key, value, attn_mask=mask)
    torch.testing.assert_close(actual, expected, **tol)


@pytest.mark.parametrize("mask_kind", ["bool", "float -inf"])
def test_fully_masked_row_gives_zeros_like_torch(mask_kind, dtype, rng):
    query, key, value = qkv((2, 4, 8), (2, 5, 8), (2, 5, 3), dtype, rng)
    keep = torch.ones(4, 5, dtype=torch.bool)
    keep[2] = False  # query 2 may see no key
    if mask_kind == "bool":
        attn_mask = keep
    else:
        attn_mask = torch.zeros(4, 5, dtype=dtype).masked_fill(~keep, float("-inf"))
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
    actual = scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
    assert torch.equal(expected[:, 2], torch.zeros(2, 3, dtype=dtype))  # what torch 2.13 does
    assert torch.equal(actual[:, 2], torch.zeros(2, 3, dtype=dtype))
    assert torch.isfinite(actual).all()


def test_sdpa_with_logits_of_magnitude_1e4_matches_torch(dtype, rng):
    # Scores ~1e4: float32 rounds them to ~1e-3, so compare float32 loosely, float64 tightly.
    tol = dict(atol=1e-3, rtol=1e-3) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-8)
    query, key, value = qkv((2, 4, 8), (2, 6, 8), (2, 6, 3), dtype, rng)
    query = query * 1e4 / math.sqrt(8)  # scores q.k / sqrt(8) of order 1e4
    actual = scaled_dot_product_attention(query, key, value)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, F.scaled_dot_product_attention(query, key, value), **tol)


def test_default_scale_is_one_over_sqrt_d_k(rng):
    query, key, value = qkv((3, 16), (5, 16), (5, 2), torch.float64, rng)
    default = scaled_dot_product_attention(query, key, value)
    explicit = scaled_dot_product_attention(query, key, value, scale=1 / math.sqrt(16))
    unscaled = scaled_dot_product_attention(query, key, value, scale=1.0)
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, unscaled), "the default must divide the scores by sqrt(d_k)"


def test_is_causal_gives_the_same_result_as_causal_mask(dtype, tol, rng):
    query, key, value = qkv((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), dtype, rng)
    with_flag = scaled_dot_product_attention(query, key, value, is_causal=True)
    with_mask = scaled_dot_product_attention(query, key, value, attn_mask=causal_mask(4, 6))
    torch.testing.assert_close(with_flag, with_mask, **tol)


# --- dropout ---------------------------------------------------------------------------


def test_dropout_p_zero_is_the_no_dropout_result(rng):
    query, key, value = qkv((2, 4, 8), (2, 6, 8), (2, 6, 3), torch.float64, rng)
    assert torch.equal(
        scaled_dot_product_attention(query, key, value, dropout_p=0.0),
        scaled_dot_product_attention(query, key, value),
    )


def test_dropout_zeroes_weights_with_probability_p_and_rescales_the_rest(rng):
    p = 0.3
    query, key, _ = qkv((8, 64, 8), (8, 64, 8), (1, 1, 1), torch.float64, rng)
    weights = attention_weights(query, key)
    # Values = identity: the output is the dropped-out weight matrix itself.
    torch.manual_seed(0)
    identity = torch.eye(64, dtype=torch.float64)
    dropped = scaled_dot_product_attention(query, key, identity, dropout_p=p)
    assert dropped.shape == weights.shape
    kept = dropped != 0
    # Inverted dropout: a kept weight is scaled by 1 / (1 - p), so its expectation is unchanged.
    torch.testing.assert_close(dropped[kept], weights[kept] / (1 - p))
    fraction_dropped = 1 - kept.double().mean().item()  # over 8 * 64 * 64 = 32768 weights
    assert abs(fraction_dropped - p) < 0.02


def test_dropout_p_one_gives_zeros_like_torch(rng):
    query, key, value = qkv((2, 4, 8), (2, 6, 8), (2, 6, 3), torch.float32, rng)
    assert torch.equal(
        scaled_dot_product_attention(query, key, value, dropout_p=1.0), torch.zeros(2, 4, 3)
    )
    expected = F.scaled_dot_product_attention(query, key, value, dropout_p=1.0)
    assert torch.equal(expected, torch.zeros(2, 4, 3))


# --- gradients -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask_kind", [None, "bool with a fully masked row", "float -inf (Lq, Lk)", "causal"]
)
def test_sdpa_gradient_passes_gradcheck(mask_kind, rng):
    inputs = [t.requires_grad_() for t in qkv((2, 3, 4), (2, 5, 4), (2, 5, 2), torch.float64, rng)]
    fixed = {}  # arguments gradcheck does not differentiate
    if mask_kind == "bool with a fully masked row":
        fixed["attn_mask"] = torch.rand(3, 5, generator=rng) < 0.6
        fixed["attn_mask"][0, 0], fixed["attn_mask"][1] = True, False
    elif mask_kind == "float -inf (Lq, Lk)":
        # An additive mask is differentiable too (a learned bias, e.g. ALiBi's slopes).
        inputs.append(make_mask(mask_kind, (3, 4), (5, 4), torch.float64, rng).requires_grad_())
    elif mask_kind == "causal":
        fixed["is_causal"] = True
    assert torch.autograd.gradcheck(
        lambda *args: scaled_dot_product_attention(*args, **fixed), tuple(inputs)
    )


@pytest.mark.parametrize(
    "case", ["padding mask (B, 1, 1, Lk)", "causal, Lq > Lk", "Lq != Lk, Dv != Dk"]
)
def test_sdpa_gradients_match_torch(case, rng):
    q_shape, k_shape, v_shape, mask_kind, kwargs = CASES[case]
    inputs = qkv(q_shape, k_shape, v_shape, torch.float64, rng)
    attn_mask = make_mask(mask_kind, q_shape, k_shape, torch.float64, rng)
    upstream = torch.randn(*q_shape[:-1], v_shape[-1], generator=rng, dtype=torch.float64)

    def gradients(attention):
        leaves = [t.clone().requires_grad_() for t in inputs]
        (attention(*leaves, attn_mask=attn_mask, **kwargs) * upstream).sum().backward()
        return [leaf.grad for leaf in leaves]

    ours, torchs = (
        gradients(scaled_dot_product_attention),
        gradients(F.scaled_dot_product_attention),
    )
    for name, our_grad, torch_grad in zip(("query", "key", "value"), ours, torchs, strict=True):
        torch.testing.assert_close(
            our_grad, torch_grad, atol=1e-12, rtol=1e-10, msg=lambda m, name=name: f"d/d{name}: {m}"
        )


# --- properties ------------------------------------------------------------------------


@settings(max_examples=30, **DETERMINISTIC)
@given(
    lq=st.integers(1, 6),
    lk=st.integers(1, 6),
    is_causal=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_permuting_queries_permutes_outputs(lq, lk, is_causal, seed):
    rng = torch.Generator().manual_seed(seed)
    query, key, value = qkv((2, lq, 4), (2, lk, 4), (2, lk, 3), torch.float64, rng)
    perm = torch.randperm(lq, generator=rng)
    # A causal mask ties query i to position i: permute its rows along with the queries.
    mask = causal_mask(lq, lk) if is_causal else None
    out = scaled_dot_product_attention(query, key, value, attn_mask=mask)
    out_perm = scaled_dot_product_attention(
        query[:, perm], key, value, attn_mask=None if mask is None else mask[perm]
    )
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-12, rtol=1e-10)


@settings(max_examples=30, **DETERMINISTIC)
@given(
    lq=st.integers(1, 6),
    lk=st.integers(1, 6),
    masked=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_permuting_keys_and_values_together_leaves_outputs_unchanged(lq, lk, masked, seed):
    rng = torch.Generator().manual_seed(seed)
    query, key, value = qkv((2, lq, 4), (2, lk, 4), (2, lk, 3), torch.float64, rng)
    perm = torch.randperm(lk, generator=rng)
    mask = (torch.rand(lq, lk, generator=rng) < 0.5) if masked else None
    out = scaled_dot_product_attention(query, key, value, attn_mask=mask)
    out_perm = scaled_dot_product_attention(
        query, key[:, perm], value[:, perm], attn_mask=None if mask is None else mask[:, perm]
    )
    torch.testing.assert_close(out_perm, out, atol=1e-12, rtol=1e-10)


@settings(max_examples=30, **DETERMINISTIC)
@given(
    lq=st.integers(1, 6),
    lk=st.integers(1, 8),
    p_keep=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_attention_weight_rows_sum_to_one_or_to_zero_when_fully_masked(lq, lk, p_keep, seed):
    rng = torch.Generator().manual_seed(seed)
    query, key, _ = qkv((3, lq, 4), (3, lk, 4), (1, 1), torch.float64, rng)
    mask = torch.rand(3, 1, lk, generator=rng) < p_keep  # per-batch key mask (B, 1, Lk)
    weights = attention_weights(query, key, attn_mask=mask)
    assert (weights >= 0).all()
    expected = mask.any(-1).to(torch.float64).expand(3, lq)
    torch.testing.assert_close(weights.sum(-1), expected)


# --- clear errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shapes, kwargs, error, message",
    [
        (((4, 8), (5, 7), (5, 3)), {}, ValueError, r"same feature size d_k.*d_k = 8.*d_k = 7"),
        (
            ((4, 8), (5, 8), (6, 3)),
            {},
            ValueError,
            r"same number of positions Lk.*\(5, 8\).*\(6, 3\)",
        ),
        (
            ((8,), (5, 8), (5, 3)),
            {},
            ValueError,
            r"query must have at least 2 dims.*query\[None, :\]",
        ),
        (
            ((2, 4, 8), (3, 5, 8), (3, 5, 3)),
            {},
            ValueError,
            r"leading \(batch, head\) dims.*\(2,\).*\(3,\)",
        ),
        (((4, 8), (5, 8), (5, 3)), {"dropout_p": 1.5}, ValueError, r"dropout_p.*\[0, 1\], got 1.5"),
        (
            ((2, 3, 4, 8), (2, 2, 5, 8), (2, 2, 5, 3)),
            {"enable_gqa": True},
            ValueError,
            r"Hq = 3 to be a multiple.*Hk = 2",
        ),
    ],
)
def test_sdpa_rejects_mismatched_shapes_with_a_clear_message(shapes, kwargs, error, message, rng):
    query, key, value = qkv(*shapes, torch.float32, rng)
    with pytest.raises(error, match=message):
        scaled_dot_product_attention(query, key, value, **kwargs)


def test_sdpa_rejects_attn_mask_together_with_is_causal_like_torch(rng):
    query, key, value = qkv((4, 8), (4, 8), (4, 8), torch.float32, rng)
    mask = causal_mask(4)
    with pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=True)
    with pytest.raises(ValueError, match=r"either attn_mask or is_causal=True, not both"):
        scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=True)


def test_sdpa_rejects_an_integer_mask_with_a_clear_message(rng):
    query, key, value = qkv((4, 8), (5, 8), (5, 3), torch.float32, rng)
    with pytest.raises(
        TypeError, match=r"boolean \(True = takes part\) or floating.*int64.*\.bool\(\)"
    ):
        scaled_dot_product_attention(
            query, key, value, attn_mask=torch.ones(4, 5, dtype=torch.long)
        )


def test_sdpa_rejects_a_mask_that_does_not_broadcast_to_the_scores(rng):
    query, key, value = qkv((2, 4, 8), (2, 5, 8), (2, 5, 3), torch.float32, rng)
    with pytest.raises(
        ValueError, match=r"attn_mask of shape \(5, 4\) does not broadcast.*\(2, 4, 5\)"
    ):
        scaled_dot_product_attention(
            query, key, value, attn_mask=torch.ones(5, 4, dtype=torch.bool)
        )


def test_sdpa_rejects_mixed_dtypes_and_integer_inputs_with_a_clear_message(rng):
    query, key, value = qkv((4, 8), (5, 8), (5, 3), torch.float32, rng)
    with pytest.raises(TypeError, match=r"share one dtype.*float32.*key is torch.float64"):
        scaled_dot_product_attention(query, key.double(), value)
    with pytest.raises(TypeError, match=r"value must be floating point.*int64"):
        scaled_dot_product_attention(query, key, value.long())
