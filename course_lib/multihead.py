"""Multi-head attention: H attention heads side by side, each on its own slice of the model's width.

    Q = X_q W_Q^T + b_Q,  K = X_kv W_K^T + b_K,  V = X_kv W_V^T + b_V     (B, L, E)
    Q, K, V -> split_heads -> (B, H, L, E/H)
    head_h  = softmax(Q_h K_h^T / sqrt(E/H) + mask) V_h                  (B, H, Lq, E/H)
    output  = merge_heads(heads) W_O^T + b_O                              (B, Lq, E)

Vaswani et al., "Attention Is All You Need" (2017), section 3.2.2. Grouped-query attention
(Ainslie et al., "GQA", 2023) gives the keys and values only ``num_kv_heads`` heads, each shared by
``num_heads / num_kv_heads`` query heads; ``num_kv_heads = 1`` is multi-query attention (Shazeer,
"Fast Transformer Decoding: One Write-Head is All You Need", 2019).

Weights are stored as torch stores them, everywhere in the course: ``(out, in)``, applied as
``x W^T`` (``nn.Linear``'s ``weight``, ``nn.MultiheadAttention``'s ``in_proj_weight`` rows), so
torch's parameters load without a transpose.

Mask polarity. A parameter named as in torch means what it means in torch:

* :class:`MultiHeadAttention` and :func:`packed_multihead_attention` take ``nn.MultiheadAttention``'s
  masks: in ``key_padding_mask`` and in a boolean ``attn_mask``, **True = ignore** (may not attend).
* :func:`multihead_attention`, the functional form the lesson derives, keeps the course's polarity,
  **True = takes part**: its padding mask is called ``key_mask``, and its ``attn_mask`` means what
  it means in ``F.scaled_dot_product_attention`` (True = takes part).

Float masks are added to the scores in both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.dot_product import attention_weights
from course_lib.masks import causal_mask

__all__ = [
    "split_heads",
    "merge_heads",
    "multihead_attention",
    "packed_multihead_attention",
    "MultiheadAttentionOutput",
    "MultiHeadAttention",
]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    r"""Cut the feature dim into ``num_heads`` heads and move the heads before the sequence.

    Equation::

        split_heads(x)[..., h, l, d] = x[..., l, h * D + d],   D = E / num_heads

    Head h owns the h-th contiguous slice of D features, so a projection's output columns
    ``h*D : (h+1)*D`` are head h's query (or key, or value).

    Shapes:
        x: (..., L, E) with E divisible by ``num_heads``.
        result: (..., H, L, D), a view of x when possible.

    >>> split_heads(torch.arange(8.0).reshape(2, 4), num_heads=2)  # L=2, E=4 -> (H=2, L=2, D=2)
    tensor([[[0., 1.],
             [4., 5.]],
    <BLANKLINE>
            [[2., 3.],
             [6., 7.]]])
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (..., L, E), got shape {tuple(x.shape)}.")
    *lead, length, width = x.shape
    if num_heads < 1 or width % num_heads != 0:
        raise ValueError(
            f"the feature size E = {width} (last dim of x, shape {tuple(x.shape)}) must be divisible "
            f"by num_heads = {num_heads}: each head gets E / num_heads features."
        )
    # (..., L, E) -> (..., L, H, D) -> (..., H, L, D)
    return x.reshape(*lead, length, num_heads, width // num_heads).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    r"""Inverse of :func:`split_heads`: put the heads' outputs side by side again.

    Equation::

        merge_heads(x)[..., l, h * D + d] = x[..., h, l, d]

    Shapes:
        x: (..., H, L, D).
        result: (..., L, H * D), contiguous.

    >>> x = torch.randn(2, 5, 12)
    >>> torch.equal(merge_heads(split_heads(x, num_heads=3)), x)
    True
    """
    if x.dim() < 3:
        raise ValueError(f"x must be (..., H, L, D), got shape {tuple(x.shape)}.")
    *lead, heads, length, head_dim = x.shape
    # (..., H, L, D) -> (..., L, H, D) -> (..., L, H * D)
    return x.transpose(-3, -2).reshape(*lead, length, heads * head_dim)


def _additive_mask(
    key_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    n_q: int,
    n_k: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """All masks, in the course's polarity, as one float mask (0 = takes part, -inf = masked),
    broadcastable to (B, H, Lq, Lk)."""
    bias = None

    def add(mask: torch.Tensor, name: str) -> None:
        nonlocal bias
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, float("-inf"))
        elif not mask.is_floating_point():
            raise TypeError(f"{name} must be boolean (True = takes part) or float (added to the scores), "
                            f"got {mask.dtype}.")
        bias = mask.to(dtype) if bias is None else bias + mask.to(dtype)

    if key_mask is not None:
        if key_mask.dim() != 2 or key_mask.shape[-1] != n_k:
            raise ValueError(f"key_mask must be (B, Lk) = (B, {n_k}), got {tuple(key_mask.shape)}.")
        add(key_mask[:, None, None, :], "key_mask")  # (B, 1, 1, Lk): same keys for every head and query
    if attn_mask is not None:
        add(attn_mask, "attn_mask")  # (Lq, Lk) or (B, H, Lq, Lk)
    if is_causal:
        add(causal_mask(n_q, n_k, device=device), "the causal mask")
    return bias


def _check_projection(name: str, weight: torch.Tensor, x: torch.Tensor, x_name: str) -> None:
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"{name} must be (out, in) with in = {x.shape[-1]}, the width of {x_name} {tuple(x.shape)}: weights "
            f"are stored as nn.Linear stores them and applied as {x_name} @ {name}.T. Got {tuple(weight.shape)}; "
            f"a matrix in (in, out) layout needs a transpose."
        )


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    W_v: torch.Tensor,
    W_o: torch.Tensor,
    num_heads: int,
    *,
    b_q: torch.Tensor | None = None,
    b_k: torch.Tensor | None = None,
    b_v: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    num_kv_heads: int | None = None,
    key_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What every form of multi-head attention here computes: ``(output (B, Lq, E), weights (B, H, Lq, Lk))``,
    masks in the course's polarity (see :func:`multihead_attention`)."""
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise ValueError(
            f"query, key and value must be batch-first (B, L, E); got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(value.shape)}."
        )
    for name, weight, x, x_name in (("W_q", W_q, query, "query"), ("W_k", W_k, key, "key"),
                                    ("W_v", W_v, value, "value")):
        _check_projection(name, weight, x, x_name)
    embed_dim = W_q.shape[0]
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if embed_dim % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"num_heads = {num_heads} must divide the width E = {embed_dim}, and num_kv_heads = "
            f"{num_kv_heads} must divide num_heads."
        )
    q = split_heads(F.linear(query, W_q, b_q), num_heads)  # (B, H, Lq, D)
    k = split_heads(F.linear(key, W_k, b_k), num_kv_heads)  # (B, H_kv, Lk, D)
    v = split_heads(F.linear(value, W_v, b_v), num_kv_heads)  # (B, H_kv, Lk, D)
    mask = _additive_mask(key_mask, attn_mask, is_causal, q.shape[-2], k.shape[-2], q.dtype, q.device)
    weights = attention_weights(q, k, mask, enable_gqa=num_kv_heads != num_heads)  # (B, H, Lq, Lk)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    v = v.repeat_interleave(num_heads // num_kv_heads, dim=-3)  # (B, H, Lk, D): head h reads group h // g
    return F.linear(merge_heads(weights @ v), W_o, b_o), weights  # (B, Lq, E), (B, H, Lq, Lk)


def multihead_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    W_v: torch.Tensor,
    W_o: torch.Tensor,
    num_heads: int,
    *,
    b_q: torch.Tensor | None = None,
    b_k: torch.Tensor | None = None,
    b_v: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    num_kv_heads: int | None = None,
    key_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    r"""Multi-head (or grouped-query) attention with explicit weight matrices, as the lesson derives it.

    Equation (H = ``num_heads``, D = E / H; weights in torch's (out, in) layout)::

        Q = query W_q^T + b_q,  K = key W_k^T + b_k,  V = value W_v^T + b_v
        head_h = softmax(Q_h K_g(h)^T / sqrt(D) + mask) V_g(h),   g(h) = h // (H / H_kv)
        output = concat(head_1, ..., head_H) W_o^T + b_o

    With ``num_kv_heads`` H_kv < H (grouped-query attention), K and V have H_kv heads and each is
    shared by H / H_kv consecutive query heads; H_kv = H is ordinary multi-head attention.

    Masks, in the course's polarity (combined; all broadcast to (B, H, Lq, Lk)):
        * ``key_mask`` (B, Lk), boolean: **True = the key takes part**, False = padding; or float,
          added to the scores. (``nn.MultiheadAttention``'s ``key_padding_mask`` is the
          opposite, True = ignore: hence another name.)
        * ``attn_mask`` (Lq, Lk) or (B, H, Lq, Lk): as in ``F.scaled_dot_product_attention``,
          boolean True = takes part, or float, added.
        * ``is_causal``: query i attends keys j <= i (top-left aligned).
        A query with every key masked gets zero output from its heads (torch gives NaN).

    Dropout with probability ``dropout_p`` acts on the attention weights, as in torch; pass 0 at
    evaluation time.

    Shapes:
        query: (B, Lq, E); key: (B, Lk, E_k); value: (B, Lk, E_v).
        W_q: (E, E); W_k: (H_kv * D, E_k); W_v: (H_kv * D, E_v); W_o: (E, E); biases: (out,).
        result: (B, Lq, E). (:class:`MultiHeadAttention` also returns the weights.)

    Reference: Vaswani et al. (2017), section 3.2.2; Ainslie et al. (2023) for GQA.

    >>> E, H = 4, 2
    >>> x = torch.randn(1, 3, E)
    >>> I = torch.eye(E)
    >>> multihead_attention(x, x, x, I, I, I, I, H, key_mask=torch.tensor([[True, True, False]])).shape
    torch.Size([1, 3, 4])
    """
    return _attend(query, key, value, W_q, W_k, W_v, W_o, num_heads, b_q=b_q, b_k=b_k, b_v=b_v, b_o=b_o,
                   num_kv_heads=num_kv_heads, key_mask=key_mask, attn_mask=attn_mask, is_causal=is_causal,
                   dropout_p=dropout_p)[0]


class MultiheadAttentionOutput(NamedTuple):
    """What ``nn.MultiheadAttention`` returns, by the names of its documentation."""

    attn_output: torch.Tensor  # (B, Lq, E)
    attn_weights: torch.Tensor | None  # (B, Lq, Lk) averaged over heads, (B, H, Lq, Lk), or None


def _from_torch_polarity(mask: torch.Tensor | None) -> torch.Tensor | None:
    """torch's boolean key_padding_mask and attn_mask mean True = ignore: flip them into the course's
    True = takes part. Float masks are added to the scores in both, so they stay as they are."""
    return ~mask if mask is not None and mask.dtype == torch.bool else mask


def _torch_attn_mask(attn_mask: torch.Tensor | None, batch: int, num_heads: int) -> torch.Tensor | None:
    """torch's attn_mask is (Lq, Lk) or (B * H, Lq, Lk); ours (Lq, Lk) or (B, H, Lq, Lk)."""
    if attn_mask is None or attn_mask.dim() != 3:
        return attn_mask
    if attn_mask.shape[0] != batch * num_heads:
        raise ValueError(f"a 3-D attn_mask must be (B * num_heads, Lq, Lk) = ({batch * num_heads}, Lq, Lk), as in "
                         f"nn.MultiheadAttention; got {tuple(attn_mask.shape)}.")
    return attn_mask.unflatten(0, (batch, num_heads))  # (B, H, Lq, Lk): torch lays the heads of a batch out together


def _torch_output(output: torch.Tensor, weights: torch.Tensor, need_weights: bool,
                  average_attn_weights: bool) -> MultiheadAttentionOutput:
    if not need_weights:
        return MultiheadAttentionOutput(output, None)
    return MultiheadAttentionOutput(output, weights.mean(dim=1) if average_attn_weights else weights)


def packed_multihead_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    in_proj_weight: torch.Tensor,
    in_proj_bias: torch.Tensor | None,
    out_proj_weight: torch.Tensor,
    out_proj_bias: torch.Tensor | None,
    num_heads: int,
    *,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> MultiheadAttentionOutput:
    r"""What ``nn.MultiheadAttention(E, num_heads, batch_first=True)`` returns, from its packed parameters.

    torch packs W_Q, W_K, W_V into ``in_proj_weight`` (3E, E), rows in that order, each in the
    (out, in) layout of ``nn.Linear``, and their biases into ``in_proj_bias`` (3E,)::

        [W_q; W_k; W_v] = in_proj_weight,   [b_q; b_k; b_v] = in_proj_bias
        attn_output = multihead_attention(query, key, value, W_q, W_k, W_v, out_proj_weight, num_heads, ...)

    The mask arguments are torch's, with torch's meaning and defaults: in ``key_padding_mask`` and
    in a boolean ``attn_mask``, **True = ignore** (may not attend); float masks are added.
    ``need_weights=True`` (torch's default) returns the attention weights too, averaged over the
    heads unless ``average_attn_weights=False``. Evaluation mode: no dropout. Unlike torch, a query
    with every key masked gets zeros (torch: NaN), and ``is_causal=True`` needs no ``attn_mask``.

    Shapes:
        query: (B, Lq, E); key, value: (B, Lk, E).
        in_proj_weight: (3E, E); in_proj_bias: (3E,) or None; out_proj_weight: (E, E);
        out_proj_bias: (E,) or None. key_padding_mask: (B, Lk); attn_mask: (Lq, Lk) or (B * H, Lq, Lk).
        result: ``(attn_output (B, Lq, E), attn_weights)``, attn_weights (B, Lq, Lk) averaged over
        heads, (B, H, Lq, Lk) with ``average_attn_weights=False``, None with ``need_weights=False``.

    Reference: ``torch.nn.MultiheadAttention``; Vaswani et al. (2017), section 3.2.2.

    >>> torch_mha = nn.MultiheadAttention(8, 2, batch_first=True)
    >>> x = torch.randn(2, 5, 8)
    >>> ignore = torch.tensor([[False] * 5, [False, False, False, True, True]])  # True = ignore, as in torch
    >>> ours = packed_multihead_attention(x, x, x, torch_mha.in_proj_weight, torch_mha.in_proj_bias,
    ...                                   torch_mha.out_proj.weight, torch_mha.out_proj.bias, 2,
    ...                                   key_padding_mask=ignore)
    >>> theirs = torch_mha(x, x, x, key_padding_mask=ignore)
    >>> all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs))
    True
    """
    W_q, W_k, W_v = in_proj_weight.chunk(3, dim=0)  # (E, E) each, (out, in)
    b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
    output, weights = _attend(
        query, key, value, W_q, W_k, W_v, out_proj_weight, num_heads, b_q=b_q, b_k=b_k, b_v=b_v, b_o=out_proj_bias,
        key_mask=_from_torch_polarity(key_padding_mask),
        attn_mask=_from_torch_polarity(_torch_attn_mask(attn_mask, query.shape[0], num_heads)), is_causal=is_causal,
    )
    return _torch_output(output, weights, need_weights, average_attn_weights)


class MultiHeadAttention(nn.Module):
    r"""Batch-first multi-head attention, self or cross, with grouped-query heads; loads torch's.

    ``forward`` has the arguments of ``nn.MultiheadAttention.forward``, in its order, with its
    meaning and defaults: ``forward(query, key=None, value=None, key_padding_mask=None,
    need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)``. In
    ``key_padding_mask`` and a boolean ``attn_mask``, **True = ignore** (as in torch; the
    functional :func:`multihead_attention` takes the course's polarity, ``key_mask``). Key and
    value default to query (self-attention). The computation is :func:`multihead_attention` with
    the weights of four ``nn.Linear`` layers ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``.

    Args:
        embed_dim: E, the model width (of queries and outputs).
        num_heads: H; E must be divisible by H. Each head has D = E / H features.
        num_kv_heads: H_kv heads for keys and values (grouped-query attention); default H.
        kdim, vdim: widths of the key and value inputs (cross-attention); default E.
        bias: whether the four projections have a bias.
        dropout: dropout probability on the attention weights, in training mode only.

    Differences from torch's module: always batch-first; a query with every key masked gets
    zeros (torch: NaN); ``is_causal=True`` applies the causal mask itself (torch's is a hint that
    needs ``attn_mask`` too); no ``add_bias_kv`` or ``add_zero_attn``.

    Shapes:
        query: (B, Lq, E); key: (B, Lk, kdim); value: (B, Lk, vdim).
        key_padding_mask: (B, Lk); attn_mask: (Lq, Lk) or (B * H, Lq, Lk), as in torch.
        result: ``(attn_output (B, Lq, E), attn_weights)``; attn_weights as in torch: (B, Lq, Lk)
        averaged over heads, (B, H, Lq, Lk) with ``average_attn_weights=False``, None with
        ``need_weights=False``.

    Reference: Vaswani et al. (2017), section 3.2.2; ``torch.nn.MultiheadAttention``.

    >>> torch_mha = nn.MultiheadAttention(8, 2, batch_first=True)
    >>> mha = MultiHeadAttention.from_torch(torch_mha)
    >>> x = torch.randn(2, 5, 8)
    >>> ignore = torch.tensor([[False] * 5, [False, False, False, True, True]])  # True = ignore, as in torch
    >>> ours, theirs = mha(x, x, x, ignore), torch_mha(x, x, x, ignore)
    >>> torch.allclose(ours[0], theirs[0], atol=1e-6), torch.allclose(ours[1], theirs[1], atol=1e-6)
    (True, True)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim = {embed_dim} must be divisible by num_heads = {num_heads}.")
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads = {num_heads} must be a multiple of num_kv_heads = {num_kv_heads}: "
                f"each key/value head serves the same number of query heads."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout = dropout
        kv_width = num_kv_heads * self.head_dim
        factory = dict(bias=bias, device=device, dtype=dtype)
        self.q_proj = nn.Linear(embed_dim, embed_dim, **factory)
        self.k_proj = nn.Linear(self.kdim, kv_width, **factory)
        self.v_proj = nn.Linear(self.vdim, kv_width, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, **factory)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> MultiheadAttentionOutput:
        key = query if key is None else key
        value = key if value is None else value
        output, weights = _attend(
            query, key, value, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight, self.out_proj.weight,
            self.num_heads, b_q=self.q_proj.bias, b_k=self.k_proj.bias, b_v=self.v_proj.bias, b_o=self.out_proj.bias,
            num_kv_heads=self.num_kv_heads, key_mask=_from_torch_polarity(key_padding_mask),
            attn_mask=_from_torch_polarity(_torch_attn_mask(attn_mask, query.shape[0], self.num_heads)),
            is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0,
        )
        return _torch_output(output, weights, need_weights, average_attn_weights)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A MultiHeadAttention with the parameters (copied) of torch's ``nn.MultiheadAttention``:
        the same call gives the same outputs from both.

        torch packs W_Q, W_K, W_V into ``in_proj_weight`` (3E, E), rows in that order, when kdim
        and vdim equal E, and keeps ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``
        otherwise; its biases are ``in_proj_bias`` (3E,) and ``out_proj.bias``. The module must be
        batch-first, as this one always is (else the same call would mean other shapes); to copy the
        parameters of any module, use :meth:`load_torch_parameters`.
        """
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported: they append extra keys.")
        if not module.batch_first:
            raise ValueError(
                "torch's module was built with batch_first=False: it takes (L, B, E) inputs, this module (B, L, E). "
                "Build it with batch_first=True, or copy its parameters alone with "
                "MultiHeadAttention(...).load_torch_parameters(module) and transpose your inputs."
            )
        bias = module.in_proj_bias is not None
        weight = module.out_proj.weight
        mha = cls(module.embed_dim, module.num_heads, kdim=module.kdim, vdim=module.vdim, bias=bias,
                  dropout=module.dropout, device=weight.device, dtype=weight.dtype)
        mha.load_torch_parameters(module)
        return mha

    @torch.no_grad()
    def load_torch_parameters(self, module: nn.MultiheadAttention) -> None:
        """Copy the parameters of torch's ``nn.MultiheadAttention`` into this module (see from_torch).
        Both store weights in nn.Linear's (out, in) layout: they are copied as they are."""
        if self.num_kv_heads != self.num_heads:
            raise ValueError("torch's nn.MultiheadAttention has no grouped-query heads: "
                             "num_kv_heads must be num_heads.")
        if (module.embed_dim, module.num_heads, module.kdim, module.vdim) != (
                self.embed_dim, self.num_heads, self.kdim, self.vdim):
            raise ValueError(
                f"shapes differ: torch's module has embed_dim, num_heads, kdim, vdim = "
                f"{(module.embed_dim, module.num_heads, module.kdim, module.vdim)}, this one "
                f"{(self.embed_dim, self.num_heads, self.kdim, self.vdim)}."
            )
        if module.in_proj_weight is not None:  # packed: rows [W_Q; W_K; W_V], each (E, E) in (out, in) layout
            w_q, w_k, w_v = module.in_proj_weight.chunk(3, dim=0)
        else:
            w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
        for linear, w in ((self.q_proj, w_q), (self.k_proj, w_k), (self.v_proj, w_v),
                          (self.out_proj, module.out_proj.weight)):
            linear.weight.copy_(w)
        if module.in_proj_bias is not None:
            for linear, b in zip((self.q_proj, self.k_proj, self.v_proj), module.in_proj_bias.chunk(3)):
                linear.bias.copy_(b)
            self.out_proj.bias.copy_(module.out_proj.bias)
