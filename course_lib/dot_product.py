"""Scaled dot-product attention, written out the way the lesson derives it.

    scores  = Q K^T / sqrt(d_k)          (..., Lq, Lk)
    weights = masked_softmax(scores)     (..., Lq, Lk), each row sums to 1
    output  = weights V                  (..., Lq, Dv)

``scaled_dot_product_attention`` has the signature and semantics of
``torch.nn.functional.scaled_dot_product_attention`` (torch 2.13), so the
fused kernel can be the reference we check against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib.masks import causal_mask, check_mask_broadcasts
from course_lib.softmax import masked_softmax

__all__ = ["attention_weights", "scaled_dot_product_attention"]


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    r"""Attention weights softmax(Q K^T * scale + mask): how much each query looks at each key.

    Equation::

        weights = masked_softmax(Q K^T * scale),   scale = 1 / sqrt(d_k) by default

    Masks (at most one of ``attn_mask`` and ``is_causal``):
        * boolean ``attn_mask``: **True = the key takes part**, False = it
          gets weight exactly 0 (the polarity of ``F.scaled_dot_product_attention``;
          the opposite of ``nn.MultiheadAttention``'s ``key_padding_mask``).
        * float ``attn_mask``: added to the scores before the softmax
          (0 keeps a key, -inf removes it, other values bias it).
        * ``is_causal=True``: query i attends keys j <= i, aligned top-left
          as in torch (see :func:`course_lib.causal_mask`).
        A query row with every key masked gets all-zero weights, as in torch.

    Shapes:
        query: (..., Lq, d_k); key: (..., Lk, d_k). Leading dims broadcast.
        attn_mask: broadcastable to (..., Lq, Lk), e.g. (Lq, Lk) or a padding
        mask (B, 1, 1, Lk).
        scale: keyword-only; defaults to 1 / sqrt(d_k).
        enable_gqa: keyword-only; grouped-query attention as in torch: key
        has Hk heads at dim -3, query has Hq = g * Hk, and each key head is
        shared by g consecutive query heads.
        result: (..., Lq, Lk), same dtype as ``query``.

    Reference: Vaswani et al., "Attention Is All You Need" (2017), eq. (1).

    >>> Q = K = torch.ones(3, 2)  # equal scores: each query spreads evenly over the keys it may see
    >>> attention_weights(Q, K, is_causal=True)
    tensor([[1.0000, 0.0000, 0.0000],
            [0.5000, 0.5000, 0.0000],
            [0.3333, 0.3333, 0.3333]])
    """
    _check_tensor(query, "query", ndim=2)
    _check_tensor(key, "key", ndim=2, like=query)
    Lq, d_k = query.shape[-2:]
    Lk = key.shape[-2]
    if key.shape[-1] != d_k:
        raise ValueError(
            f"query and key must have the same feature size d_k (last dim), since Q K^T "
            f"takes dot products between them: query is {tuple(query.shape)} with "
            f"d_k = {d_k}, key is {tuple(key.shape)} with d_k = {key.shape[-1]}."
        )
    if enable_gqa:
        key = _repeat_kv_heads(key, query, "key")
    _check_leading_dims_broadcast(query, key, "key")

    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    # (..., Lq, d_k) @ (..., d_k, Lk) -> (..., Lq, Lk)
    scores = query @ key.transpose(-2, -1) * scale

    mask = None
    if is_causal:
        if attn_mask is not None:
            raise ValueError(
                "pass either attn_mask or is_causal=True, not both (as in "
                "F.scaled_dot_product_attention). To combine them, build the mask yourself: "
                "attn_mask & causal_mask(Lq, Lk)."
            )
        mask = causal_mask(Lq, Lk, device=query.device)
    elif attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask must be a tensor or None, got {type(attn_mask).__name__}.")
        check_mask_broadcasts(attn_mask, scores, "attn_mask")
        if attn_mask.dtype == torch.bool:
            mask = attn_mask  # True = takes part
        elif attn_mask.is_floating_point():
            scores = scores + attn_mask.to(scores.dtype)  # additive: 0 keeps, -inf removes
        else:
            raise TypeError(
                f"attn_mask must be boolean (True = takes part) or floating point "
                f"(added to the scores), got dtype {attn_mask.dtype}. A 0/1 integer mask "
                f"is ambiguous: use attn_mask.bool() if 1 means 'takes part'."
            )
    return masked_softmax(scores, mask, dim=-1)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    r"""softmax(Q K^T / sqrt(d_k)) V, with the signature and semantics of torch's own function.

    Equation::

        Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V

    The weights come from :func:`attention_weights`; with ``dropout_p > 0``
    they go through inverted dropout (each weight zeroed with probability p,
    the rest scaled by 1 / (1 - p)) before multiplying V, as torch does.
    Like torch, dropout is applied whenever ``dropout_p > 0``: pass 0.0 at
    evaluation time.

    Masks (at most one of ``attn_mask`` and ``is_causal``):
        * boolean ``attn_mask``: **True = the key takes part**, False = masked
          out (the opposite of ``nn.MultiheadAttention``'s ``key_padding_mask``).
        * float ``attn_mask``: added to the scores (0 keeps, -inf removes).
        * ``is_causal=True``: query i attends keys j <= i, aligned top-left
          whatever Lq and Lk are, as in torch.
        A query with every key masked gets an output row of zeros, as in torch.

    Shapes:
        query: (..., Lq, d_k); key: (..., Lk, d_k); value: (..., Lk, Dv).
        Leading dims broadcast (e.g. (B, H, L, D)); Lq may differ from Lk
        and Dv from d_k.
        attn_mask: broadcastable to (..., Lq, Lk).
        scale: keyword-only; defaults to 1 / sqrt(d_k).
        enable_gqa: keyword-only; grouped-query attention as in torch (key
        and value have Hk heads at dim -3, query has a multiple of Hk).
        result: (..., Lq, Dv), same dtype as ``query``.

    Reference: Vaswani et al., "Attention Is All You Need" (2017), eq. (1);
    PyTorch docs of ``torch.nn.functional.scaled_dot_product_attention``.

    >>> Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> K = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> V = torch.tensor([[10.0], [20.0]])
    >>> scaled_dot_product_attention(Q, K, V, is_causal=True)
    tensor([[10.0000],
            [16.6976]])
    """
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p is a probability and must be in [0, 1], got {dropout_p}.")
    weights = attention_weights(  # (..., Lq, Lk); also checks query, key and attn_mask
        query, key, attn_mask, is_causal, scale=scale, enable_gqa=enable_gqa
    )
    _check_tensor(value, "value", ndim=2, like=query)
    if value.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"key and value must have the same number of positions Lk (dim -2), one value "
            f"per key: key is {tuple(key.shape)}, value is {tuple(value.shape)}."
        )
    if enable_gqa:
        value = _repeat_kv_heads(value, query, "value")
    _check_leading_dims_broadcast(query, value, "value")

    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return weights @ value  # (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv)


def _check_tensor(x: torch.Tensor, name: str, ndim: int, like: torch.Tensor | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() < ndim:
        raise ValueError(
            f"{name} must have at least {ndim} dims (..., L, D), got shape {tuple(x.shape)}. "
            f"For a single vector, add a sequence dim: {name}[None, :]."
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}; use {name}.float().")
    if like is not None and x.dtype != like.dtype:
        raise TypeError(
            f"query, key and value must share one dtype: query is {like.dtype}, "
            f"{name} is {x.dtype}. Convert one, e.g. {name}.to(query.dtype)."
        )


def _check_leading_dims_broadcast(query: torch.Tensor, other: torch.Tensor, name: str) -> None:
    try:
        torch.broadcast_shapes(query.shape[:-2], other.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch, head) dims of query {tuple(query.shape[:-2])} and {name} "
            f"{tuple(other.shape[:-2])} do not broadcast: aligned from the right, each pair "
            f"must be equal or contain a 1 (full shapes: query {tuple(query.shape)}, "
            f"{name} {tuple(other.shape)})."
        ) from None


def _repeat_kv_heads(x: torch.Tensor, query: torch.Tensor, name: str) -> torch.Tensor:
    """Grouped-query attention: repeat each of the Hk heads of x (dim -3) g = Hq / Hk times."""
    if query.dim() < 3 or x.dim() < 3:
        raise ValueError(
            f"enable_gqa=True needs a head dim at -3: query (..., Hq, Lq, d_k), "
            f"{name} (..., Hk, Lk, D); got query {tuple(query.shape)}, {name} {tuple(x.shape)}."
        )
    h_q, h_k = query.shape[-3], x.shape[-3]
    if h_q % h_k != 0:
        raise ValueError(
            f"enable_gqa=True needs the number of query heads Hq = {h_q} to be a multiple "
            f"of the number of {name} heads Hk = {h_k} (dim -3)."
        )
    return x.repeat_interleave(h_q // h_k, dim=-3)  # (..., Hk, L, D) -> (..., Hq, L, D)
