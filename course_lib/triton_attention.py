"""FlashAttention's forward pass as a Triton kernel, with the tiled PyTorch backward.

Lesson 4: GPU-efficient attention. One Triton *program* computes one tile of ``BLOCK_M`` query
rows of one (batch, head): it loads its queries once, streams the keys and values through in
tiles of ``BLOCK_N``, keeps the online softmax's ``m``, ``l`` and ``acc`` in registers, and writes
the output tile and its log-sum-exp (Dao, 2023, algorithm 1; Tillet et al., 2019, "Triton: an
intermediate language and compiler for tiled neural network computations"). The backward pass
is :func:`course_lib.flash.flash_attention_backward`, from the saved log-sum-exp.

Triton is imported when first needed, so ``course_lib`` imports without it. On a machine
without CUDA, set ``TRITON_INTERPRET=1`` in the environment *before* triton is first imported:
the kernel then runs on CPU tensors, in numpy, slowly (use tiny shapes).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from course_lib.flash import flash_attention_backward, refuse_mask

__all__ = ["triton_available", "triton_flash_forward", "triton_flash_attention"]


def triton_available() -> bool:
    """True when triton imports and can run here: a CUDA GPU, or TRITON_INTERPRET=1 on the CPU.

    Shapes:
        no tensors; returns a bool.

    >>> isinstance(triton_available(), bool)
    True
    """
    import os

    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernel() -> Any:
    """The jitted kernel, built on first use (importing triton is slow and optional)."""
    import triton
    import triton.language as tl

    @triton.jit
    def flash_forward_kernel(
        Q, K, V, O, LSE,  # pointers; Q (BH, Lq, D), K (BH, Lk, D), V (BH, Lk, Dv), O (BH, Lq, Dv), LSE (BH, Lq)
        stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
        stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od,
        n_q, n_k, d, d_v, scale,
        IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):
        start_m = tl.program_id(0) * BLOCK_M  # this program's first query row
        bh = tl.program_id(1)  # this program's (batch, head)
        rows = start_m + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
        cols_d = tl.arange(0, BLOCK_D)
        cols_dv = tl.arange(0, BLOCK_DV)
        q = tl.load(Q + bh * stride_qb + rows[:, None] * stride_qm + cols_d[None, :] * stride_qd,
                    mask=(rows[:, None] < n_q) & (cols_d[None, :] < d), other=0.0)  # (BLOCK_M, BLOCK_D)
        q = (q.to(tl.float32) * scale).to(q.dtype)
        m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        l = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
        k_end = n_k
        if IS_CAUSAL:  # causal tile skip: keys after this tile's last query are never visible
            k_end = tl.minimum(n_k, start_m + BLOCK_M)
        for start_n in range(0, k_end, BLOCK_N):
            keys = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
            k = tl.load(K + bh * stride_kb + keys[None, :] * stride_kn + cols_d[:, None] * stride_kd,
                        mask=(keys[None, :] < n_k) & (cols_d[:, None] < d), other=0.0)  # K^T (BLOCK_D, BLOCK_N)
            s = tl.dot(q, k, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) in float32
            visible = keys[None, :] < n_k
            if IS_CAUSAL:
                visible = visible & (keys[None, :] <= rows[:, None])
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            # Rows past n_q in the last tile may see no key: keep their exponents finite.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l = l * alpha + tl.sum(p, 1)
            v = tl.load(V + bh * stride_vb + keys[:, None] * stride_vn + cols_dv[None, :] * stride_vd,
                        mask=(keys[:, None] < n_k) & (cols_dv[None, :] < d_v), other=0.0)  # (BLOCK_N, BLOCK_DV)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m = m_new
        l_safe = tl.where(l == 0.0, 1.0, l)
        acc = acc / l_safe[:, None]
        tl.store(O + bh * stride_ob + rows[:, None] * stride_om + cols_dv[None, :] * stride_od,
                 acc.to(O.dtype.element_ty), mask=(rows[:, None] < n_q) & (cols_dv[None, :] < d_v))
        tl.store(LSE + bh * n_q + rows, m + tl.log(l_safe), mask=rows < n_q)

    return flash_forward_kernel


def triton_flash_forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None, block_m: int = 64, block_n: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The FlashAttention-2 forward pass by a Triton kernel: (out, lse) as ``flash_attention_forward``.

    One program per (tile of ``block_m`` queries, batch x head); inside it, the loop of
    :func:`course_lib.flash.flash_attention_forward` over key tiles of ``block_n``. Inputs must
    be on a CUDA device, or on the CPU with ``TRITON_INTERPRET=1`` set before triton was
    imported. Float16/bfloat16 products run on tensor cores with float32 accumulation.

    Shapes:
        query: (..., Lq, D); key: (..., Lk, D); value: (..., Lk, Dv); same leading dims.
        result: (out (..., Lq, Dv) in the inputs' dtype, lse (..., Lq) float32).

    >>> import os
    >>> q, k, v = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 7, 16), torch.randn(1, 2, 7, 16)
    >>> if triton_available():
    ...     out, lse = triton_flash_forward(q, k, v, block_m=16, block_n=16)
    ...     ok = torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5)
    ... else:
    ...     ok = True  # no CUDA and no interpreter here
    >>> ok
    True
    """
    refuse_mask("triton_flash_forward", attn_mask)
    if query.dtype == torch.float64:
        raise TypeError("triton_flash_forward: float64 is not supported; use float32, float16 or bfloat16")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"triton_flash_forward: query, key and value must share a dtype, got "
                        f"{query.dtype}, {key.dtype}, {value.dtype}")
    if query.shape[:-2] != key.shape[:-2] or key.shape[:-1] != value.shape[:-1] or query.shape[-1] != key.shape[-1]:
        raise ValueError(f"triton_flash_forward: expected query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv); "
                         f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    import triton

    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    *batch, n_q, d = query.shape
    n_k, d_v = key.shape[-2], value.shape[-1]
    q = query.reshape(-1, n_q, d)  # (BH, Lq, D)
    k = key.reshape(-1, n_k, d)  # (BH, Lk, D)
    v = value.reshape(-1, n_k, d_v)  # (BH, Lk, Dv)
    out = torch.empty(q.shape[0], n_q, d_v, dtype=query.dtype, device=query.device)
    lse = torch.empty(q.shape[0], n_q, dtype=torch.float32, device=query.device)
    grid = (triton.cdiv(n_q, block_m), q.shape[0])
    _kernel()[grid](
        q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        n_q, n_k, d, d_v, scale, IS_CAUSAL=is_causal, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(d_v)),
        # float32 tiles multiplied in full precision: a GPU's default, TF32, keeps 10 mantissa bits
        DOT_PRECISION="ieee" if query.dtype == torch.float32 else None,
    )
    return out.reshape(*batch, n_q, d_v), lse.reshape(*batch, n_q)


class _TritonFlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, is_causal, scale):
        out, lse = triton_flash_forward(query, key, value, is_causal=is_causal, scale=scale)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.options = dict(is_causal=is_causal, scale=scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        dq, dk, dv = flash_attention_backward(*ctx.saved_tensors, grad_out, **ctx.options)
        return dq, dk, dv, None, None


def triton_flash_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None,
) -> torch.Tensor:
    r"""softmax(Q K^T * scale) V by the Triton forward kernel, differentiable.

    The forward pass is :func:`triton_flash_forward`; the backward pass is
    :func:`course_lib.flash.flash_attention_backward` (tiled PyTorch, recomputing the
    probabilities from the saved log-sum-exp). ``is_causal`` is top-left aligned, as in torch.
    Options after the three tensors are keyword-only; ``attn_mask`` must be None.

    Shapes:
        query: (..., Lq, D); key: (..., Lk, D); value: (..., Lk, Dv).
        result: (..., Lq, Dv).

    >>> q, k, v = (torch.randn(1, 1, 8, 16, requires_grad=True) for _ in range(3))
    >>> if triton_available():
    ...     triton_flash_attention(q, k, v, is_causal=True).sum().backward()
    ...     shape = tuple(q.grad.shape)
    ... else:
    ...     shape = (1, 1, 8, 16)
    >>> shape
    (1, 1, 8, 16)
    """
    refuse_mask("triton_flash_attention", attn_mask)
    return _TritonFlashAttention.apply(query, key, value, is_causal, scale)
