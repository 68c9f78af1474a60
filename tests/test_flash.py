"""Chunked and FlashAttention (PyTorch) against F.scaled_dot_product_attention and autograd.

The readable reference (course_lib.flash) and its CPU-tuned variant (course_lib.flash_cpu) must give
the same answers, so the tests of what both promise run on both; test_flash_cpu.py holds what only
the tuned one has (the unified maximum, the tiles chosen for the CPU)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import TOLERANCES

from course_lib.chunked import chunked_attention
from course_lib.flash import (
    causal_tile_mask,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)
from course_lib.flash_cpu import flash_attention_cpu, flash_attention_cpu_backward, flash_attention_cpu_forward
from course_lib.triton_attention import triton_flash_attention, triton_flash_forward

# Half precision: the fused kernel and ours both round to 11 (8) mantissa bits; errors ~1e-3 (1e-2).
TOL = TOLERANCES  # the course's one table (course_kit.checks), by dtype
SHAPES = [  # (batch dims, Lq, Lk, D, Dv), blocks (block_q, block_k)
    ((2, 3), 37, 37, 16, 16),
    ((1,), 10, 29, 8, 5),
    ((2,), 29, 10, 8, 8),
    ((), 1, 7, 4, 4),
    ((1, 2), 64, 64, 32, 32),
]


def inputs(batch, lq, lk, d, dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, lq, d, generator=g).to(dtype), torch.randn(*batch, lk, d, generator=g).to(dtype),
            torch.randn(*batch, lk, dv, generator=g).to(dtype))


# (forward, backward, differentiable operator) of each implementation
IMPLEMENTATIONS = {
    "reference": (flash_attention_forward, flash_attention_backward, flash_attention),
    "cpu": (flash_attention_cpu_forward, flash_attention_cpu_backward, flash_attention_cpu),
}
implementations = pytest.mark.parametrize("impl", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())


def reference_scores(q, k, is_causal, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q.double() @ k.double().transpose(-2, -1) * scale
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return s


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", [(4, 3), (16, 16), (128, 256)], ids=str)
@implementations
def test_flash_forward_matches_sdpa_and_saves_the_logsumexp(impl, shape, is_causal, blocks):
    q, k, v = inputs(*shape)
    out, lse = impl[0](q, k, v, is_causal=is_causal, block_q=blocks[0], block_k=blocks[1])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL[torch.float32])
    torch.testing.assert_close(lse, torch.logsumexp(reference_scores(q, k, is_causal), dim=-1).float(),
                               **TOL[torch.float32])
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:-1]


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@implementations
def test_flash_gradients_match_autograd_through_sdpa(impl, shape, is_causal):
    q, k, v = (t.requires_grad_() for t in inputs(*shape, seed=1))
    grad_out = torch.randn(*q.shape[:-1], v.shape[-1], generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.grad(impl[2](q, k, v, is_causal=is_causal, block_q=8, block_k=5), (q, k, v), grad_out)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), (q, k, v), grad_out)
    for name, a, b in zip("qkv", ours, theirs):
        torch.testing.assert_close(a, b, **TOL[torch.float32], msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@implementations
def test_flash_attention_passes_gradcheck_in_float64(impl, is_causal):
    q, k, v = (t.requires_grad_() for t in inputs((2,), 7, 9, 4, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: impl[2](q, k, v, is_causal=is_causal, block_q=3, block_k=4),
                                    (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@implementations
def test_half_precision_inputs_accumulate_in_float32_and_stay_within_the_fused_kernels_error(impl, dtype, is_causal):
    q, k, v = (t.requires_grad_() for t in inputs((1, 2), 50, 50, 16, 16, dtype=dtype))
    out = impl[2](q, k, v, is_causal=is_causal, block_q=16, block_k=16)
    assert impl[0](q, k, v, is_causal=is_causal, block_q=16, block_k=16)[1].dtype == torch.float32  # the lse
    assert out.dtype == dtype
    exact = torch.softmax(reference_scores(q, k, is_causal), dim=-1) @ v.double()
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    # flash-attn's rule: at most twice the error of a plain implementation in the same precision (plus rounding)
    ours_err, their_err = (out.double() - exact).abs().max(), (theirs.double() - exact).abs().max()
    assert ours_err <= 2 * their_err + TOL[dtype]["atol"], (ours_err, their_err)
    grad_out = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad_out)
    ref = torch.autograd.grad(F.scaled_dot_product_attention(*(t.float() for t in (q, k, v)), is_causal=is_causal),
                              (q, k, v), grad_out.float())
    for a, b in zip(ours, ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), atol=10 * TOL[dtype]["atol"], rtol=10 * TOL[dtype]["rtol"])


@implementations
def test_custom_scale_matches_sdpa(impl):
    q, k, v = inputs((2,), 12, 12, 8, 8)
    out, _ = impl[0](q, k, v, scale=0.05, block_q=5, block_k=5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.05), **TOL[torch.float32])


@implementations
def test_backward_uses_only_the_saved_logsumexp_not_the_probabilities(impl):
    q, k, v = (t.requires_grad_() for t in inputs((1,), 20, 20, 8, 8))
    out = impl[2](q, k, v, block_q=4, block_k=4)
    saved = [t for t in out.grad_fn.saved_tensors]
    assert [tuple(t.shape) for t in saved] == [(1, 20, 8)] * 4 + [(1, 20)]  # q, k, v, out, lse


@pytest.mark.parametrize("n_q,n_k,block_q,block_k", [(16, 16, 4, 4), (5, 8, 4, 2), (3, 10, 2, 3), (10, 3, 4, 4),
                                                     (37, 37, 8, 5), (1, 1, 1, 1)])
def test_causal_tile_mask_is_true_exactly_for_tiles_holding_a_visible_pair(n_q, n_k, block_q, block_k):
    visible = torch.ones(n_q, n_k, dtype=torch.bool).tril()  # key c <= query r
    tiles = causal_tile_mask(n_q, n_k, block_q, block_k)
    for i in range(tiles.shape[0]):
        for j in range(tiles.shape[1]):
            tile = visible[i * block_q:(i + 1) * block_q, j * block_k:(j + 1) * block_k]
            assert tiles[i, j] == tile.any(), (i, j)


def test_causal_skips_tiles_so_it_does_about_half_the_work():
    assert causal_tile_mask(1024, 1024, 64, 64).float().mean() == pytest.approx(0.5, abs=0.04)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_attention_matches_sdpa(is_causal, chunk):
    q, k, v = inputs((2, 2), 17, 13, 8, 6)
    torch.testing.assert_close(chunked_attention(q, k, v, is_causal=is_causal, chunk_size=chunk),
                               F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL[torch.float32])


@implementations
def test_bad_inputs_get_clear_errors(impl):
    q, k, v = inputs((1,), 4, 4, 8, 8)
    with pytest.raises(ValueError, match="same leading dims"):
        impl[2](q, k[..., :4], v)
    with pytest.raises(TypeError, match="share a dtype"):
        impl[2](q, k.double(), v)
    with pytest.raises(ValueError, match="block sizes"):
        impl[2](q, k, v, block_q=0)
    with pytest.raises(TypeError, match="floating point"):
        impl[2](q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_attention(q, k, v, chunk_size=0)


TILED = [flash_attention, flash_attention_forward, flash_attention_cpu, flash_attention_cpu_forward,
         chunked_attention, triton_flash_attention, triton_flash_forward]


@pytest.mark.parametrize("fn", TILED, ids=lambda fn: fn.__name__)
@pytest.mark.parametrize("mask", [torch.ones(4, 4, dtype=torch.bool).tril(), torch.ones(1, dtype=torch.bool)],
                         ids=["4x4 mask", "one-element mask"])
def test_a_mask_where_none_is_supported_is_refused_with_what_to_use_instead(fn, mask):
    # Before: a 4x4 mask failed on 'Boolean value of Tensor ... is ambiguous', a one-element mask was
    # silently read as is_causal. Raised before any kernel runs, so Triton need not be installed.
    q, k, v = inputs((1,), 4, 4, 8, 8)
    with pytest.raises(TypeError, match=rf"{fn.__name__} takes no attn_mask \(got a tensor of shape "
                                        rf"{re.escape(str(tuple(mask.shape)))}\).*is_causal=True"):
        fn(q, k, v, mask)
    with pytest.raises(TypeError, match="takes no attn_mask"):
        fn(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("fn", TILED, ids=lambda fn: fn.__name__)
def test_is_causal_passed_by_position_is_refused_not_taken_for_a_mask(fn):
    q, k, v = inputs((1,), 4, 4, 8, 8)
    with pytest.raises(TypeError, match="pass is_causal=True by keyword"):
        fn(q, k, v, True)


@pytest.mark.parametrize("fn", [flash_attention, flash_attention_cpu, chunked_attention, triton_flash_attention],
                         ids=lambda fn: fn.__name__)
def test_options_are_keyword_only(fn):
    q, k, v = inputs((1,), 4, 4, 8, 8)
    with pytest.raises(TypeError, match="positional argument"):
        fn(q, k, v, None, False)
