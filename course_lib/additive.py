"""Additive (Bahdanau) attention, and the multiplicative scores it is compared with.

A *scoring function* a(q, k) says how well a query matches a key; attention turns the scores into
weights with a (masked) softmax over the keys and returns the weighted average of the values:

    additive (Bahdanau et al., 2015):   a(q, k) = v^T tanh(W_q q + W_k k)   (Luong et al.'s "concat")
    dot (Luong et al., 2015):           a(q, k) = q^T k
    general (Luong et al., 2015):       a(q, k) = q^T W k

    weights = masked_softmax(a(Q, K))      (..., Lq, Lk), padded keys get weight exactly 0
    context = weights V                    (..., Lq, Dv)

The additive score lets queries and keys have different sizes (d_q != d_k) and costs O(h) per pair,
on top of projecting every query and key once, instead of the dot product's O(d); see Lesson 2.
The three scorers share one interface, ``score(query, key) -> (..., Lq, Lk)``, as functions on
explicit parameters and as modules, and :class:`Attention` turns any of them into an attention layer.

Conventions, as in torch: ``query``, ``key``, ``value`` are the tensors of queries, keys and values
(``F.scaled_dot_product_attention``'s names); a projection is stored as ``nn.Linear`` stores its
weight, (out, in), so W_q q for one query is ``query @ W_q.T`` for a row of them; options are
keyword-only, the mask first: ``mask`` (boolean, **True = the key takes part**), then ``valid_lens``.
Attention returns an :class:`AttentionOutput` ``(context, weights)``.

References: D. Bahdanau, K. Cho, Y. Bengio, "Neural Machine Translation by Jointly Learning to
Align and Translate", ICLR 2015, appendix A.1.2; M.-T. Luong, H. Pham, C. D. Manning, "Effective
Approaches to Attention-based Neural Machine Translation", EMNLP 2015, section 3.1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from course_lib.masks import check_mask_broadcasts, padding_mask
from course_lib.softmax import masked_softmax

__all__ = [
    "AttentionOutput",
    "additive_scores",
    "dot_scores",
    "general_scores",
    "additive_attention",
    "key_mask",
    "AdditiveScore",
    "DotScore",
    "GeneralScore",
    "Attention",
    "AdditiveAttention",
]


class AttentionOutput(NamedTuple):
    """What attention returns: ``context`` (..., Lq, Dv), the weighted values, and ``weights`` (..., Lq, Lk)."""

    context: torch.Tensor
    weights: torch.Tensor


def additive_scores(query: torch.Tensor, key: torch.Tensor, W_q: torch.Tensor, W_k: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    r"""Bahdanau's additive scores a(q_i, k_j) = v^T tanh(W_q q_i + W_k k_j) for every query-key pair.

    Shapes:
        query: (..., Lq, d_q); key: (..., Lk, d_k), d_q and d_k may differ.
        W_q: (h, d_q); W_k: (h, d_k); v: (h,), h the hidden size of the scoring network. The
        projections are stored (out, in), as ``nn.Linear.weight``: W_q q is ``query @ W_q.T``.
        result: (..., Lq, Lk).

    Both projections are computed once, (Lq + Lk) h (d_q or d_k) multiply-adds, and broadcast
    against each other, (..., Lq, 1, h) + (..., 1, Lk, h), so each score then costs one tanh of
    size h and a dot product with v.

    Reference: Bahdanau et al. (2015), appendix A.1.2, a(s, h) = v_a^T tanh(W_a s + U_a h).

    >>> q, k = torch.zeros(1, 3), torch.zeros(2, 5)  # d_q = 3, d_k = 5
    >>> additive_scores(q, k, torch.ones(4, 3), torch.ones(4, 5), torch.ones(4)).shape
    torch.Size([1, 2])
    """
    _check_projection(query, W_q, "query", "W_q", "d_q")
    _check_projection(key, W_k, "key", "W_k", "d_k")
    if v.shape != (W_q.shape[0],) or W_k.shape[0] != W_q.shape[0]:
        raise ValueError(f"W_q (h, d_q), W_k (h, d_k) and v (h,) must share the hidden size h: got W_q "
                         f"{tuple(W_q.shape)}, W_k {tuple(W_k.shape)}, v {tuple(v.shape)}.")
    projected_query = query @ W_q.T  # (..., Lq, h)
    projected_key = key @ W_k.T  # (..., Lk, h)
    features = torch.tanh(projected_query.unsqueeze(-2) + projected_key.unsqueeze(-3))  # (..., Lq, Lk, h)
    return features @ v  # (..., Lq, Lk)


def dot_scores(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    r"""Luong's dot scores a(q_i, k_j) = q_i^T k_j (no 1/sqrt(d) here, as in Luong et al., 2015).

    Shapes: query (..., Lq, d), key (..., Lk, d) -> (..., Lq, Lk).

    Reference: Luong et al. (2015), section 3.1, score(h_t, h_s) = h_t^T h_s.

    >>> dot_scores(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    tensor([[11.,  1.]])
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"dot scores need queries and keys of one size d: query {tuple(query.shape)}, "
                         f"key {tuple(key.shape)}. For different sizes use general_scores or additive_scores.")
    return query @ key.transpose(-2, -1)  # (..., Lq, d) @ (..., d, Lk) -> (..., Lq, Lk)


def general_scores(query: torch.Tensor, key: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    r"""Luong's "general" (bilinear) scores a(q_i, k_j) = q_i^T W k_j.

    Shapes: query (..., Lq, d_q), key (..., Lk, d_k), W (d_q, d_k) -> (..., Lq, Lk). W is stored
    (out, in) as a projection of the keys to the queries' size: q^T (W k), ``key @ W.T`` per row.

    Reference: Luong et al. (2015), section 3.1, score(h_t, h_s) = h_t^T W_a h_s.

    >>> general_scores(torch.ones(1, 2), torch.ones(3, 4), torch.ones(2, 4))
    tensor([[8., 8., 8.]])
    """
    if W.dim() != 2 or W.shape != (query.shape[-1], key.shape[-1]):
        raise ValueError(f"W must be (d_q, d_k) = ({query.shape[-1]}, {key.shape[-1]}) for query "
                         f"{tuple(query.shape)} and key {tuple(key.shape)}, got {tuple(W.shape)}.")
    return (query @ W) @ key.transpose(-2, -1)  # (..., Lq, d_k) @ (..., d_k, Lk) -> (..., Lq, Lk)


def key_mask(key: torch.Tensor, *, mask: torch.Tensor | None = None,
             valid_lens: torch.Tensor | None = None) -> torch.Tensor | None:
    """The boolean mask (True = the key takes part) from either a mask or valid lengths.

    Shapes:
        key: (B, Lk, d_k) when valid lengths are given (only its shape is used).
        mask: None, or boolean broadcastable to (..., Lq, Lk): returned as it is.
        valid_lens: (B,) keeps the first valid_lens[b] keys of batch element b for every query,
        as a (B, 1, Lk) mask; (B, Lq) gives each query its own length, as a (B, Lq, Lk) mask.

    >>> key_mask(torch.zeros(2, 3, 5), valid_lens=torch.tensor([3, 1]))
    tensor([[[ True,  True,  True]],
    <BLANKLINE>
            [[ True, False, False]]])
    """
    if mask is not None and valid_lens is not None:
        raise ValueError("pass either mask or valid_lens, not both")
    if valid_lens is None:
        return mask
    if key.dim() != 3 or valid_lens.dim() not in (1, 2) or valid_lens.shape[0] != key.shape[0]:
        raise ValueError(f"valid_lens must be (B,) or (B, Lq) for key (B, Lk, d_k); got valid_lens "
                         f"{tuple(valid_lens.shape)} and key {tuple(key.shape)}.")
    n_keys = key.shape[-2]
    lengths = valid_lens.reshape(-1)  # (B,) or (B * Lq,)
    mask = padding_mask(lengths, n_keys)  # (B or B * Lq, Lk)
    return mask.view(key.shape[0], -1, n_keys)  # (B, 1 or Lq, Lk)


def additive_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, W_q: torch.Tensor,
                       W_k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
                       valid_lens: torch.Tensor | None = None) -> AttentionOutput:
    r"""Additive attention on explicit parameters: ``AttentionOutput(context, weights)``.

    Equation::

        weights = masked_softmax(v^T tanh(W_q Q + W_k K))    (..., Lq, Lk)
        context = weights V                                   (..., Lq, Dv)

    Masking (at most one, keyword-only): a boolean ``mask`` broadcastable to (..., Lq, Lk),
    **True = the key takes part**, or ``valid_lens`` (B,) or (B, Lq), the number of real keys of
    each batch element (the rest is padding). Masked keys get weight exactly 0; a query with no key
    left gets zero weights and a zero context.

    Shapes: query (..., Lq, d_q), key (..., Lk, d_k), value (..., Lk, Dv); W_q (h, d_q),
    W_k (h, d_k), v (h,), stored (out, in) as in :func:`additive_scores`. Returns context
    (..., Lq, Dv) and weights (..., Lq, Lk).

    Reference: Bahdanau et al. (2015), eqs. (5)-(6) and appendix A.1.2.

    >>> key = torch.randn(2, 4, 5)  # batch of 2, 4 keys each, d_k = 5
    >>> context, weights = additive_attention(torch.randn(2, 1, 3), key, key, torch.randn(6, 3),
    ...                                       torch.randn(6, 5), torch.randn(6), valid_lens=torch.tensor([4, 2]))
    >>> context.shape, weights[1, 0, 2:].tolist()
    (torch.Size([2, 1, 5]), [0.0, 0.0])
    """
    scores = additive_scores(query, key, W_q, W_k, v)  # (..., Lq, Lk)
    return _attend(scores, key, value, mask=mask, valid_lens=valid_lens)


def _attend(scores: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, mask: torch.Tensor | None,
            valid_lens: torch.Tensor | None) -> AttentionOutput:
    if value.shape[-2] != key.shape[-2]:
        raise ValueError(f"key and value must have the same number of positions Lk (dim -2): key "
                         f"{tuple(key.shape)}, value {tuple(value.shape)}.")
    mask = key_mask(key, mask=mask, valid_lens=valid_lens)
    if mask is not None:
        check_mask_broadcasts(mask, scores, "mask")
    weights = masked_softmax(scores, mask, dim=-1)  # (..., Lq, Lk)
    return AttentionOutput(weights @ value, weights)  # (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv)


def _check_projection(x: torch.Tensor, W: torch.Tensor, name: str, w_name: str, size: str) -> None:
    if W.dim() != 2 or W.shape[1] != x.shape[-1]:
        raise ValueError(f"{w_name} must be (h, {size}) with {size} = {x.shape[-1]}, the last dim of {name} "
                         f"{tuple(x.shape)}; got {w_name} of shape {tuple(W.shape)}.")


# --- modules: one interface, score(query, key) -> (..., Lq, Lk) ---------------------------------

class AdditiveScore(nn.Module):
    """a(q, k) = v^T tanh(W_q q + W_k k), with learned W_q (h, d_q), W_k (h, d_k) and v (h,)."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int) -> None:
        super().__init__()
        # nn.Linear's initialisation: uniform in +-1/sqrt(fan_in)
        self.W_q = nn.Parameter(torch.empty(hidden_size, query_size).uniform_(-1, 1) / math.sqrt(query_size))
        self.W_k = nn.Parameter(torch.empty(hidden_size, key_size).uniform_(-1, 1) / math.sqrt(key_size))
        self.v = nn.Parameter(torch.empty(hidden_size).uniform_(-1, 1) / math.sqrt(hidden_size))

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return additive_scores(query, key, self.W_q, self.W_k, self.v)  # (..., Lq, Lk)


class DotScore(nn.Module):
    """a(q, k) = q^T k: no parameters; queries and keys of one size."""

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return dot_scores(query, key)  # (..., Lq, Lk)


class GeneralScore(nn.Module):
    """a(q, k) = q^T W k, with a learned W (d_q, d_k)."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(query_size, key_size).uniform_(-1, 1) / math.sqrt(key_size))

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return general_scores(query, key, self.W)  # (..., Lq, Lk)


class Attention(nn.Module):
    """Attention with any scorer: ``forward(query, key, value, *, mask, valid_lens) -> AttentionOutput``.

    Masking as in :func:`additive_attention`, keyword-only: a boolean ``mask`` broadcastable to
    (..., Lq, Lk), True = the key takes part, or ``valid_lens`` (B,) or (B, Lq).

    >>> attention = Attention(DotScore())
    >>> context, weights = attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 7))
    >>> context.shape, weights.shape
    (torch.Size([2, 3, 7]), torch.Size([2, 3, 5]))
    """

    def __init__(self, score: nn.Module) -> None:
        super().__init__()
        self.score = score

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                mask: torch.Tensor | None = None, valid_lens: torch.Tensor | None = None) -> AttentionOutput:
        return _attend(self.score(query, key), key, value, mask=mask, valid_lens=valid_lens)


class AdditiveAttention(Attention):
    """Bahdanau's attention layer: :class:`Attention` with an :class:`AdditiveScore`.

    >>> attention = AdditiveAttention(query_size=3, key_size=5, hidden_size=8)
    >>> key = torch.randn(2, 4, 5)
    >>> context, weights = attention(torch.randn(2, 1, 3), key, key, valid_lens=torch.tensor([4, 1]))
    >>> weights[1].tolist()
    [[1.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int) -> None:
        super().__init__(AdditiveScore(query_size, key_size, hidden_size))
