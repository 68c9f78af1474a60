"""FlashAttention-2 tuned for a CPU: the algorithm of ``course_lib.flash``, faster, and measured.

Lesson 4: GPU-efficient attention. The same forward and backward as :mod:`course_lib.flash`
(Dao, 2023, Algorithms 1 and 2: tiles, the online softmax, the log-sum-exp, recomputation), with
what makes them fast on a CPU, where PyTorch's batched matrix products play the part of a GPU
kernel's inner loop. Each change was kept because the benchmark measured it
(``benchmarks/lesson4_targets.py``, README, Lesson 4):

* ``exp2`` with log2(e) folded into the scale, as FlashAttention's kernels do (``LOG2_E``), where
  ATen vectorises it (it is slower than ``exp`` on a CPU where it does not);
* a unified maximum (FlashDecoding++, Hong et al., 2023): query tiles whose scores are provably
  small keep ``m = 0`` and skip two of the four passes over each scores tile
  (``UNIFIED_MAX_BOUND``);
* one scores tile allocated once and reused, products written in place (``out=``, ``baddbmm_``);
* every (batch, head) in one batched product per tile, and tiles and base chosen at run time for
  the vector instructions the CPU offers (:func:`cpu_tuning`).

This is what ``attention-course bench`` measures as ``flash_cpu``; the lesson's exercises are
graded against the readable :mod:`course_lib.flash`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from course_lib.flash import accumulation_dtype, check_inputs, refuse_mask

__all__ = [
    "CPUTuning",
    "cpu_tuning",
    "cpu_block_sizes",
    "flash_attention_cpu_forward",
    "flash_attention_cpu_backward",
    "flash_attention_cpu",
]

class CPUTuning(NamedTuple):
    """What the tuned passes choose by CPU: the tiles per (batch, head), and the exponentials' base."""

    block_q: int
    block_k: int
    exp2: bool  # exponentials in base 2 (True) or e (False); see LOG2_E


# By torch.backends.cpu.get_cpu_capability(), measured on an AMD EPYC with benchmarks/lesson4_tiles.py
# (float32, B=1, H=8, D=64, N=4096; each candidate's CPU time over SDPA's, called in turn; README,
# Lesson 4), AVX2 and no vector extensions (DEFAULT) emulated with ATEN_CPU_CAPABILITY and
# MKL_ENABLE_INSTRUCTIONS. Tiles: 128 wide were slower everywhere; 256 x 256, 512 x 256 and
# 256 x 512 were within the host's noise of each other on every capability (their order changed
# from run to run), so all keep 256 x 256, the smallest (8 heads' tiles: 2 MiB, which keeps the
# peak memory near SDPA's). Base: exp2 where ATen vectorises it; without (DEFAULT) the forward took
# 0.94x SDPA's time in base 2 and 0.75x in base e.
TUNING_BY_CAPABILITY = {
    "AVX512": CPUTuning(256, 256, exp2=True),
    "AVX2": CPUTuning(256, 256, exp2=True),
    "DEFAULT": CPUTuning(256, 256, exp2=False),
}


def cpu_tuning() -> CPUTuning:
    """The tiles and the exponentials' base measured fastest for this CPU's vector instructions.

    ``torch.backends.cpu.get_cpu_capability()`` names what ATen's kernels use here (``AVX512``,
    ``AVX2``, ``DEFAULT``; the environment variable ``ATEN_CPU_CAPABILITY`` lowers it); an unknown
    name gets the AVX2 choice.

    Shapes:
        no tensors; returns a CPUTuning (block_q, block_k, exp2).

    >>> tuning = cpu_tuning()
    >>> tuning.block_q >= 64 and tuning.block_k >= 64 and isinstance(tuning.exp2, bool)
    True
    """
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return TUNING_BY_CAPABILITY.get(capability, TUNING_BY_CAPABILITY["AVX2"])


def cpu_block_sizes() -> tuple[int, int]:
    """(block_q, block_k) for this CPU: the tiles of :func:`cpu_tuning`, the default of the tuned passes.

    Shapes:
        no tensors; returns two ints.

    >>> block_q, block_k = cpu_block_sizes()
    >>> block_q >= 64 and block_k >= 64
    True
    """
    tuning = cpu_tuning()
    return tuning.block_q, tuning.block_k


# exp(x) = 2^(x log2 e). Both passes fold log2(e) into the scale and use exp2, as FlashAttention's
# kernels do (Dao, 2023, section 3.1), where ATen vectorises exp2: there it took a quarter (AVX-512)
# to a third (AVX2) of exp's time on a 256 x 256 tile, and the exponentials are most of the
# forward's work beside the two matrix products. Without vector extensions (DEFAULT) exp2 took three
# times exp's time, so there the passes stay in base e. Running max and sum live in the base
# chosen; L is converted back to natural log.
LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)


class _Base(NamedTuple):
    per_nat: float  # a natural-log quantity times this is in this base: log2(e) for base 2, 1 for e
    exp: Callable[[torch.Tensor], torch.Tensor]
    exp_: Callable[[torch.Tensor], torch.Tensor]  # in place
    log: Callable[[torch.Tensor], torch.Tensor]


BASE_2 = _Base(LOG2_E, torch.exp2, torch.Tensor.exp2_, torch.log2)
BASE_E = _Base(1.0, torch.exp, torch.Tensor.exp_, torch.log)

# A unified maximum (Hong et al., 2023, FlashDecoding++, section 3): the running max exists only so
# that exp never overflows. When every score of a query tile is known to lie in [-B, B] with
# B = UNIFIED_MAX_BOUND in base 2 (B ln 2 in base e), 2^s is a normal float32 between 2^-32 and
# 2^32, so the tile keeps m = 0 throughout and skips the row maxima, the subtraction and the rescaling of l and acc: the
# same result, with the same relative precision (floating point's is the same at every magnitude).
# The bound is proved before the tile runs, not hoped for: |q . k| <= |q| |k| (Cauchy-Schwarz).
UNIFIED_MAX_BOUND = 32.0


def _blocks(block_q: int | None, block_k: int | None) -> tuple[int, int]:
    """The tile sizes asked for, :func:`cpu_block_sizes` where None."""
    default_q, default_k = cpu_block_sizes()
    return (default_q if block_q is None else block_q), (default_k if block_k is None else block_k)


def _mask_above_diagonal_(scores: torch.Tensor, q_start: int, k_start: int) -> None:
    """Set scores[:, r, c] = -inf where key k_start + c comes after query q_start + r (in place)."""
    rows = torch.arange(q_start, q_start + scores.shape[-2], device=scores.device)[:, None]
    cols = torch.arange(k_start, k_start + scores.shape[-1], device=scores.device)[None, :]
    scores.masked_fill_(cols > rows, float("-inf"))


def flash_attention_cpu_forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None, block_q: int | None = None, block_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""FlashAttention-2's forward pass, tuned for a CPU: ``(out, lse)`` as
    :func:`course_lib.flash.flash_attention_forward`.

    The algorithm is :func:`course_lib.flash.flash_attention_forward`'s (Dao, 2023, Algorithm 1),
    computed in base 2 where :func:`cpu_tuning` says so (scores scaled by ``scale * log2(e)``,
    ``exp2``; see ``LOG2_E``), with
    every (batch, head) in one batched product per tile, one scores tile reused, and query tiles
    whose scores are provably small keeping ``m = 0`` (see ``UNIFIED_MAX_BOUND``). ``block_q``
    and ``block_k`` default to :func:`cpu_block_sizes`. ``is_causal`` is top-left aligned, as
    in torch; ``attn_mask`` must be None (a TypeError says what to use instead).
    Float16/bfloat16 inputs are accumulated in float32.

    Shapes:
        query: (..., Lq, D); key: (..., Lk, D); value: (..., Lk, Dv), same leading dims; any
        Lq, Lk >= 1.
        result: (out (..., Lq, Dv) in the inputs' dtype, lse (..., Lq) in float32, or float64
        for float64 inputs), without gradient history: :func:`flash_attention_cpu` is differentiable.

    >>> q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    >>> out, lse = flash_attention_cpu_forward(q, k, v, block_q=4, block_k=3)
    >>> torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6)
    True
    >>> torch.allclose(lse, torch.logsumexp(q @ k.transpose(-2, -1) / 8 ** 0.5, dim=-1))
    True
    """
    refuse_mask("flash_attention_cpu_forward", attn_mask)
    block_q, block_k = _blocks(block_q, block_k)
    check_inputs("flash_attention_cpu_forward", query, key, value, block_q, block_k)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    acc_dtype = accumulation_dtype(query.dtype)
    *batch, n_q, d = query.shape
    n_k, d_v = key.shape[-2], value.shape[-1]
    # Detached: the tiles are written in place; flash_attention_cpu is the differentiable operator.
    q = query.detach().reshape(-1, n_q, d)  # (BH, Lq, D): one batched matmul serves every batch and head
    k = key.detach().reshape(-1, n_k, d)  # (BH, Lk, D)
    v = value.detach().reshape(-1, n_k, d_v)  # (BH, Lk, Dv)
    bh = q.shape[0]
    out = torch.empty(bh, n_q, d_v, dtype=acc_dtype, device=query.device)
    lse = torch.empty(bh, n_q, dtype=acc_dtype, device=query.device)
    # One scores tile, reused: a fresh tensor per tile costs the allocator's page faults and
    # evicts the cache, and slowed the matrix products by a third.
    tile = torch.empty(bh, min(block_q, n_q), min(block_k, n_k), dtype=acc_dtype, device=query.device)
    k_norm = torch.linalg.vector_norm(k, dim=-1).amax(dim=-1).to(acc_dtype)  # (BH,): max_j |k_j|
    v_max = max(abs(float(x)) for x in torch.aminmax(v)) if v.numel() else 0.0  # max |V|, no copy of V
    # ... and acc's sums, up to Lk * 2^B * max|V|, must stay finite (NaN or inf anywhere: the online softmax)
    values_fit = n_k * 2.0 ** UNIFIED_MAX_BOUND * v_max < 2.0 ** 120
    base = BASE_2 if cpu_tuning().exp2 else BASE_E
    score_limit = UNIFIED_MAX_BOUND * base.per_nat / LOG2_E  # |s| in this base that keeps base^s within 2^+-B

    for q_start in range(0, n_q, block_q):
        q_stop = min(q_start + block_q, n_q)
        q_i = q[:, q_start:q_stop].to(acc_dtype) * (scale * base.per_nat)  # (BH, bq, D): scores in the base
        bound = (torch.linalg.vector_norm(q_i, dim=-1) * k_norm[:, None]).amax()  # >= every |score|
        unified = values_fit and float(bound) <= score_limit
        m = torch.full((bh, q_stop - q_start), 0.0 if unified else float("-inf"), dtype=acc_dtype,
                       device=query.device)  # (BH, bq)
        l = torch.zeros_like(m)  # (BH, bq)
        # Contiguous, so that baddbmm_ below is one batched product (on a strided view of `out`
        # PyTorch falls back to one product per batch entry, 1.5x slower on a CPU).
        acc = torch.zeros(bh, q_stop - q_start, d_v, dtype=acc_dtype, device=query.device)  # (BH, bq, Dv)
        # Causal: keys after the tile's last query (q_stop - 1) are invisible to all its rows.
        k_end = min(n_k, q_stop) if is_causal else n_k
        for k_start in range(0, k_end, block_k):
            k_stop = min(k_start + block_k, n_k)
            s = tile[:, :q_stop - q_start, :k_stop - k_start]  # (BH, bq, bk)
            torch.bmm(q_i, k[:, k_start:k_stop].to(acc_dtype).transpose(1, 2), out=s)
            if is_causal and k_stop - 1 > q_start:  # the tile crosses the diagonal
                _mask_above_diagonal_(s, q_start, k_start)
            if unified:  # m stays 0: P = 2^S directly, nothing to rescale
                p = base.exp_(s)  # (BH, bq, bk)
            else:
                # The first key tile holds key 0, visible to every row, so m is finite from here on.
                m_new = torch.maximum(m, s.amax(dim=-1))
                alpha = base.exp(m - m_new)  # (BH, bq): how much the old state shrinks
                p = base.exp_(s.sub_(m_new[..., None]))  # (BH, bq, bk), in place: no second tile
                l.mul_(alpha)
                acc.mul_(alpha[..., None])
                m = m_new
            l.add_(p.sum(dim=-1))
            acc.baddbmm_(p, v[:, k_start:k_stop].to(acc_dtype))
        out[:, q_start:q_stop] = acc.div_(l[..., None])
        lse[:, q_start:q_stop] = (m + base.log(l)) / base.per_nat  # back to natural log

    return out.to(query.dtype).reshape(*batch, n_q, d_v), lse.reshape(*batch, n_q)


def flash_attention_cpu_backward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    grad_out: torch.Tensor, *, is_causal: bool = False, scale: float | None = None,
    block_q: int | None = None, block_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""FlashAttention-2's backward pass, tuned for a CPU: ``(dq, dk, dv)`` as
    :func:`course_lib.flash.flash_attention_backward`.

    The algorithm is :func:`course_lib.flash.flash_attention_backward`'s (Dao, 2023, Algorithm
    2: key tiles outer, ``P`` recomputed from the log-sum-exp, ``D = rowsum(dO * O)``), in base
    2, with every (batch, head) in one batched product and the ``P`` and ``dS`` tiles reused.

    Shapes:
        query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv), out and grad_out
        (..., Lq, Dv), lse (..., Lq) as returned by :func:`flash_attention_cpu_forward`.
        result: (dq, dk, dv), shaped and typed as query, key and value.

    >>> q, k, v = (torch.randn(2, 6, 4, requires_grad=True) for _ in range(3))
    >>> out, lse = flash_attention_cpu_forward(q, k, v, is_causal=True, block_q=4, block_k=4)
    >>> do = torch.randn_like(out)
    >>> dq, dk, dv = flash_attention_cpu_backward(q, k, v, out, lse, do, is_causal=True, block_q=4, block_k=4)
    >>> ref = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
    ...                           (q, k, v), do)
    >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip((dq, dk, dv), ref))
    True
    """
    block_q, block_k = _blocks(block_q, block_k)
    check_inputs("flash_attention_cpu_backward", query, key, value, block_q, block_k)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    acc_dtype = accumulation_dtype(query.dtype)
    *batch, n_q, d = query.shape
    n_k, d_v = key.shape[-2], value.shape[-1]
    q = query.detach().reshape(-1, n_q, d)  # (BH, Lq, D)
    k = key.detach().reshape(-1, n_k, d)  # (BH, Lk, D)
    v = value.detach().reshape(-1, n_k, d_v)  # (BH, Lk, Dv)
    do = grad_out.detach().reshape(-1, n_q, d_v)  # (BH, Lq, Dv)
    base = BASE_2 if cpu_tuning().exp2 else BASE_E
    lse_b = lse.detach().reshape(-1, n_q).to(acc_dtype) * base.per_nat  # (BH, Lq): L in the base, as S below
    delta = (do.to(acc_dtype) * out.detach().reshape(-1, n_q, d_v).to(acc_dtype)).sum(dim=-1)  # D: (BH, Lq)
    dq = torch.zeros(q.shape, dtype=acc_dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=acc_dtype, device=q.device)
    dv = torch.empty(v.shape, dtype=acc_dtype, device=q.device)
    # Two tiles reused for every pair (P and dS), as in the forward: no fresh allocation per tile.
    p_tile = torch.empty(q.shape[0], min(block_q, n_q), min(block_k, n_k), dtype=acc_dtype, device=q.device)
    ds_tile = torch.empty_like(p_tile)

    # Key tiles outer, as in FlashAttention-2's backward: dK_j and dV_j accumulate in contiguous
    # tiles (one batched product each); dQ_i gets one small product added per pair.
    for k_start in range(0, n_k, block_k):
        k_stop = min(k_start + block_k, n_k)
        k_j = k[:, k_start:k_stop].to(acc_dtype)  # (BH, bk, D)
        v_j = v[:, k_start:k_stop].to(acc_dtype)  # (BH, bk, Dv)
        dk_j = torch.zeros_like(k_j)  # (BH, bk, D)
        dv_j = torch.zeros_like(v_j)  # (BH, bk, Dv)
        # Causal: query tiles that end before this key tile's first key see none of it.
        q_first = (k_start // block_q) * block_q if is_causal else 0
        for q_start in range(q_first, n_q, block_q):
            q_stop = min(q_start + block_q, n_q)
            q_i = q[:, q_start:q_stop].to(acc_dtype)  # (BH, bq, D)
            do_i = do[:, q_start:q_stop].to(acc_dtype)  # (BH, bq, Dv)
            lse_i, delta_i = lse_b[:, q_start:q_stop, None], delta[:, q_start:q_stop, None]  # (BH, bq, 1)
            s = p_tile[:, :q_stop - q_start, :k_stop - k_start]  # (BH, bq, bk)
            torch.bmm(q_i, k_j.transpose(1, 2), out=s).mul_(scale * base.per_nat)  # in the base
            if is_causal and k_stop - 1 > q_start:
                _mask_above_diagonal_(s, q_start, k_start)
            p = base.exp_(s.sub_(lse_i))  # (BH, bq, bk): masked entries give base^-inf = 0
            dv_j.baddbmm_(p.transpose(1, 2), do_i)
            ds = ds_tile[:, :q_stop - q_start, :k_stop - k_start]
            torch.bmm(do_i, v_j.transpose(1, 2), out=ds).sub_(delta_i).mul_(p)  # dS = P * (dP - D)
            dq[:, q_start:q_stop].add_(torch.bmm(ds, k_j), alpha=scale)
            dk_j.baddbmm_(ds.transpose(1, 2), q_i, alpha=scale)
        dk[:, k_start:k_stop] = dk_j
        dv[:, k_start:k_stop] = dv_j

    return (dq.to(query.dtype).reshape(query.shape), dk.to(key.dtype).reshape(key.shape),
            dv.to(value.dtype).reshape(value.shape))


class _FlashAttentionCPU(torch.autograd.Function):
    """``flash_attention_cpu`` as an autograd function: saves only Q, K, V, O and the log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value, is_causal, scale, block_q, block_k):
        options = dict(is_causal=is_causal, scale=scale, block_q=block_q, block_k=block_k)
        out, lse = flash_attention_cpu_forward(query, key, value, **options)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):
        dq, dk, dv = flash_attention_cpu_backward(*ctx.saved_tensors, grad_out, **ctx.options)
        return dq, dk, dv, None, None, None, None


def flash_attention_cpu(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None, block_q: int | None = None, block_k: int | None = None,
) -> torch.Tensor:
    r"""softmax(Q K^T * scale) V by FlashAttention-2 tiling tuned for a CPU, differentiable.

    The same result as :func:`course_lib.flash.flash_attention` and as
    ``F.scaled_dot_product_attention(query, key, value, is_causal=is_causal, scale=scale)``,
    by :func:`flash_attention_cpu_forward` and :func:`flash_attention_cpu_backward`, in O(L)
    extra memory; tiles default to :func:`cpu_block_sizes`. Options after the three tensors are
    keyword-only; a mask raises a TypeError that says what to use instead.

    Shapes:
        query: (..., Lq, D); key: (..., Lk, D); value: (..., Lk, Dv), same leading dims.
        result: (..., Lq, Dv), dtype of the inputs.

    >>> q, k, v = (torch.randn(1, 8, 100, 64, requires_grad=True) for _ in range(3))
    >>> out = flash_attention_cpu(q, k, v, is_causal=True)
    >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> torch.allclose(out, ref, atol=1e-5)
    True
    >>> out.sum().backward()
    >>> q.grad.shape
    torch.Size([1, 8, 100, 64])
    """
    refuse_mask("flash_attention_cpu", attn_mask)
    return _FlashAttentionCPU.apply(query, key, value, is_causal, scale, block_q, block_k)
