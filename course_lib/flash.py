"""FlashAttention-2 in PyTorch, as the lesson writes it: tiles, an online softmax, no N x N matrix.

Lesson 4: GPU-efficient attention. This is the readable reference that grades the lesson's
exercises. The forward pass is FlashAttention-2's Algorithm 1 (Dao, 2023): for each tile of
``block_q`` queries ``Q_i``, walk over the tiles of ``block_k`` keys and values ``K_j, V_j`` and
keep, per query row, the running maximum ``m``, the running sum ``l`` and the unnormalised output
``acc`` (the online softmax of ``course_lib.online_softmax``); write ``O_i = acc / l`` and the
log-sum-exp ``L_i = m + log l``. The backward pass is Algorithm 2: recompute each tile's
probabilities from ``L`` instead of storing them. Nothing of size Lq x Lk exists in either pass.

The same algorithm tuned for a CPU (exp2, a unified maximum, one reused scores tile, in-place
batched products, tiles chosen for the CPU) is :mod:`course_lib.flash_cpu`; the benchmark
measures that one.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "causal_tile_mask",
    "flash_attention_forward",
    "flash_attention_backward",
    "FlashAttention",
    "flash_attention",
    "DEFAULT_BLOCK_Q",
    "DEFAULT_BLOCK_K",
]

# 128 x 128 tiles: FlashAttention-2's forward kernels use 128-row query tiles (Dao, 2023, section
# 3.3); on a CPU a tile this size keeps the per-tile Python overhead small beside its products.
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128


def causal_tile_mask(n_q: int, n_k: int, block_q: int, block_k: int) -> torch.Tensor:
    r"""Which (query tile, key tile) pairs causal attention must compute: True = compute it.

    Query tile ``i`` holds rows ``i*block_q .. min((i+1)*block_q, n_q) - 1`` and key tile ``j``
    columns ``j*block_k .. ``. With top-left causal alignment (key ``c`` visible to query ``r``
    iff ``c <= r``, as ``is_causal=True`` in torch) the tile holds at least one visible pair iff
    its first key is at most its last query::

        needed[i, j] = j * block_k <= min((i + 1) * block_q, n_q) - 1

    Every other tile is entirely above the diagonal and is skipped: about half the work for
    ``n_q = n_k`` (Dao, 2023, section 3.1.1).

    Shapes:
        result: boolean (ceil(n_q / block_q), ceil(n_k / block_k)).

    >>> causal_tile_mask(4, 4, 2, 2)
    tensor([[ True, False],
            [ True,  True]])
    """
    for name, value in (("n_q", n_q), ("n_k", n_k), ("block_q", block_q), ("block_k", block_k)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    last_query = torch.clamp(torch.arange(1, -(-n_q // block_q) + 1) * block_q, max=n_q) - 1  # (T_q,)
    first_key = torch.arange(0, n_k, block_k)  # (T_k,)
    return first_key[None, :] <= last_query[:, None]


def refuse_mask(fn_name: str, attn_mask: object) -> None:
    """Raise a clear error when a mask reaches a function that supports none (only ``is_causal``).

    The mask sits where ``F.scaled_dot_product_attention`` has its ``attn_mask``, so that a call
    copied from there is told what to do instead of failing on 'Boolean value of Tensor ... is
    ambiguous', or of a one-element mask being silently read as ``is_causal``."""
    if attn_mask is None:
        return
    got = f"a tensor of shape {tuple(attn_mask.shape)}" if isinstance(attn_mask, torch.Tensor) else repr(attn_mask)
    hint = (" To ask for causal attention, pass is_causal=True by keyword: the options after the three "
            "tensors are keyword-only.") if isinstance(attn_mask, bool) else ""
    raise TypeError(f"{fn_name} takes no attn_mask (got {got}): its tiles support only the causal mask, "
                    f"is_causal=True. For any other mask use course_lib.scaled_dot_product_attention or "
                    f"F.scaled_dot_product_attention.{hint}")


def check_inputs(fn_name: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 block_q: int, block_k: int) -> None:
    """The checks every tiled attention function makes, with messages that say what to fix."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not t.is_floating_point():
            raise TypeError(f"{fn_name}: {name} must be floating point, got dtype {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"{fn_name}: {name} must have shape (..., L, D), got {tuple(t.shape)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"{fn_name}: query, key and value must share a dtype, got "
                        f"{query.dtype}, {key.dtype}, {value.dtype}")
    if query.shape[:-2] != key.shape[:-2] or key.shape[:-1] != value.shape[:-1] or query.shape[-1] != key.shape[-1]:
        raise ValueError(f"{fn_name}: expected query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv) "
                         f"with the same leading dims; got {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    if key.shape[-2] < 1:
        raise ValueError(f"{fn_name}: there must be at least one key")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"{fn_name}: block sizes must be >= 1, got block_q={block_q}, block_k={block_k}")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16/float32 inputs, float64 for float64: the dtype of m, l, acc and L."""
    return torch.promote_types(dtype, torch.float32)


def _mask_above_diagonal(s: torch.Tensor, q_start: int, k_start: int) -> torch.Tensor:
    """-inf where key k_start + c comes after query q_start + r: s (..., bq, bk) -> (..., bq, bk)."""
    rows = torch.arange(q_start, q_start + s.shape[-2], device=s.device)[:, None]
    cols = torch.arange(k_start, k_start + s.shape[-1], device=s.device)[None, :]
    return s.masked_fill(cols > rows, float("-inf"))


def flash_attention_forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""FlashAttention-2's forward pass over tiles: the output and each row's log-sum-exp.

    For each tile of queries ``Q_i`` and each tile of keys and values ``K_j, V_j`` (Dao, 2023,
    Algorithm 1), starting from ``m = -inf, l = 0, acc = 0``::

        S     = Q_i K_j^T * scale                 (block_q x block_k scores)
        m_new = max(m, rowmax(S))
        P     = exp(S - m_new)
        l     = exp(m - m_new) * l + rowsum(P)
        acc   = exp(m - m_new) * acc + P V_j ,    m = m_new

    then ``O_i = acc / l`` and ``L_i = m + log(l)``, the log-sum-exp of row i's scores, which
    the backward pass needs. With ``is_causal`` (key j visible to query i iff j <= i, top-left
    aligned as in torch) the tiles above the diagonal are skipped (:func:`causal_tile_mask`)
    and the tiles that cross it are masked. Float16/bfloat16 inputs are accumulated in float32.
    ``attn_mask`` must be None: only the causal mask is supported (a TypeError says so).

    Shapes:
        query: (..., Lq, D); key: (..., Lk, D); value: (..., Lk, Dv), same leading dims; any
        Lq, Lk >= 1 (not only multiples of the blocks).
        result: (out (..., Lq, Dv) in the inputs' dtype, lse (..., Lq) in float32, or float64
        for float64 inputs), without gradient history: :func:`flash_attention` is differentiable.

    >>> q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    >>> out, lse = flash_attention_forward(q, k, v, block_q=4, block_k=3)
    >>> torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6)
    True
    >>> torch.allclose(lse, torch.logsumexp(q @ k.transpose(-2, -1) / 8 ** 0.5, dim=-1))
    True
    """
    refuse_mask("flash_attention_forward", attn_mask)
    check_inputs("flash_attention_forward", query, key, value, block_q, block_k)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    dtype = accumulation_dtype(query.dtype)
    q, k, v = (t.detach().to(dtype) for t in (query, key, value))  # no graph: flash_attention differentiates
    n_q, n_k = q.shape[-2], k.shape[-2]
    needed = causal_tile_mask(n_q, n_k, block_q, block_k) if is_causal else None
    out = q.new_empty(*q.shape[:-1], v.shape[-1])  # (..., Lq, Dv)
    lse = q.new_empty(q.shape[:-1])  # (..., Lq)

    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        q_i = q[..., q_start:q_stop, :]  # (..., bq, D)
        m = q.new_full(q_i.shape[:-1], float("-inf"))  # (..., bq): running max
        l = q.new_zeros(q_i.shape[:-1])  # (..., bq): running sum of exp(s - m)
        acc = q.new_zeros(*q_i.shape[:-1], v.shape[-1])  # (..., bq, Dv): running sum of exp(s - m) v
        for j, k_start in enumerate(range(0, n_k, block_k)):
            if needed is not None and not needed[i, j]:
                break  # this tile and every later one lie above the diagonal
            k_stop = min(k_start + block_k, n_k)
            s = q_i @ k[..., k_start:k_stop, :].transpose(-2, -1) * scale  # (..., bq, bk)
            if is_causal:
                s = _mask_above_diagonal(s, q_start, k_start)
            m_new = torch.maximum(m, s.amax(dim=-1))  # finite: the first key tile holds key 0
            alpha = torch.exp(m - m_new)  # (..., bq): how much the old state shrinks
            p = torch.exp(s - m_new[..., None])  # (..., bq, bk)
            l = alpha * l + p.sum(dim=-1)
            acc = alpha[..., None] * acc + p @ v[..., k_start:k_stop, :]
            m = m_new
        out[..., q_start:q_stop, :] = acc / l[..., None]
        lse[..., q_start:q_stop] = m + torch.log(l)

    return out.to(query.dtype), lse


def flash_attention_backward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    grad_out: torch.Tensor, *, is_causal: bool = False, scale: float | None = None,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""FlashAttention-2's backward pass: gradients by recomputing each tile's probabilities.

    With ``D = rowsum(dO * O)`` computed once, and for each key tile ``K_j, V_j`` (outer loop)
    and each query tile ``Q_i`` that sees it (Dao, 2023, Algorithm 2)::

        P     = exp(Q_i K_j^T * scale - L_i)      (the forward's probabilities, recomputed)
        dV_j += P^T dO_i
        dP    = dO_i V_j^T
        dS    = P * (dP - D_i)                    (the softmax's backward, row by row)
        dQ_i += dS K_j * scale,    dK_j += dS^T Q_i * scale

    ``D_i`` equals ``rowsum(P * dP)`` over the whole row, which is why the row's softmax
    backward needs no other tile. Nothing of size Lq x Lk is stored.

    Shapes:
        query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv), out and grad_out
        (..., Lq, Dv), lse (..., Lq) as returned by :func:`flash_attention_forward`.
        result: (dq, dk, dv), shaped and typed as query, key and value.

    >>> q, k, v = (torch.randn(2, 6, 4, requires_grad=True) for _ in range(3))
    >>> out, lse = flash_attention_forward(q, k, v, is_causal=True, block_q=4, block_k=4)
    >>> do = torch.randn_like(out)
    >>> dq, dk, dv = flash_attention_backward(q, k, v, out, lse, do, is_causal=True, block_q=4, block_k=4)
    >>> ref = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
    ...                           (q, k, v), do)
    >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip((dq, dk, dv), ref))
    True
    """
    check_inputs("flash_attention_backward", query, key, value, block_q, block_k)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    dtype = accumulation_dtype(query.dtype)
    q, k, v, o, do = (t.detach().to(dtype) for t in (query, key, value, out, grad_out))
    lse = lse.detach().to(dtype)
    n_q, n_k = q.shape[-2], k.shape[-2]
    needed = causal_tile_mask(n_q, n_k, block_q, block_k) if is_causal else None
    delta = (do * o).sum(dim=-1)  # D: (..., Lq)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)

    for j, k_start in enumerate(range(0, n_k, block_k)):
        k_stop = min(k_start + block_k, n_k)
        k_j, v_j = k[..., k_start:k_stop, :], v[..., k_start:k_stop, :]  # (..., bk, D), (..., bk, Dv)
        for i, q_start in enumerate(range(0, n_q, block_q)):
            if needed is not None and not needed[i, j]:
                continue  # this query tile ends before key tile j starts
            q_stop = min(q_start + block_q, n_q)
            q_i, do_i = q[..., q_start:q_stop, :], do[..., q_start:q_stop, :]  # (..., bq, D), (..., bq, Dv)
            s = q_i @ k_j.transpose(-2, -1) * scale  # (..., bq, bk)
            if is_causal:
                s = _mask_above_diagonal(s, q_start, k_start)
            p = torch.exp(s - lse[..., q_start:q_stop, None])  # masked entries give exp(-inf) = 0
            dv[..., k_start:k_stop, :] += p.transpose(-2, -1) @ do_i
            ds = p * (do_i @ v_j.transpose(-2, -1) - delta[..., q_start:q_stop, None])  # (..., bq, bk)
            dq[..., q_start:q_stop, :] += ds @ k_j * scale
            dk[..., k_start:k_stop, :] += ds.transpose(-2, -1) @ q_i * scale

    return dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype)


class FlashAttention(torch.autograd.Function):
    """``flash_attention`` as an autograd function: saves only Q, K, V, O and the log-sum-exp.

    ``FlashAttention.apply(query, key, value, is_causal, scale, block_q, block_k)``, all seven
    positional (``apply`` takes no keywords)."""

    @staticmethod
    def forward(ctx, query, key, value, is_causal, scale, block_q, block_k):
        options = dict(is_causal=is_causal, scale=scale, block_q=block_q, block_k=block_k)
        out, lse = flash_attention_forward(query, key, value, **options)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):
        dq, dk, dv = flash_attention_backward(*ctx.saved_tensors, grad_out, **ctx.options)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> torch.Tensor:
    r"""softmax(Q K^T * scale) V by FlashAttention-2 tiling, differentiable, in O(L) extra memory.

    Same result as ``F.scaled_dot_product_attention(query, key, value, is_causal=is_causal,
    scale=scale)`` (no ``attn_mask``, no dropout), computed by :func:`flash_attention_forward`;
    gradients come from :func:`flash_attention_backward`, which recomputes the probabilities
    from the saved log-sum-exp (Dao, 2023). ``is_causal``: key j is visible to query i iff
    ``j <= i`` (top-left aligned, as in torch). Options after the three tensors are
    keyword-only; a mask raises a TypeError that says what to use instead.

    Shapes:
        query: (..., Lq, D); key: (..., Lk, D); value: (..., Lk, Dv), same leading dims.
        result: (..., Lq, Dv), dtype of the inputs.

    >>> q, k, v = (torch.randn(1, 8, 100, 64, requires_grad=True) for _ in range(3))
    >>> out = flash_attention(q, k, v, is_causal=True, block_q=32, block_k=32)
    >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> torch.allclose(out, ref, atol=1e-5)
    True
    >>> out.sum().backward()
    >>> q.grad.shape
    torch.Size([1, 8, 100, 64])
    """
    refuse_mask("flash_attention", attn_mask)
    return FlashAttention.apply(query, key, value, is_causal, scale, block_q, block_k)
