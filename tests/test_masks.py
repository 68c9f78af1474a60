"""causal_mask and padding_mask: polarity (True = takes part) and alignment as in torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import causal_mask, padding_mask

# Same examples on every run and machine: no random seed, no example database.
DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)


def keys_torch_lets_each_query_see(n_q, n_k, **sdpa_kwargs):
    """Boolean (n_q, n_k): where F.scaled_dot_product_attention gives a key nonzero weight."""
    query, key = torch.zeros(n_q, 2), torch.zeros(n_k, 2)  # equal scores everywhere
    weights = F.scaled_dot_product_attention(query, key, torch.eye(n_k), **sdpa_kwargs)
    return weights > 0


# --- causal_mask -----------------------------------------------------------------------


@pytest.mark.parametrize("n_q, n_k", [(5, 5), (3, 7), (7, 3), (1, 1), (1, 4), (4, 1)])
def test_causal_mask_is_aligned_top_left_like_torch_is_causal(n_q, n_k):
    expected = keys_torch_lets_each_query_see(n_q, n_k, is_causal=True)
    assert torch.equal(causal_mask(n_q, n_k), expected)


def test_causal_mask_lets_query_i_see_keys_up_to_i():
    mask = causal_mask(4)
    assert mask.dtype == torch.bool and mask.shape == (4, 4)
    for i in range(4):
        assert mask[i].tolist() == [j <= i for j in range(4)]


def test_causal_mask_n_k_defaults_to_n_q():
    assert torch.equal(causal_mask(3), causal_mask(3, 3))


def test_causal_mask_accepts_numpy_and_tensor_lengths():
    assert torch.equal(causal_mask(np.int64(3), torch.tensor(4)), causal_mask(3, 4))


def test_causal_mask_is_made_on_the_requested_device():
    assert causal_mask(2, device="cpu").device == torch.device("cpu")


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((-1,), ValueError, r"n_q must be >= 0"),
        ((3, -2), ValueError, r"n_k must be >= 0"),
        ((2.0,), TypeError, r"n_q must be an int"),
        ((True,), TypeError, r"n_q must be an int"),
    ],
)
def test_causal_mask_rejects_bad_lengths_with_a_clear_message(args, error, message):
    with pytest.raises(error, match=message):
        causal_mask(*args)


# --- padding_mask ----------------------------------------------------------------------


def test_padding_mask_is_true_on_valid_positions_and_false_on_padding():
    mask = padding_mask(torch.tensor([0, 2, 4]), max_len=4)
    expected = torch.tensor(
        [[False, False, False, False], [True, True, False, False], [True, True, True, True]]
    )
    assert torch.equal(mask, expected)


def test_padding_mask_broadcast_over_heads_and_queries_matches_torch(rng):
    lengths = torch.tensor([3, 5])
    mask = padding_mask(lengths, max_len=5)[:, None, None, :]  # (B, 1, 1, Lk)
    query = torch.randn(2, 4, 6, 8, generator=rng)
    key = torch.randn(2, 4, 5, 8, generator=rng)
    # Values = identity: torch's output is its weight matrix (B, H, Lq, Lk).
    weights = F.scaled_dot_product_attention(query, key, torch.eye(5), attn_mask=mask)
    assert (weights[0, ..., 3:] == 0).all(), "padding keys must get zero weight"
    assert (weights[0, ..., :3] > 0).all() and (weights[1] > 0).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_padding_mask_accepts_any_integer_dtype(dtype):
    mask = padding_mask(torch.tensor([1, 2], dtype=dtype), max_len=3)
    assert torch.equal(mask, torch.tensor([[True, False, False], [True, True, False]]))


@settings(max_examples=40, **DETERMINISTIC)
@given(lengths=st.lists(st.integers(0, 9), min_size=1, max_size=6), extra=st.integers(0, 3))
def test_padding_mask_row_b_is_a_prefix_of_lengths_b_trues(lengths, extra):
    max_len = max(lengths) + extra
    mask = padding_mask(torch.tensor(lengths), max_len)
    assert mask.shape == (len(lengths), max_len)
    assert mask.sum(-1).tolist() == lengths
    # A prefix: once False, False to the end of the row.
    assert torch.equal(mask, mask.cummin(dim=-1).values)


@pytest.mark.parametrize(
    "lengths, max_len, error, message",
    [
        (torch.tensor([2, -1]), 4, ValueError, r"lengths must be >= 0, got \[2, -1\]"),
        (torch.tensor([2, 5]), 4, ValueError, r"<= max_len = 4, got \[2, 5\]"),
        (torch.tensor([[1, 2]]), 4, ValueError, r"1-D.*\(B,\).*\(1, 2\)"),
        (torch.tensor([1.0, 2.0]), 4, TypeError, r"integers.*float32.*lengths\.long\(\)"),
        (torch.tensor([True]), 4, TypeError, r"integers.*bool"),
        ([1, 2], 4, TypeError, r"integer tensor.*got list.*torch\.tensor"),
        (torch.tensor([1]), -1, ValueError, r"max_len must be >= 0"),
    ],
)
def test_padding_mask_rejects_bad_input_with_a_clear_message(lengths, max_len, error, message):
    with pytest.raises(error, match=message):
        padding_mask(lengths, max_len)
