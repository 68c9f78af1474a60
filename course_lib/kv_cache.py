"""Causal self-attention with a key/value cache: generate one token at a time without recomputing.

When a decoder generates token t, the keys and values of tokens 0 .. t-1 are the same as in the
previous step (causality: they never see token t). Keeping them in a cache makes each step cost
O(t) instead of recomputing all t projections and an O(t^2) attention. The price is memory:

    cache bytes = 2 (K and V) x layers x batch x tokens x num_kv_heads x head_dim x bytes per number

which grouped-query attention shrinks by num_heads / num_kv_heads (Ainslie et al., 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.dot_product import scaled_dot_product_attention
from course_lib.multihead import MultiHeadAttention, merge_heads, split_heads

__all__ = ["KVCache", "cached_causal_attention", "CausalSelfAttention", "kv_cache_bytes"]


def kv_cache_bytes(
    num_layers: int, num_kv_heads: int, head_dim: int, num_tokens: int, batch_size: int = 1,
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
    """The keys and values of the tokens seen so far, (B, H_kv, T, D) each; T grows by appending."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' keys and values (B, H_kv, T_new, D); return all of them (B, H_kv, T, D)."""
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=-2)
            self.values = torch.cat([self.values, values], dim=-2)
        return self.keys, self.values


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Causal self-attention of new tokens, given the cached keys and values of the T_old before them.

    Equation (new token i sits at absolute position T_old + i)::

        K = [k_cache; x W_k + b_k],  V = [v_cache; x W_v + b_v]          (B, H_kv, T_old + T_new, D)
        out_i = softmax(q_i K_{0 .. T_old+i}^T / sqrt(D)) V_{0 .. T_old+i}, then heads merged, W_o

    The causal mask is aligned bottom-right: the last new token sees every key. With an empty
    cache (T_old = 0) this is ordinary causal multi-head self-attention; feeding tokens one at a
    time with the returned caches gives the same outputs as one call on the whole sequence.

    Shapes:
        x: (B, T_new, E); W_q, W_o: (E, E); W_k, W_v: (E, H_kv * D), in the lesson's (in, out) layout.
        k_cache, v_cache: (B, H_kv, T_old, D), T_old may be 0.
        result: (output (B, T_new, E), k_cache (B, H_kv, T_old + T_new, D), v_cache likewise).

    Reference: Pope et al., "Efficiently Scaling Transformer Inference" (2022).

    >>> E, H = 4, 2
    >>> W = torch.eye(E)
    >>> empty = torch.zeros(1, H, 0, E // H)
    >>> out, k, v = cached_causal_attention(torch.randn(1, 3, E), W, W, W, W, H, empty, empty)
    >>> out.shape, k.shape
    (torch.Size([1, 3, 4]), torch.Size([1, 2, 3, 2]))
    """
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    q = split_heads(F.linear(x, W_q.T, b_q), num_heads)  # (B, H, T_new, D)
    k = torch.cat([k_cache, split_heads(F.linear(x, W_k.T, b_k), num_kv_heads)], dim=-2)  # (B, H_kv, T, D)
    v = torch.cat([v_cache, split_heads(F.linear(x, W_v.T, b_v), num_kv_heads)], dim=-2)
    n_new, n_all = q.shape[-2], k.shape[-2]
    # query i (absolute position n_all - n_new + i) sees keys j <= n_all - n_new + i
    mask = torch.ones(n_new, n_all, dtype=torch.bool, device=x.device).tril(diagonal=n_all - n_new)
    heads = scaled_dot_product_attention(q, k, v, mask, enable_gqa=num_kv_heads != num_heads)  # (B, H, T_new, D)
    return F.linear(merge_heads(heads), W_o.T, b_o), k, v


class CausalSelfAttention(nn.Module):
    r"""Causal multi-head (or grouped-query) self-attention that can decode with a :class:`KVCache`.

    ``forward(x, cache=None)``: without a cache, causal self-attention over x; with one, x holds
    the next tokens, their keys and values are appended to the cache, and they attend to
    everything cached. The parameters are those of a :class:`MultiHeadAttention` (``.attention``).

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
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(embed_dim, num_heads, num_kv_heads=num_kv_heads, bias=bias,
                                            device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        mha = self.attention
        batch = x.shape[0]
        empty = x.new_zeros(batch, mha.num_kv_heads, 0, mha.head_dim)
        k_old, v_old = (empty, empty) if cache is None or len(cache) == 0 else (cache.keys, cache.values)
        out, k, v = cached_causal_attention(
            x, mha.q_proj.weight.T, mha.k_proj.weight.T, mha.v_proj.weight.T, mha.out_proj.weight.T,
            mha.num_heads, k_old, v_old, b_q=mha.q_proj.bias, b_k=mha.k_proj.bias, b_v=mha.v_proj.bias,
            b_o=mha.out_proj.bias, num_kv_heads=mha.num_kv_heads,
        )
        if cache is not None:
            cache.keys, cache.values = k, v
        return out
