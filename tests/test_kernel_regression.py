"""Nadaraya–Watson kernel regression: the Gaussian-kernel formula, and attention in disguise."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import nadaraya_watson, nadaraya_watson_weights

# Same examples on every run and machine: no random seed, no example database.
DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)


def gaussian_kernel_regression(queries, keys, values, h):
    """Textbook formula for scalar inputs: sum_j K(q - x_j) y_j / sum_j K(q - x_j)."""
    kernel = torch.exp(-((queries[:, None] - keys[None, :]) ** 2) / (2 * h**2))  # (Lq, Lk)
    weights = kernel / kernel.sum(-1, keepdim=True)
    return weights, weights @ values


@pytest.mark.parametrize("bandwidth", [0.3, 1.0, 2.5])
def test_scalar_inputs_match_the_gaussian_kernel_formula(bandwidth, dtype, tol, rng):
    x_train = torch.rand(20, generator=rng, dtype=dtype) * 5
    y_train = torch.sin(x_train) + 0.1 * torch.randn(20, generator=rng, dtype=dtype)
    x_val = torch.linspace(0, 5, 7, dtype=dtype)
    expected_weights, expected = gaussian_kernel_regression(x_val, x_train, y_train, bandwidth)
    weights = nadaraya_watson_weights(x_val, x_train, bandwidth)
    assert weights.shape == (7, 20)
    torch.testing.assert_close(weights, expected_weights, **tol)
    prediction = nadaraya_watson(x_val, x_train, y_train, bandwidth)
    assert prediction.shape == (7,)
    torch.testing.assert_close(prediction, expected, **tol)


def test_vector_inputs_equal_dot_product_attention_with_a_key_norm_bias(dtype, tol, rng):
    # -||q - k||^2 / 2h^2 = q.k / h^2 - ||k||^2 / 2h^2 - ||q||^2 / 2h^2; the last term is
    # the same for every key, so softmax drops it: scale 1/h^2 plus an additive bias per key.
    h = 1.5
    queries = torch.randn(2, 5, 3, generator=rng, dtype=dtype)
    keys = torch.randn(2, 8, 3, generator=rng, dtype=dtype)
    values = torch.randn(2, 8, 4, generator=rng, dtype=dtype)
    key_bias = -(keys**2).sum(-1)[:, None, :] / (2 * h**2)  # (B, 1, Lk)
    expected = F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=key_bias, scale=1 / h**2
    )
    torch.testing.assert_close(nadaraya_watson(queries, keys, values, h), expected, **tol)


@pytest.mark.parametrize(
    "q_shape, k_shape, v_shape, out_shape",
    [
        ((4,), (6,), (6,), (4,)),  # scalar inputs and targets
        ((4,), (6,), (6, 2), (4, 2)),  # scalar inputs, vector targets
        ((4, 3), (6, 3), (6,), (4,)),  # vector inputs, scalar targets
        ((2, 4, 3), (2, 6, 3), (2, 6, 5), (2, 4, 5)),  # batched
        ((2, 4, 1), (2, 6, 1), (2, 6, 1), (2, 4, 1)),  # a batch of 1-D problems
        ((1,), (1,), (1,), (1,)),  # length 1
    ],
)
def test_prediction_shapes(q_shape, k_shape, v_shape, out_shape, rng):
    queries, keys, values = (torch.randn(s, generator=rng) for s in (q_shape, k_shape, v_shape))
    assert nadaraya_watson(queries, keys, values).shape == out_shape


def test_small_bandwidth_predicts_the_value_of_the_nearest_key():
    keys = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    values = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64)
    queries = torch.tensor([0.1, 1.9, 2.8], dtype=torch.float64)
    prediction = nadaraya_watson(queries, keys, values, bandwidth=0.05)
    torch.testing.assert_close(prediction, torch.tensor([10.0, 30.0, 40.0], dtype=torch.float64))


def test_large_bandwidth_predicts_the_mean_of_the_values(rng):
    keys = torch.rand(10, generator=rng, dtype=torch.float64)
    values = torch.randn(10, generator=rng, dtype=torch.float64)
    queries = torch.tensor([0.0, 0.5], dtype=torch.float64)
    prediction = nadaraya_watson(queries, keys, values, bandwidth=1e4)
    torch.testing.assert_close(prediction, values.mean().expand(2), atol=1e-8, rtol=0)


def test_non_contiguous_inputs_match_contiguous_copies(dtype, tol, rng):
    queries = torch.randn(3, 6, generator=rng, dtype=dtype).T  # (6, 3)
    keys = torch.randn(10, 3, generator=rng, dtype=dtype)[::2]  # (5, 3)
    values = torch.randn(2, 5, generator=rng, dtype=dtype).T  # (5, 2)
    expected = nadaraya_watson(queries.contiguous(), keys.contiguous(), values.contiguous())
    torch.testing.assert_close(nadaraya_watson(queries, keys, values), expected, **tol)


def test_gradient_passes_gradcheck_for_inputs_targets_and_bandwidth(rng):
    def randn(*shape):
        return torch.randn(*shape, generator=rng, dtype=torch.float64, requires_grad=True)

    bandwidth = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)  # learnable, as in d2l
    inputs = (randn(2, 4, 3), randn(2, 5, 3), randn(2, 5, 2), bandwidth)
    assert torch.autograd.gradcheck(nadaraya_watson, inputs)


@settings(max_examples=30, **DETERMINISTIC)
@given(
    lq=st.integers(1, 6),
    lk=st.integers(1, 8),
    bandwidth=st.floats(0.05, 20.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_weights_are_probabilities_over_keys(lq, lk, bandwidth, seed):
    rng = torch.Generator().manual_seed(seed)
    queries = torch.randn(lq, generator=rng, dtype=torch.float64) * 3
    keys = torch.randn(lk, generator=rng, dtype=torch.float64) * 3
    weights = nadaraya_watson_weights(queries, keys, bandwidth)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(lq, dtype=torch.float64))


@pytest.mark.parametrize(
    "args, error, message",
    [
        (((4, 3), (6, 2), (6,)), ValueError, r"same number of features D.*D = 3.*D = 2"),
        (((4,), (6,), (5,)), ValueError, r"one value per key.*Lk = 6.*Lk = 5"),
        (((4, 2), (6, 2), (2, 6)), ValueError, r"Lk = 6.*Lk = 2.*\(\.\.\., Lk, Dv\)"),
        (((), (6,), (6,)), ValueError, r"queries must be \(L,\) or \(\.\.\., L, D\)"),
    ],
)
def test_mismatched_shapes_raise_a_clear_message(args, error, message, rng):
    queries, keys, values = (torch.randn(s, generator=rng) for s in args)
    with pytest.raises(error, match=message):
        nadaraya_watson(queries, keys, values)


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, torch.tensor(-0.5)])
def test_non_positive_bandwidth_raises_a_clear_message(bandwidth):
    with pytest.raises(ValueError, match=r"bandwidth must be > 0"):
        nadaraya_watson_weights(torch.zeros(3), torch.zeros(4), bandwidth)


def test_integer_inputs_raise_a_clear_message():
    with pytest.raises(TypeError, match=r"keys must be floating point.*int64.*keys\.float\(\)"):
        nadaraya_watson(torch.zeros(3), torch.arange(4), torch.zeros(4))
    with pytest.raises(TypeError, match=r"values must be a floating-point tensor.*int64"):
        nadaraya_watson(torch.zeros(3), torch.zeros(4), torch.arange(4))
