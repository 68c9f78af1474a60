"""Attention one chunk of queries at a time: the same result in O(chunk * Lk) memory, not O(Lq * Lk).

Lesson 4: GPU-efficient attention. Every query's softmax is independent of the other queries',
so the queries can be processed in chunks, each a full softmax over all keys, and only one
chunk's scores exist at a time (Rabe & Staats, 2021, "Self-attention does not need O(n^2)
memory", who also chunk the keys; chunking the keys too is what ``flash_attention`` does).
"""

from __future__ import annotations

import math

import torch

from course_lib.flash import refuse_mask

__all__ = ["chunked_attention"]


def chunked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: None = None, *,
    is_causal: bool = False, scale: float | None = None, chunk_size: int = 1024,
) -> torch.Tensor:
    r"""softmax(Q K^T * scale) V computed ``chunk_size`` queries at a time.

    For each chunk ``Q_c`` of consecutive queries (rows ``c0 .. c1-1``)::

        O_c = softmax(Q_c K^T * scale + M_c) V

    where ``M_c`` is 0, or with ``is_causal`` ``-inf`` where key ``j > i`` (top-left aligned, as
    ``is_causal=True`` in ``F.scaled_dot_product_attention``). Peak memory for the scores is
    ``chunk_size * Lk`` per (batch, head) instead of ``Lq * Lk``; the result is the same. Options
    after the three tensors are keyword-only; ``attn_mask`` must be None (a TypeError says what
    to use instead).

    Shapes:
        query: (..., Lq, Dk); key: (..., Lk, Dk); value: (..., Lk, Dv), same leading dims.
        result: (..., Lq, Dv), dtype of ``query``.

    >>> q, k, v = torch.randn(2, 5, 4), torch.randn(2, 7, 4), torch.randn(2, 7, 3)
    >>> out = chunked_attention(q, k, v, chunk_size=2)
    >>> torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6)
    True
    """
    refuse_mask("chunked_attention", attn_mask)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    out = query.new_empty(*query.shape[:-1], value.shape[-1])  # (..., Lq, Dv)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = query[..., start:stop, :] @ key.transpose(-2, -1) * scale  # (..., c, Lk)
        if is_causal:
            rows = torch.arange(start, stop, device=query.device)[:, None]
            scores = scores.masked_fill(torch.arange(n_k, device=query.device)[None, :] > rows, float("-inf"))
        out[..., start:stop, :] = torch.softmax(scores, dim=-1) @ value  # (..., c, Dv)
    return out
