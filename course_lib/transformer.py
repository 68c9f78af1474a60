"""A small transformer encoder with pre-LayerNorm blocks, for tasks on short token sequences.

    h_0 = embed(tokens) + PE                        (B, L, E), PE sinusoidal (positional.py)
    h   = h + MHA(LN(h))                            each block: attention, then
    h   = h + FFN(LN(h))                            a position-wise feed-forward network
    logits = LN(h_n) W_out                          (B, L, vocab)

Pre-LN (the normalisation inside the residual branch) trains without learning-rate warm-up
(Xiong et al., "On Layer Normalization in the Transformer Architecture", 2020); the original
Transformer normalised after the residual sum (Vaswani et al., 2017). Train it with
:func:`course_kit.training.train_token_classifier`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from course_lib.multihead import MultiHeadAttention
from course_lib.positional import sinusoidal_encoding

__all__ = ["TransformerConfig", "TransformerBlock", "TinyTransformer"]


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    max_len: int
    d_model: int = 32
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 64
    causal: bool = False  # True: every position sees only itself and the positions before it
    positional: bool = True  # False: no positional encoding (the model is permutation equivariant)


class TransformerBlock(nn.Module):
    """One pre-LN block: x + MHA(LN(x)), then + FFN(LN(.)). Shapes: (B, L, E) -> (B, L, E)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.causal = config.causal
        self.norm1, self.norm2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        self.attention = MultiHeadAttention(config.d_model, config.num_heads)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.ReLU(), nn.Linear(config.d_ff, config.d_model))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output (B, L, E) and its attention weights per head (B, H, L, L)."""
        h = self.norm1(x)
        attended, weights = self.attention(h, is_causal=self.causal, need_weights=True, average_attn_weights=False)
        x = x + attended
        return x + self.feed_forward(self.norm2(x)), weights


class TinyTransformer(nn.Module):
    r"""Token embeddings + sinusoidal positions, ``num_layers`` pre-LN blocks, a final LN and a linear head.

    ``forward(tokens)`` returns logits (B, L, vocab); ``attention_maps(tokens)`` the weights of
    every layer and head, (num_layers, B, H, L, L).

    Shapes:
        tokens: (B, L) int64 with L <= max_len. result: (B, L, vocab_size).

    >>> torch.manual_seed(0) and None
    >>> model = TinyTransformer(TransformerConfig(vocab_size=10, max_len=8))
    >>> model(torch.zeros(2, 8, dtype=torch.long)).shape, model.attention_maps(torch.zeros(2, 8, dtype=torch.long)).shape
    (torch.Size([2, 8, 10]), torch.Size([2, 2, 4, 8, 8]))
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.register_buffer("positions", sinusoidal_encoding(config.max_len, config.d_model), persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def _run(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = tokens.shape[-1]
        if length > self.config.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len = {self.config.max_len}.")
        h = self.embedding(tokens)  # (B, L, E)
        if self.config.positional:
            h = h + self.positions[:length]
        maps = []
        for block in self.blocks:
            h, weights = block(h)
            maps.append(weights)
        return self.head(self.final_norm(h)), torch.stack(maps)  # (B, L, V), (layers, B, H, L, L)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run(tokens)[0]

    @torch.no_grad()
    def attention_maps(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights of every layer and head: (num_layers, B, H, L, L)."""
        return self._run(tokens)[1]
