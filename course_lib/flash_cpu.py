"""FlashAttention in PyTorch: attention over tiles with an online softmax, never the N x N matrix.

Lesson 4: GPU-efficient attention. The forward pass walks over tiles of queries (``block_q`` rows)
and, for each, over tiles of keys (``block_k`` columns), keeping per query row the running max
``m``, the running sum ``l`` and the unnormalised output ``acc`` (the online softmax of
``course_lib.online_softmax``). It writes the output and the log-sum-exp ``L = m + log(l)`` of
each row, nothing of size Lq x Lk. The backward pass recomputes each tile's probabilities from
``L`` instead of storing them. This is FlashAttention-2's algorithm (Dao, 2023, algorithms 1 and
2; Dao et al., 2022), written with batched matrix products over tiles so that it runs well on a
CPU, where PyTorch's operators play the part of the GPU kernel's inner loop. One addition: query
tiles whose scores are provably small skip the running max (FlashDecoding++'s unified maximum,
Hong et al., 2023), which saves two of the four passes over each scores tile.
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

# Tiles of 256 x 256 scores per (batch, head): the size at which this CPU's batched matrix products
# run fastest (about 150 GFLOP/s on 2 cores; 512-wide tiles drop to 100), large enough that they
# dominate the per-tile Python overhead, small enough that the tiles of 8 heads (2 MiB each in
# float32) stay in the cache and small beside the output, so the peak memory is close to that of
# PyTorch's fused kernel. Measured with `benchmarks/lesson4_targets.py` (README, Lesson 4).
DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_K = 256

# exp(x) = 2^(x log2 e). Both passes fold log2(e) into the scale and use exp2, as FlashAttention's
# kernels do (Dao, 2023, section 3.1): on a CPU torch's exp2 is about 3x faster than its exp (8.2
# ns against 2.6 ns per 1k floats here), and the exponentials are most of the forward's work
# beside the two matrix products. Running max and sum then live in base 2; L is converted back.
LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)

# A unified maximum (Hong et al., 2023, FlashDecoding++, section 3): the running max exists only so
# that exp never overflows. When every score of a query tile is known to lie in [-B, B] with
# B = UNIFIED_MAX_BOUND (base 2), 2^s is a normal float32 between 2^-32 and 2^32, so the tile keeps
# m = 0 throughout and skips the row maxima, the subtraction and the rescaling of l and acc: the
# same result, with the same relative precision (floating point's is the same at every magnitude).
# The bound is proved before the tile runs, not hoped for: |q . k| <= |q| |k| (Cauchy-Schwarz).
UNIFIED_MAX_BOUND = 32.0


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


def _check_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_q: int, block_k: int) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not t.is_floating_point():
            raise TypeError(f"flash_attention: {name} must be floating point, got dtype {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"flash_attention: {name} must have shape (..., L, D), got {tuple(t.shape)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"flash_attention: query, key and value must share a dtype, got "
                        f"{query.dtype}, {key.dtype}, {value.dtype}")
    if query.shape[:-2] != key.shape[:-2] or key.shape[:-1] != value.shape[:-1] or query.shape[-1] != key.shape[-1]:
        raise ValueError(f"flash_attention: expected query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv) "
                         f"with the same leading dims; got {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    if key.shape[-2] < 1:
        raise ValueError("flash_attention: there must be at least one key")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"flash_attention: block sizes must be >= 1, got block_q={block_q}, block_k={block_k}")


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16/float32 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _mask_above_diagonal_(scores: torch.Tensor, q_start: int, k_start: int) -> None:
    """Set scores[:, r, c] = -inf where key k_start + c comes after query q_start + r (in place)."""
    rows = torch.arange(q_start, q_start + scores.shape[-2], device=scores.device)[:, None]
    cols = torch.arange(k_start, k_start + scores.shape[-1], device=scores.device)[None, :]
    scores.masked_fill_(cols > rows, float("-inf"))


def flash_attention_forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool = False,
    scale: float | None = None, block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""FlashAttention-2's forward pass over tiles: the output and each row's log-sum-exp.

    For each tile of queries ``Q_i`` (scaled by ``scale``) and each tile of keys ``K_j, V_j``
    (Dao, 2023, algorithm 1)::

        S     = Q_i K_j^T                         (block_q x block_k scores)
        m_new = max(m, rowmax(S))
        P     = exp(S - m_new)
        l     = exp(m - m_new) * l + rowsum(P)
        acc   = exp(m - m_new) * acc + P V_j ,    m = m_new

    then ``O_i = acc / l`` and ``L_i = m + log(l)``, the log-sum-exp of row i's scores, which
    the backward pass needs. (The code computes the same in base 2: ``S`` scaled by ``log2(e)``
    and ``exp2``, which is cheaper than ``exp``; see ``LOG2_E``. A query tile whose scores are
    provably small keeps ``m = 0`` and skips the rescaling; see ``UNIFIED_MAX_BOUND``.) With
    ``is_causal`` (key j visible to query i iff j <= i, top-left aligned as in torch) tiles
    above the diagonal are skipped (:func:`causal_tile_mask`) and the tiles that cross it are
    masked. Float16/bfloat16 inputs are accumulated in float32.

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
    _check_inputs(query, key, value, block_q, block_k)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    acc_dtype = _accumulation_dtype(query.dtype)
    *batch, n_q, d = query.shape
    n_k, d_v = key.shape[-2], value.shape[-1]
    # Detached: the tiles are written in place; flash_attention is the differentiable operator.
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

    for q_start in range(0, n_q, block_q):
        q_stop = min(q_start + block_q, n_q)
        q_i = q[:, q_start:q_stop].to(acc_dtype) * (scale * LOG2_E)  # (BH, bq, D): scores in base 2
        bound = (torch.linalg.vector_norm(q_i, dim=-1) * k_norm[:, None]).amax()  # >= every |score|
        unified = values_fit and float(bound) <= UNIFIED_MAX_BOUND
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
                p = s.exp2_()  # (BH, bq, bk)
            else:
                # The first key tile holds key 0, visible to every row, so m is finite from here on.
                m_new = torch.maximum(m, s.amax(dim=-1))
                alpha = torch.exp2(m - m_new)  # (BH, bq): how much the old state shrinks
                p = s.sub_(m_new[..., None]).exp2_()  # (BH, bq, bk), in place: no second tile
                l.mul_(alpha)
                acc.mul_(alpha[..., None])
                m = m_new
            l.add_(p.sum(dim=-1))
            acc.baddbmm_(p, v[:, k_start:k_stop].to(acc_dtype))
        out[:, q_start:q_stop] = acc.div_(l[..., None])
        lse[:, q_start:q_stop] = (m + torch.log2(l)) * LN_2  # back from base 2 to natural log

    return out.to(query.dtype).reshape(*batch, n_q, d_v), lse.reshape(*batch, n_q)


def flash_attention_backward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    grad_out: torch.Tensor, is_causal: bool = False, scale: float | None = None,
    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""FlashAttention-2's backward pass: gradients by recomputing each tile's probabilities.

    With ``D_i = rowsum(dO_i * O_i)`` and, for each tile pair (Dao, 2023, algorithm 2)::

        P   = exp(Q_i K_j^T * scale - L_i)        (the forward's probabilities, recomputed)
        dV_j += P^T dO_i
        dP  = dO_i V_j^T
        dS  = P * (dP - D_i)                      (the softmax's backward, row by row)
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
    _check_inputs(query, key, value, block_q, block_k)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    acc_dtype = _accumulation_dtype(query.dtype)
    *batch, n_q, d = query.shape
    n_k, d_v = key.shape[-2], value.shape[-1]
    q = query.detach().reshape(-1, n_q, d)  # (BH, Lq, D)
    k = key.detach().reshape(-1, n_k, d)  # (BH, Lk, D)
    v = value.detach().reshape(-1, n_k, d_v)  # (BH, Lk, Dv)
    do = grad_out.detach().reshape(-1, n_q, d_v)  # (BH, Lq, Dv)
    lse2 = lse.detach().reshape(-1, n_q).to(acc_dtype) * LOG2_E  # (BH, Lq): L in base 2, as S below
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
            lse_i, delta_i = lse2[:, q_start:q_stop, None], delta[:, q_start:q_stop, None]  # (BH, bq, 1)
            s = p_tile[:, :q_stop - q_start, :k_stop - k_start]  # (BH, bq, bk)
            torch.bmm(q_i, k_j.transpose(1, 2), out=s).mul_(scale * LOG2_E)  # in base 2
            if is_causal and k_stop - 1 > q_start:
                _mask_above_diagonal_(s, q_start, k_start)
            p = s.sub_(lse_i).exp2_()  # (BH, bq, bk): masked entries give 2^-inf = 0
            dv_j.baddbmm_(p.transpose(1, 2), do_i)
            ds = ds_tile[:, :q_stop - q_start, :k_stop - k_start]
            torch.bmm(do_i, v_j.transpose(1, 2), out=ds).sub_(delta_i).mul_(p)  # dS = P * (dP - D)
            dq[:, q_start:q_stop].add_(torch.bmm(ds, k_j), alpha=scale)
            dk_j.baddbmm_(ds.transpose(1, 2), q_i, alpha=scale)
        dk[:, k_start:k_stop] = dk_j
        dv[:, k_start:k_stop] = dv_j

    return (dq.to(query.dtype).reshape(query.shape), dk.to(key.dtype).reshape(key.shape),
            dv.to(value.dtype).reshape(value.shape))


class FlashAttention(torch.autograd.Function):
    """``flash_attention`` as an autograd function: saves only Q, K, V, O and the log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value, is_causal=False, scale=None, block_q=DEFAULT_BLOCK_Q,
                block_k=DEFAULT_BLOCK_K):
        out, lse = flash_attention_forward(query, key, value, is_causal, scale, block_q, block_k)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.options = (is_causal, scale, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(query, key, value, out, lse, grad_out, *ctx.options)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool = False,
    scale: float | None = None, block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K,
) -> torch.Tensor:
    r"""softmax(Q K^T * scale) V by FlashAttention-2 tiling, differentiable, in O(L) extra memory.

    Same result as ``F.scaled_dot_product_attention(query, key, value, is_causal=is_causal,
    scale=scale)`` (no ``attn_mask``, no dropout), computed by :func:`flash_attention_forward`;
    gradients come from :func:`flash_attention_backward`, which recomputes the probabilities
    from the saved log-sum-exp (Dao, 2023). ``is_causal``: key j is visible to query i iff
    ``j <= i`` (top-left aligned, as in torch). Float16/bfloat16 inputs accumulate in float32.

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
    return FlashAttention.apply(query, key, value, is_causal, scale, block_q, block_k)
