"""softmax and masked_softmax against torch.softmax and F.scaled_dot_product_attention."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import masked_softmax, softmax

# Same examples on every run and machine: no random seed, no example database.
DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)


def random_mask(shape, rng, p_keep=0.6):
    return torch.rand(shape, generator=rng) < p_keep


def softmax_reference(scores, mask, dim=-1):
    """torch.softmax over the kept positions; rows with nothing kept -> 0 (torch gives NaN)."""
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)
    return probs.nan_to_num(nan=0.0)


# --- softmax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, dim", [((5,), -1), ((3, 7), -1), ((3, 7), 0), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1)]
)
def test_softmax_matches_torch_softmax(shape, dim, dtype, tol, rng):
    x = torch.randn(shape, generator=rng, dtype=dtype) * 3
    torch.testing.assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim), **tol)


def test_softmax_of_non_contiguous_views_matches_torch(dtype, tol, rng):
    base = torch.randn(6, 10, generator=rng, dtype=dtype)
    for x in (base.T, base[:, ::3], base[1::2].T):
        assert not x.is_contiguous()
        torch.testing.assert_close(softmax(x), torch.softmax(x, dim=-1), **tol)


@pytest.mark.parametrize("shift", [0.0, 100.0, -100.0])
def test_softmax_does_not_overflow_on_logits_of_magnitude_1e4(shift, dtype, tol, rng):
    x = torch.randn(4, 9, generator=rng, dtype=dtype) * 1e4 + shift
    probs = softmax(x)
    assert torch.isfinite(probs).all(), "exp overflowed: subtract the row max before exp"
    torch.testing.assert_close(probs, torch.softmax(x, dim=-1), **tol)


def test_softmax_of_length_one_is_one(dtype):
    x = torch.tensor([[-3.0], [1e4]], dtype=dtype)
    assert torch.equal(softmax(x), torch.ones_like(x))


def test_softmax_of_all_minus_inf_row_is_nan_like_torch():
    x = torch.tensor([[0.0, 1.0, 2.0], [float("-inf")] * 3])
    probs = softmax(x)
    assert torch.isnan(probs[1]).all() and torch.isnan(torch.softmax(x, -1)[1]).all()
    torch.testing.assert_close(probs[0], torch.softmax(x[0], -1))


def test_softmax_gradient_passes_gradcheck(rng):
    x = torch.randn(3, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: softmax(t, dim=-1), (x,))
    assert torch.autograd.gradcheck(lambda t: softmax(t, dim=0), (x,))


@settings(max_examples=40, **DETERMINISTIC)
@given(
    rows=st.integers(1, 4),
    n=st.integers(1, 12),
    magnitude=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_softmax_rows_are_probabilities_that_sum_to_one(rows, n, magnitude, seed):
    rng = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=rng, dtype=torch.float64) * magnitude
    probs = softmax(x)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(rows, dtype=torch.float64))


@settings(max_examples=40, **DETERMINISTIC)
@given(
    n=st.integers(1, 12),
    constant=st.floats(-1e3, 1e3, allow_nan=False),
    seed=st.integers(0, 2**31 - 1),
)
def test_softmax_is_invariant_to_adding_a_constant(n, constant, seed):
    rng = torch.Generator().manual_seed(seed)
    x = torch.randn(3, n, generator=rng, dtype=torch.float64) * 5
    # Rounding x + constant costs up to |constant| * eps ~ 1e-13 in the logits.
    torch.testing.assert_close(softmax(x + constant), softmax(x), atol=1e-12, rtol=1e-10)


def test_softmax_rejects_an_integer_tensor_with_a_clear_message():
    with pytest.raises(TypeError, match=r"floating-point.*int64.*\.float\(\)"):
        softmax(torch.tensor([1, 2, 3]))


# --- masked_softmax --------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores_shape, mask_shape",
    [
        ((4, 6), (4, 6)),
        ((2, 3, 4, 6), (4, 6)),  # one (Lq, Lk) mask shared by every batch and head
        ((2, 3, 4, 6), (2, 1, 1, 6)),  # padding mask (B, 1, 1, Lk)
        ((2, 3, 4, 6), (2, 3, 4, 6)),
        ((5, 1), (5, 1)),  # length 1
    ],
)
def test_masked_softmax_matches_torch_softmax_over_kept_positions(
    scores_shape, mask_shape, dtype, tol, rng
):
    scores = torch.randn(scores_shape, generator=rng, dtype=dtype)
    mask = random_mask(mask_shape, rng)
    mask[..., 0] = True  # no fully masked rows here: those have their own tests
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(masked_softmax(scores, mask), expected, **tol)


def test_masked_softmax_matches_torch_sdpa_weights_including_fully_masked_rows(dtype, tol, rng):
    query = torch.randn(2, 3, 5, 4, generator=rng, dtype=dtype)
    key = torch.randn(2, 3, 7, 4, generator=rng, dtype=dtype)
    mask = random_mask((5, 7), rng)
    mask[1] = False  # query 1 may see no key at all
    scores = query @ key.transpose(-2, -1) / 2.0  # d_k = 4: scale 1/sqrt(4)
    # Values = identity, so torch's attention output *is* its weight matrix.
    identity = torch.eye(7, dtype=dtype)
    expected = F.scaled_dot_product_attention(query, key, identity, attn_mask=mask)
    torch.testing.assert_close(masked_softmax(scores, mask), expected, **tol)


def test_masked_positions_get_exactly_zero_probability(dtype, rng):
    scores = torch.randn(3, 4, 8, generator=rng, dtype=dtype) * 10
    mask = random_mask((3, 4, 8), rng)
    probs = masked_softmax(scores, mask)
    assert (probs[~mask] == 0).all()
    assert (probs[mask] > 0).all()


def test_fully_masked_row_gives_zeros_like_torch(dtype):
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=dtype)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    probs = masked_softmax(scores, mask)
    assert torch.equal(probs[1], torch.zeros(3, dtype=dtype))
    torch.testing.assert_close(probs[0].sum(), torch.tensor(1.0, dtype=dtype))


def test_row_of_minus_inf_scores_gives_zeros_even_without_a_mask(dtype):
    scores = torch.tensor([[0.0, float("-inf")], [float("-inf"), float("-inf")]], dtype=dtype)
    probs = masked_softmax(scores)
    assert torch.equal(probs, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=dtype))


def test_masked_softmax_without_mask_equals_softmax(dtype, rng):
    scores = torch.randn(2, 5, 6, generator=rng, dtype=dtype)
    assert torch.equal(masked_softmax(scores, None), softmax(scores))


def test_masked_softmax_ignores_inf_and_nan_at_masked_positions(dtype):
    scores = torch.tensor([[0.0, float("inf"), float("nan"), 0.0]], dtype=dtype)
    mask = torch.tensor([[True, False, False, True]])
    probs = masked_softmax(scores, mask)
    assert torch.equal(probs, torch.tensor([[0.5, 0.0, 0.0, 0.5]], dtype=dtype))


def test_masked_softmax_does_not_overflow_on_logits_of_magnitude_1e4(dtype, tol, rng):
    scores = torch.randn(4, 9, generator=rng, dtype=dtype) * 1e4
    mask = random_mask((4, 9), rng)
    mask[:, 3] = True
    probs = masked_softmax(scores, mask)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs, softmax_reference(scores, mask), **tol)


def test_masked_softmax_along_another_dim_matches_the_transposed_problem(dtype, tol, rng):
    scores = torch.randn(6, 4, generator=rng, dtype=dtype)
    mask = random_mask((6, 4), rng)
    expected = masked_softmax(scores.T, mask.T).T
    torch.testing.assert_close(masked_softmax(scores, mask, dim=0), expected, **tol)


def test_masked_softmax_of_non_contiguous_views_matches_torch(dtype, tol, rng):
    scores = torch.randn(8, 6, generator=rng, dtype=dtype).T[:, ::2]  # (6, 4), strided
    mask = random_mask((4, 6), rng).T  # (6, 4), transposed
    assert not scores.is_contiguous() and not mask.is_contiguous()
    torch.testing.assert_close(masked_softmax(scores, mask), softmax_reference(scores, mask), **tol)


def test_masked_softmax_gradient_passes_gradcheck_with_a_fully_masked_row(rng):
    scores = torch.randn(2, 4, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    mask = random_mask((4, 5), rng)
    mask[0, 0] = True
    mask[2] = False  # a fully masked row in every batch
    assert torch.autograd.gradcheck(lambda s: masked_softmax(s, mask), (scores,))


def test_fully_masked_row_has_zero_gradient_not_nan(rng):
    scores = torch.randn(3, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    weights = torch.randn(3, 4, generator=rng, dtype=torch.float64)
    (masked_softmax(scores, mask) * weights).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[1], torch.zeros(4, dtype=torch.float64))


@settings(max_examples=50, **DETERMINISTIC)
@given(
    lq=st.integers(1, 6),
    lk=st.integers(1, 8),
    p_keep=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_masked_softmax_rows_sum_to_one_or_to_zero_when_fully_masked(lq, lk, p_keep, seed):
    rng = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, lq, lk, generator=rng, dtype=torch.float64) * 10
    mask = random_mask((lq, lk), rng, p_keep)
    row_sums = masked_softmax(scores, mask).sum(-1)  # (2, Lq)
    expected = mask.any(-1).to(torch.float64).expand(2, lq)
    torch.testing.assert_close(row_sums, expected)


def test_masked_softmax_rejects_a_non_boolean_mask_with_a_clear_message():
    scores = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"boolean.*True = takes part.*mask\.bool\(\)"):
        masked_softmax(scores, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"boolean.*float32"):
        masked_softmax(scores, torch.zeros(2, 3))


@pytest.mark.parametrize("mask_shape", [(3, 2), (4, 2, 3), (2, 4)])
def test_masked_softmax_rejects_a_mask_that_does_not_broadcast_to_the_scores(mask_shape):
    scores = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"mask of shape .* does not broadcast to .*\(2, 3\)"):
        masked_softmax(scores, torch.ones(mask_shape, dtype=torch.bool))
