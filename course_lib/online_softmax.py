"""The online softmax: a softmax computed block by block, merging partial results as they come.

Lesson 4: GPU-efficient attention. A softmax row needs its maximum (for stability) and its sum
before any output can be written, which seems to require the whole row at once. Milakov &
Gimelshein (2018) showed it does not: a block of the row is summarised by its *state*
``(m, l)``, its maximum and the sum of ``exp(x - m)`` over it, and two states merge exactly,

    m = max(m_a, m_b),   l = exp(m_a - m) * l_a + exp(m_b - m) * l_b .

For attention the state also carries the unnormalised output ``acc = sum_j exp(s_j - m) v_j``,
rescaled the same way, and the output is ``acc / l`` once every key has been seen. This is the
heart of FlashAttention (Dao et al., 2022).
"""

from __future__ import annotations

import torch

__all__ = ["merge_softmax_states", "online_softmax"]


def _rescale(m_old: torch.Tensor, m_new: torch.Tensor) -> torch.Tensor:
    """exp(m_old - m_new), with exp(-inf - (-inf)) taken as 0 (a state that has seen no key)."""
    return torch.exp(m_old - torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new))


def merge_softmax_states(
    m_a: torch.Tensor, l_a: torch.Tensor, acc_a: torch.Tensor,
    m_b: torch.Tensor, l_b: torch.Tensor, acc_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Merge the softmax-attention states of two disjoint blocks of keys into the state of both.

    A block ``B`` of keys, seen from one query with scores ``s_j``, has the state

        m = max_{j in B} s_j,   l = sum_{j in B} exp(s_j - m),   acc = sum_{j in B} exp(s_j - m) v_j ,

    and the states of two blocks merge exactly (Milakov & Gimelshein, 2018, "Online normalizer
    calculation for softmax", algorithm 3; Dao et al., 2022, section 3.1)::

        m   = max(m_a, m_b)
        l   = exp(m_a - m) * l_a   + exp(m_b - m) * l_b
        acc = exp(m_a - m) * acc_a + exp(m_b - m) * acc_b

    The attention output over both blocks is ``acc / l``, and ``m + log(l)`` is the row's
    log-sum-exp. An empty block has ``m = -inf, l = 0, acc = 0`` and leaves the other state
    unchanged (its factor is taken as 0, not NaN).

    Shapes:
        m_a, l_a, m_b, l_b: (..., Lq), one entry per query row.
        acc_a, acc_b: (..., Lq, Dv).
        result: (m, l, acc) with the same shapes.

    >>> s, v = torch.tensor([[1.0, 3.0, 2.0, 0.0]]), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    >>> def state(s, v):
    ...     m = s.amax(-1)
    ...     p = torch.exp(s - m[..., None])
    ...     return m, p.sum(-1), p @ v
    >>> m, l, acc = merge_softmax_states(*state(s[:, :2], v[:2]), *state(s[:, 2:], v[2:]))
    >>> acc / l[..., None], torch.softmax(s, -1) @ v
    (tensor([[2.2139]]), tensor([[2.2139]]))
    """
    m = torch.maximum(m_a, m_b)
    alpha, beta = _rescale(m_a, m), _rescale(m_b, m)  # (..., Lq)
    l = alpha * l_a + beta * l_b
    acc = alpha[..., None] * acc_a + beta[..., None] * acc_b  # (..., Lq, Dv)
    return m, l, acc


def online_softmax(x: torch.Tensor, *, block_size: int = 128) -> torch.Tensor:
    r"""Softmax along the last dimension, computed in one streaming pass over blocks of columns.

    Running state per row, updated block by block (Milakov & Gimelshein, 2018, algorithm 3)::

        m_new = max(m, max_{j in block} x_j)
        l     = exp(m - m_new) * l + sum_{j in block} exp(x_j - m_new)

    then ``softmax(x)_j = exp(x_j - m) / l`` with the final ``m`` and ``l``. The normaliser is
    found in one pass instead of two (one for the max, one for the sum).

    Shapes:
        x: (..., n), floating point.
        result: same shape and dtype as ``x``; rows sum to 1. A row of all ``-inf`` gives NaN, as
        ``torch.softmax`` does.

    >>> online_softmax(torch.tensor([1.0, 2.0, 3.0]), block_size=2)
    tensor([0.0900, 0.2447, 0.6652])
    """
    if not x.is_floating_point():
        raise TypeError(f"online_softmax expects a floating-point tensor, got dtype {x.dtype}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    m = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype, device=x.device)  # (...,)
    l = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]  # (..., b)
        m_new = torch.maximum(m, block.amax(dim=-1))
        l = _rescale(m, m_new) * l + torch.exp(block - m_new[..., None]).sum(dim=-1)
        m = m_new
    return torch.exp(x - m[..., None]) / l[..., None]
