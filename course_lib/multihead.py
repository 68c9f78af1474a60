"""Multi-head attention: h attention heads side by side, each on its own slice of the model's width.

    Q = X_q W_Q + b_Q,  K = X_kv W_K + b_K,  V = X_kv W_V + b_V     (B, L, E)
    Q, K, V -> split_heads -> (B, H, L, E/H)
    head_i  = softmax(Q_i K_i^T / sqrt(E/H) + mask) V_i              (B, H, Lq, E/H)
    output  = merge_heads(heads) W_O + b_O                            (B, Lq, E)

Vaswani et al., "Attention Is All You Need" (2017), section 3.2.2. Grouped-query attention
(Ainslie et al., "GQA", 2023) gives the keys and values only ``num_kv_heads`` heads, each shared by
``num_heads / num_kv_heads`` query heads; ``num_kv_heads = 1`` is multi-query attention (Shazeer,
"Fast Transformer Decoding: One Write-Head is All You Need", 2019).

Weights in :func:`multihead_attention` follow the lesson's math, ``X W`` with ``W`` of shape
(in, out); :class:`MultiHeadAttention` holds ``nn.Linear`` layers (weight (out, in), ``x W^T``),
the layout of ``torch.nn.MultiheadAttention``, whose parameters it can load.

Mask polarity, as everywhere in course_lib: a boolean mask is **True where a key takes part**. This
is the opposite of ``nn.MultiheadAttention``, where a True in ``key_padding_mask`` or in a boolean
``attn_mask`` means *ignore*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.dot_product import attention_weights
from course_lib.masks import causal_mask

__all__ = ["split_heads", "merge_heads", "multihead_attention", "MultiHeadAttention"]


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
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    n_q: int,
    n_k: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """All masks as one float mask (0 = takes part, -inf = masked), broadcastable to (B, H, Lq, Lk)."""
    bias = None

    def add(mask: torch.Tensor) -> None:
        nonlocal bias
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, float("-inf"))
        elif not mask.is_floating_point():
            raise TypeError(
                f"masks must be boolean (True = takes part) or float (added to the scores), got {mask.dtype}."
            )
        bias = mask.to(dtype) if bias is None else bias + mask.to(dtype)

    if key_padding_mask is not None:
        if key_padding_mask.dim() != 2 or key_padding_mask.shape[-1] != n_k:
            raise ValueError(
                f"key_padding_mask must be (B, Lk) = (B, {n_k}), got {tuple(key_padding_mask.shape)}."
            )
        add(key_padding_mask[:, None, None, :])  # (B, 1, 1, Lk): same keys for every head and query
    if attn_mask is not None:
        add(attn_mask)  # (Lq, Lk) or (B, H, Lq, Lk)
    if is_causal:
        add(causal_mask(n_q, n_k, device=device))
    return bias


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
    key_padding_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    average_attn_weights: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Multi-head (or grouped-query) attention with explicit weight matrices, in the lesson's math.

    Equation (H = ``num_heads``, D = E / H)::

        Q = query W_q + b_q,  K = key W_k + b_k,  V = value W_v + b_v
        head_h = softmax(Q_h K_g(h)^T / sqrt(D) + mask) V_g(h),   g(h) = h // (H / H_kv)
        output = concat(head_1, ..., head_H) W_o + b_o

    With ``num_kv_heads`` H_kv < H (grouped-query attention), K and V have H_kv heads and each is
    shared by H / H_kv consecutive query heads; H_kv = H is ordinary multi-head attention.

    Masks (combined; all broadcast to (B, H, Lq, Lk)):
        * ``key_padding_mask`` (B, Lk), boolean: **True = the key takes part**, False = padding
          (the opposite of ``nn.MultiheadAttention``); or float, added to the scores.
        * ``attn_mask`` (Lq, Lk) or (B, H, Lq, Lk): boolean (True = takes part) or float (added).
        * ``is_causal``: query i attends keys j <= i (top-left aligned).
        A query with every key masked gets zero output from its heads (torch gives NaN).

    Dropout with probability ``dropout_p`` acts on the attention weights, as in torch; pass 0 at
    evaluation time.

    Shapes:
        query: (B, Lq, E); key: (B, Lk, E_k); value: (B, Lk, E_v).
        W_q: (E, E); W_k: (E_k, H_kv * D); W_v: (E_v, H_kv * D); W_o: (E, E); biases: (out,).
        result: ``(output, weights)``, output (B, Lq, E); weights None unless ``need_weights``:
        then (B, Lq, Lk) averaged over heads, or (B, H, Lq, Lk) with ``average_attn_weights=False``.

    Reference: Vaswani et al. (2017), section 3.2.2; Ainslie et al. (2023) for GQA.

    >>> E, H = 4, 2
    >>> x = torch.randn(1, 3, E)
    >>> I = torch.eye(E)
    >>> out, w = multihead_attention(x, x, x, I, I, I, I, H, need_weights=True, average_attn_weights=False)
    >>> out.shape, w.shape
    (torch.Size([1, 3, 4]), torch.Size([1, 2, 3, 3]))
    """
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise ValueError(
            f"query, key and value must be batch-first (B, L, E); got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(value.shape)}."
        )
    embed_dim = W_q.shape[-1]
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if embed_dim % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"num_heads = {num_heads} must divide the width E = {embed_dim}, and num_kv_heads = "
            f"{num_kv_heads} must divide num_heads."
        )
    q = split_heads(F.linear(query, W_q.T, b_q), num_heads)  # (B, H, Lq, D)
    k = split_heads(F.linear(key, W_k.T, b_k), num_kv_heads)  # (B, H_kv, Lk, D)
    v = split_heads(F.linear(value, W_v.T, b_v), num_kv_heads)  # (B, H_kv, Lk, D)
    mask = _additive_mask(key_padding_mask, attn_mask, is_causal, q.shape[-2], k.shape[-2], q.dtype, q.device)
    weights = attention_weights(q, k, mask, enable_gqa=num_kv_heads != num_heads)  # (B, H, Lq, Lk)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    v = v.repeat_interleave(num_heads // num_kv_heads, dim=-3)  # (B, H, Lk, D): head h reads group h // g
    output = F.linear(merge_heads(weights @ v), W_o.T, b_o)  # (B, Lq, E)
    if not need_weights:
        return output, None
    return output, weights.mean(dim=1) if average_attn_weights else weights


class MultiHeadAttention(nn.Module):
    r"""Batch-first multi-head attention, self or cross, with grouped-query heads; loads torch's.

    ``forward(query, key=None, value=None, ...)``: key and value default to query
    (self-attention). The computation is :func:`multihead_attention` with the weights of four
    ``nn.Linear`` layers ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``.

    Args:
        embed_dim: E, the model width (of queries and outputs).
        num_heads: H; E must be divisible by H. Each head has D = E / H features.
        num_kv_heads: H_kv heads for keys and values (grouped-query attention); default H.
        kdim, vdim: widths of the key and value inputs (cross-attention); default E.
        bias: whether the four projections have a bias.
        dropout: dropout probability on the attention weights, in training mode only.

    Masks (see :func:`multihead_attention`): boolean masks are **True where a key takes part**,
    the opposite of ``nn.MultiheadAttention``'s ``key_padding_mask`` and boolean ``attn_mask``.

    Shapes:
        query: (B, Lq, E); key: (B, Lk, kdim); value: (B, Lk, vdim).
        key_padding_mask: (B, Lk); attn_mask: (Lq, Lk) or (B, H, Lq, Lk).
        result: ``(output (B, Lq, E), weights)``; weights as in torch: (B, Lq, Lk) averaged
        over heads, (B, H, Lq, Lk) with ``average_attn_weights=False``, None unless
        ``need_weights`` (torch's default is True; ours is False).

    Reference: Vaswani et al. (2017), section 3.2.2; ``torch.nn.MultiheadAttention``.

    >>> torch_mha = nn.MultiheadAttention(8, 2, batch_first=True)
    >>> mha = MultiHeadAttention.from_torch(torch_mha)
    >>> x = torch.randn(2, 5, 8)
    >>> torch.allclose(mha(x)[0], torch_mha(x, x, x)[0], atol=1e-6)
    True
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
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        return multihead_attention(
            query, key, value,
            self.q_proj.weight.T, self.k_proj.weight.T, self.v_proj.weight.T, self.out_proj.weight.T,
            self.num_heads,
            b_q=self.q_proj.bias, b_k=self.k_proj.bias, b_v=self.v_proj.bias, b_o=self.out_proj.bias,
            num_kv_heads=self.num_kv_heads, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
            is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights, average_attn_weights=average_attn_weights,
        )

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A MultiHeadAttention with the parameters (copied) of torch's ``nn.MultiheadAttention``.

        torch packs W_Q, W_K, W_V into ``in_proj_weight`` (3E, E), rows in that order, when kdim
        and vdim equal E, and keeps ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``
        otherwise; its biases are ``in_proj_bias`` (3E,) and ``out_proj.bias``. Its
        ``batch_first`` does not matter here: this module is always batch-first.
        """
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported: they append extra keys.")
        bias = module.in_proj_bias is not None
        weight = module.out_proj.weight
        mha = cls(module.embed_dim, module.num_heads, kdim=module.kdim, vdim=module.vdim, bias=bias,
                  dropout=module.dropout, device=weight.device, dtype=weight.dtype)
        mha.load_torch_parameters(module)
        return mha

    @torch.no_grad()
    def load_torch_parameters(self, module: nn.MultiheadAttention) -> None:
        """Copy the parameters of torch's ``nn.MultiheadAttention`` into this module (see from_torch)."""
        if self.num_kv_heads != self.num_heads:
            raise ValueError("torch's nn.MultiheadAttention has no grouped-query heads: num_kv_heads must be num_heads.")
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
