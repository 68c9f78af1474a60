"""Chunked and FlashAttention (PyTorch) against F.scaled_dot_product_attention and autograd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.chunked import chunked_attention
from course_lib import flash
from course_lib.flash import (
    causal_tile_mask,
    flash_attention,
    flash_attention_backward,
    flash_attention_forward,
)

# Half precision: the fused kernel and ours both round to 11 (8) mantissa bits; errors ~1e-3 (1e-2).
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-8),
       torch.float16: dict(atol=2e-3, rtol=2e-3), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
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


def reference_scores(q, k, is_causal, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q.double() @ k.double().transpose(-2, -1) * scale
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return s


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", [(4, 3), (16, 16), (128, 256)], ids=str)
def test_flash_forward_matches_sdpa_and_saves_the_logsumexp(shape, is_causal, blocks):
    q, k, v = inputs(*shape)
    out, lse = flash_attention_forward(q, k, v, is_causal, block_q=blocks[0], block_k=blocks[1])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL[torch.float32])
    torch.testing.assert_close(lse, torch.logsumexp(reference_scores(q, k, is_causal), dim=-1).float(),
                               **TOL[torch.float32])
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:-1]


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_flash_gradients_match_autograd_through_sdpa(shape, is_causal):
    q, k, v = (t.requires_grad_() for t in inputs(*shape, seed=1))
    grad_out = torch.randn(*q.shape[:-1], v.shape[-1], generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.grad(flash_attention(q, k, v, is_causal, block_q=8, block_k=5), (q, k, v), grad_out)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), (q, k, v), grad_out)
    for name, a, b in zip("qkv", ours, theirs):
        torch.testing.assert_close(a, b, **TOL[torch.float32], msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_flash_attention_passes_gradcheck_in_float64(is_causal):
    q, k, v = (t.requires_grad_() for t in inputs((2,), 7, 9, 4, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, is_causal, None, 3, 4), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_half_precision_inputs_accumulate_in_float32_and_stay_within_the_fused_kernels_error(dtype, is_causal):
    q, k, v = (t.requires_grad_() for t in inputs((1, 2), 50, 50, 16, 16, dtype=dtype))
    out = flash_attention(q, k, v, is_causal, block_q=16, block_k=16)
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


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_a_query_tile_with_large_scores_keeps_the_running_max(is_causal):
    # Rows 16..31 (the second query tile) reach scores of about 2^200: 2^s overflows without the
    # running max, so that tile must take the online softmax while the others keep m = 0.
    q, k, v = inputs((2, 3), 70, 70, 16, 16)
    q[..., 16:32, :] *= 60
    out, lse = flash_attention_forward(q, k, v, is_causal, block_q=16, block_k=16)
    assert out.isfinite().all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL[torch.float32])
    torch.testing.assert_close(lse, torch.logsumexp(reference_scores(q, k, is_causal), dim=-1).float(),
                               **TOL[torch.float32])


def test_values_too_large_for_a_unified_max_keep_the_running_max():
    # Small scores but |V| up to about 3e36: sums of 2^s V over 40 keys would pass float32's 3.4e38,
    # sums of 2^(s - m) V (each factor at most 1) do not.
    q, k, v = inputs((1, 2), 40, 40, 8, 8)
    v = v * 1e36
    out, _ = flash_attention_forward(q, k, v, block_q=16, block_k=16)
    assert out.isfinite().all()
    torch.testing.assert_close(out / 1e36, F.scaled_dot_product_attention(q, k, v) / 1e36, **TOL[torch.float32])


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_unified_max_and_running_max_give_the_same_output_and_logsumexp(is_causal, monkeypatch):
    q, k, v = inputs((2, 2), 45, 45, 16, 16)
    unified = flash_attention_forward(q, k, v, is_causal, block_q=8, block_k=8)
    monkeypatch.setattr(flash, "UNIFIED_MAX_BOUND", -1.0)  # no tile qualifies: the online softmax everywhere
    running = flash_attention_forward(q, k, v, is_causal, block_q=8, block_k=8)
    for a, b in zip(unified, running):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_custom_scale_matches_sdpa():
    q, k, v = inputs((2,), 12, 12, 8, 8)
    out, _ = flash_attention_forward(q, k, v, scale=0.05, block_q=5, block_k=5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.05), **TOL[torch.float32])


def test_backward_uses_only_the_saved_logsumexp_not_the_probabilities():
    q, k, v = (t.requires_grad_() for t in inputs((1,), 20, 20, 8, 8))
    out = flash_attention(q, k, v, block_q=4, block_k=4)
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
    torch.testing.assert_close(chunked_attention(q, k, v, is_causal, chunk_size=chunk),
                               F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL[torch.float32])


def test_bad_inputs_get_clear_errors():
    q, k, v = inputs((1,), 4, 4, 8, 8)
    with pytest.raises(ValueError, match="same leading dims"):
        flash_attention(q, k[..., :4], v)
    with pytest.raises(TypeError, match="share a dtype"):
        flash_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="block sizes"):
        flash_attention(q, k, v, block_q=0)
    with pytest.raises(TypeError, match="floating point"):
        flash_attention(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_attention(q, k, v, chunk_size=0)
