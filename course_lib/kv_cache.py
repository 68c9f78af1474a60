"""Causal self-attention with a key/value cache: generate one token at a time without recomputing.

When a decoder generates token t, the keys and values of tokens 0 .. t-1 are the same as in the
previous step (causality: they never see token t). Keeping them in a cache makes each step cost
O(t) instead of recomputing all t projections and an O(t^2) attention. Two things must be right for
cached steps to give what one causal pass over the whole sequence gives:

* positions: with rotary embeddings (RoPE; Su et al., "RoFormer", 2021) the query and key of new
  token i are rotated at its *absolute* position T_old + i, T_old being the number of tokens in the
  cache; the cache holds keys already rotated (a key's rotation depends on its own position only,
  so it never changes);
* the causal mask, aligned bottom-right: new token i sees the T_old cached keys and the new keys
  0 .. i. (``is_causal=True`` in torch aligns it top-left: right only when the cache is empty.)

The price is memory:

    cache bytes = 2 (K and V) x layers x batch x tokens x num_kv_heads x head_dim x bytes per number

which grouped-query attention shrinks by num_heads / num_kv_heads (Ainslie et al., 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.dot_product import scaled_dot_product_attention
from course_lib.multihead import MultiHeadAttention, merge_heads, split_heads
from course_lib.positional import apply_rope

__all__ = ["KVCache", "CachedAttention", "cached_causal_attention", "CausalSelfAttention", "kv_cache_bytes"]


def kv_cache_bytes(
    num_layers: int, num_kv_heads: int, head_dim: int, num_tokens: int, *, batch_size: int = 1,
    bytes_per_element: int = 2,
) -> int:
    r"""Bytes a key/value cache holds: 2 x layers x batch x tokens x num_kv_heads x head_dim x bytes.

    Shapes: plain integers in, an int out. ``bytes_per_element`` is 2 for float16/bfloat16.

    Reference: Pope et al., "Efficiently Scaling Transformer Inference" (2022);
    Ainslie et al., "GQA" (2023).

    >>> kv_cache_bytes(num_layers=32, num_kv_heads=32, head_dim=128, num_tokens=4096) / 2**30  # GiB
    2.0
    """
    return 2 * num_layers * batch_size * num_tokens * num_kv_heads * head_dim * bytes_per_element


@dataclass
class KVCache:
    """The keys (rotated, with RoPE) and values of the tokens seen so far, (B, H_kv, T, D) each.

    :class:`CausalSelfAttention` fills it; ``len(cache)`` is T, the position of the next token.
    """

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]


class CachedAttention(NamedTuple):
    output: torch.Tensor  # (B, T_new, E)
    k_cache: torch.Tensor  # (B, H_kv, T_old + T_new, D), keys rotated at their positions when RoPE is on
    v_cache: torch.Tensor  # (B, H_kv, T_old + T_new, D)


def cached_causal_attention(
    x: torch.Tensor,
    W_q: torch.Tensor,
    W_k: torch.Tensor,
    W_v: torch.Tensor,
    W_o: torch.Tensor,
    num_heads: int,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    b_q: torch.Tensor | None = None,
    b_k: torch.Tensor | None = None,
    b_v: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    num_kv_heads: int | None = None,
    rope: bool = True,
    rope_base: float = 10000.0,
) -> CachedAttention:
    r"""Causal self-attention of new tokens, given the cached keys and values of the T_old before them.

    Equation (new token i sits at absolute position p_i = T_old + i; weights in (out, in) layout)::

        q_i = R(p_i) (x_i W_q^T + b_q),   k_i = R(p_i) (x_i W_k^T + b_k),   v_i = x_i W_v^T + b_v
        K = [k_cache; k_0 .. k_{T_new-1}],  V = [v_cache; v_0 .. v_{T_new-1}]     (B, H_kv, T_old + T_new, D)
        out_i = softmax(q_i K_{0 .. p_i}^T / sqrt(D)) V_{0 .. p_i}, heads merged, then W_o^T + b_o

    R(p) is the rotary embedding at position p (:func:`course_lib.apply_rope`, RoFormer's
    interleaved pairs) with ``rope=True``, the identity with ``rope=False``. The cache holds the
    rotated keys. The causal mask is aligned bottom-right: the last new token sees every key.
    With an empty cache (T_old = 0) this is one causal pass of multi-head self-attention (with
    RoPE); feeding tokens one at a time, or in chunks, with the returned caches gives the same
    outputs as one call on the whole sequence.

    Shapes:
        x: (B, T_new, E); W_q, W_o: (E, E); W_k, W_v: (H_kv * D, E), in torch's (out, in) layout.
        k_cache, v_cache: (B, H_kv, T_old, D), T_old may be 0.
        result: ``(output (B, T_new, E), k_cache (B, H_kv, T_old + T_new, D), v_cache likewise)``.

    Reference: Pope et al., "Efficiently Scaling Transformer Inference" (2022); Su et al.,
    "RoFormer" (2021) for RoPE.

    >>> E, H = 4, 2
    >>> W = torch.eye(E)
    >>> empty = torch.zeros(1, H, 0, E // H)
    >>> x = torch.randn(1, 3, E)
    >>> whole = cached_causal_attention(x, W, W, W, W, H, empty, empty)
    >>> first = cached_causal_attention(x[:, :2], W, W, W, W, H, empty, empty)  # a prompt of 2 tokens,
    >>> last = cached_causal_attention(x[:, 2:], W, W, W, W, H, first.k_cache, first.v_cache)  # then 1
    >>> torch.allclose(torch.cat([first.output, last.output], dim=1), whole.output, atol=1e-6), last.k_cache.shape
    (True, torch.Size([1, 2, 3, 2]))
    """
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    q = split_heads(F.linear(x, W_q, b_q), num_heads)  # (B, H, T_new, D)
    k_new = split_heads(F.linear(x, W_k, b_k), num_kv_heads)  # (B, H_kv, T_new, D)
    v_new = split_heads(F.linear(x, W_v, b_v), num_kv_heads)
    if k_cache.shape[:-2] + k_cache.shape[-1:] != k_new.shape[:-2] + k_new.shape[-1:] or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must be (B, H_kv, T_old, D) = ({k_new.shape[0]}, {num_kv_heads}, T_old, "
            f"{k_new.shape[-1]}), the new keys' shape but for the tokens; got {tuple(k_cache.shape)} and "
            f"{tuple(v_cache.shape)}."
        )
    t_old, t_new = k_cache.shape[-2], x.shape[-2]
    if rope:  # the new tokens sit after the cached ones: absolute positions T_old .. T_old + T_new - 1
        positions = torch.arange(t_old, t_old + t_new, device=x.device)
        q, k_new = apply_rope(q, positions, base=rope_base), apply_rope(k_new, positions, base=rope_base)
    k = torch.cat([k_cache, k_new], dim=-2)  # (B, H_kv, T_old + T_new, D)
    v = torch.cat([v_cache, v_new], dim=-2)
    # bottom-right causal mask: new token i (position T_old + i) sees keys j <= T_old + i
    mask = torch.ones(t_new, t_old + t_new, dtype=torch.bool, device=x.device).tril(diagonal=t_old)
    heads = scaled_dot_product_attention(q, k, v, mask, enable_gqa=num_kv_heads != num_heads)  # (B, H, T_new, D)
    return CachedAttention(F.linear(merge_heads(heads), W_o, b_o), k, v)


class CausalSelfAttention(nn.Module):
    r"""Causal multi-head (or grouped-query) self-attention with RoPE that can decode with a :class:`KVCache`.

    ``forward(x, cache=None)``: without a cache, causal self-attention over x (positions 0 ..
    L - 1); with one, x holds the next tokens, at positions ``len(cache)`` onwards: their keys and
    values are appended to the cache, and they attend to everything cached. The computation is
    :func:`cached_causal_attention`; the parameters are those of a :class:`MultiHeadAttention`
    (``.attention``), so torch's ``nn.MultiheadAttention`` loads into it.

    Args:
        embed_dim, num_heads, num_kv_heads, bias: as in :class:`MultiHeadAttention`.
        rope: rotate queries and keys by their positions (RoPE); False: no positions here.
        rope_base: the base of RoPE's frequencies, base^(-2i/D).

    Shapes:
        x: (B, T_new, E). result: (B, T_new, E).

    >>> layer = CausalSelfAttention(8, num_heads=4, num_kv_heads=2)
    >>> x = torch.randn(1, 5, 8)
    >>> cache = KVCache()
    >>> steps = torch.cat([layer(x[:, t:t + 1], cache) for t in range(5)], dim=1)
    >>> torch.allclose(steps, layer(x), atol=1e-6), len(cache)
    (True, 5)
    """

    def __init__(self, embed_dim: int, num_heads: int, *, num_kv_heads: int | None = None, bias: bool = True,
                 rope: bool = True, rope_base: float = 10000.0, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.rope, self.rope_base = rope, rope_base
        self.attention = MultiHeadAttention(embed_dim, num_heads, num_kv_heads=num_kv_heads, bias=bias,
                                            device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        mha = self.attention
        empty = x.new_zeros(x.shape[0], mha.num_kv_heads, 0, mha.head_dim)
        k_old, v_old = (empty, empty) if cache is None or len(cache) == 0 else (cache.keys, cache.values)
        out, k, v = cached_causal_attention(
            x, mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight, mha.out_proj.weight, mha.num_heads,
            k_old, v_old, b_q=mha.q_proj.bias, b_k=mha.k_proj.bias, b_v=mha.v_proj.bias, b_o=mha.out_proj.bias,
            num_kv_heads=mha.num_kv_heads, rope=self.rope, rope_base=self.rope_base,
        )
        if cache is not None:
            cache.keys, cache.values = k, v
        return out
