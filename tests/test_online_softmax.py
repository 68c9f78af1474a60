"""The online softmax and the merge of softmax states, against torch.softmax and torch.logsumexp."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.online_softmax import merge_softmax_states, online_softmax


def state(scores: torch.Tensor, values: torch.Tensor):
    m = scores.amax(dim=-1)
    p = torch.exp(scores - m[..., None])
    return m, p.sum(dim=-1), p @ values


@settings(deadline=None, max_examples=40)
@given(n=st.integers(2, 30), split=st.integers(1, 29), scale=st.sampled_from([1.0, 30.0, 1e3]),
       seed=st.integers(0, 2**16))
def test_merging_two_blocks_gives_softmax_attention_and_logsumexp_of_the_whole_row(n, split, scale, seed):
    split = min(split, n - 1)
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(3, n, generator=g, dtype=torch.float64) * scale
    v = torch.randn(n, 4, generator=g, dtype=torch.float64)
    m, l, acc = merge_softmax_states(*state(s[:, :split], v[:split]), *state(s[:, split:], v[split:]))
    torch.testing.assert_close(acc / l[:, None], torch.softmax(s, dim=-1) @ v)
    torch.testing.assert_close(m + torch.log(l), torch.logsumexp(s, dim=-1))


def test_merge_with_an_empty_block_is_the_identity_and_two_empty_blocks_stay_empty():
    s, v = torch.randn(2, 5), torch.randn(5, 3)
    empty = (torch.full((2,), float("-inf")), torch.zeros(2), torch.zeros(2, 3))
    for merged in (merge_softmax_states(*empty, *state(s, v)), merge_softmax_states(*state(s, v), *empty)):
        for a, b in zip(merged, state(s, v)):
            torch.testing.assert_close(a, b)
    m, l, acc = merge_softmax_states(*empty, *empty)
    assert torch.isneginf(m).all() and (l == 0).all() and (acc == 0).all()


def test_merge_is_associative_over_three_blocks():
    s, v = torch.randn(4, 9, dtype=torch.float64) * 5, torch.randn(9, 2, dtype=torch.float64)
    a, b, c = state(s[:, :3], v[:3]), state(s[:, 3:6], v[3:6]), state(s[:, 6:], v[6:])
    left = merge_softmax_states(*merge_softmax_states(*a, *b), *c)
    right = merge_softmax_states(*a, *merge_softmax_states(*b, *c))
    for x, y in zip(left, right):
        torch.testing.assert_close(x, y)


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 50), block=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_online_softmax_equals_torch_softmax_for_any_block_size(n, block, seed):
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(seed)) * 20
    torch.testing.assert_close(online_softmax(x, block_size=block), torch.softmax(x, dim=-1), atol=1e-6, rtol=1e-5)


def test_online_softmax_rejects_integers_and_empty_blocks():
    import pytest

    with pytest.raises(TypeError, match="floating-point"):
        online_softmax(torch.arange(3))
    with pytest.raises(ValueError, match="block_size"):
        online_softmax(torch.randn(3), block_size=0)


def test_online_softmax_takes_its_block_size_by_keyword_only():
    import pytest

    with pytest.raises(TypeError, match="positional argument"):
        online_softmax(torch.randn(3), 2)
