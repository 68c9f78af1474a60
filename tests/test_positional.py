"""Sinusoidal encoding against the paper's formula; RoPE against complex rotation, its relative-position property
and norms."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import apply_rope, rope_angles, sinusoidal_encoding

DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)


def test_sinusoidal_encoding_is_the_papers_formula_entry_by_entry():
    length, d = 7, 6
    pe = sinusoidal_encoding(length, d, dtype=torch.float64)
    for p in range(length):
        for i in range(d // 2):
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / d)), abs=1e-15)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / d)), abs=1e-15)


def test_sinusoidal_encoding_of_a_shifted_position_is_a_fixed_linear_map_of_the_original():
    pe = sinusoidal_encoding(40, 8, dtype=torch.float64)
    k = 5
    # least squares M with PE[p + k] = PE[p] M on some positions predicts all the others exactly
    M = torch.linalg.lstsq(pe[:10], pe[k:10 + k]).solution
    torch.testing.assert_close(pe[:-k] @ M, pe[k:])


def test_odd_width_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="d_model must be even"):
        sinusoidal_encoding(4, 5)


def rope_by_complex_numbers(x: torch.Tensor) -> torch.Tensor:
    """RoPE as RoFormer's section 3.2 writes it: pair (x[2i], x[2i+1]) as a complex number times e^{i p theta_i}."""
    length, d = x.shape[-2:]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(length, d // 2, dtype=torch.float64), torch.arange(length)[:, None] * theta)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).reshape(x.shape).to(x.dtype)


@pytest.mark.parametrize("shape", [(5, 2), (3, 16), (2, 3, 7, 8)])
def test_rope_is_multiplication_of_interleaved_pairs_by_unit_complex_numbers(shape):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(apply_rope(x), rope_by_complex_numbers(x))


def test_rope_pairs_interleaved_features_not_the_two_halves():
    x = torch.zeros(2, 4, dtype=torch.float64)
    x[:, 0] = 1.0  # feature 0 pairs with feature 1 (interleaved), not with feature 2 (halves)
    out = apply_rope(x)
    assert out[1, 1].item() == pytest.approx(math.sin(1.0)) and out[1, 2].item() == 0.0


@settings(max_examples=25, **DETERMINISTIC)
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(0, 300), half_d=st.integers(1, 16))
def test_rope_scores_depend_only_on_the_offset(m, n, shift, half_d):
    g = torch.Generator().manual_seed(half_d)
    q, k = (torch.randn(2 * half_d, dtype=torch.float64, generator=g),
            torch.randn(2 * half_d, dtype=torch.float64, generator=g))

    def score(pos_q, pos_k):
        length = max(pos_q, pos_k) + 1
        rotated_q = apply_rope(q.expand(length, -1).clone())[pos_q]
        rotated_k = apply_rope(k.expand(length, -1).clone())[pos_k]
        return rotated_q @ rotated_k

    assert score(m, n).item() == pytest.approx(score(m + shift, n + shift).item(), abs=1e-9)


@settings(max_examples=25, **DETERMINISTIC)
@given(length=st.integers(1, 64), half_d=st.integers(1, 32))
def test_rope_preserves_the_norm_at_every_position(length, half_d):
    x = torch.randn(length, 2 * half_d, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    torch.testing.assert_close(apply_rope(x).norm(dim=-1), x.norm(dim=-1))


def test_rope_takes_explicit_positions_for_decoding_one_token_at_a_time():
    x = torch.randn(6, 8, dtype=torch.float64)
    whole = apply_rope(x)
    one_by_one = torch.cat([apply_rope(x[p:p + 1], positions=torch.tensor([p])) for p in range(6)])
    torch.testing.assert_close(one_by_one, whole)


def test_rope_angles_are_position_times_frequency():
    angles = rope_angles(torch.arange(3), dim=4, base=100.0)
    torch.testing.assert_close(angles, torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2]], dtype=torch.float64))
