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

from dataclasses import KW_ONLY, dataclass

import torch
from torch import nn

from course_lib.multihead import MultiHeadAttention
from course_lib.positional import sinusoidal_encoding

__all__ = ["TransformerConfig", "TransformerBlock", "TinyTransformer"]


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    max_len: int
    _: KW_ONLY  # the options below are named in every call
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False, is_causal=self.causal).attn_output
        return x + self.feed_forward(self.norm2(x))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The weights of this block's attention on its input x, per head: (B, H, L, L)."""
        h = self.norm1(x)
        return self.attention(h, h, h, average_attn_weights=False, is_causal=self.causal).attn_weights


class TinyTransformer(nn.Module):
    r"""Token embeddings + sinusoidal positions, ``num_layers`` pre-LN blocks, a final LN and a linear head.

    ``forward(tokens)`` returns logits (B, L, vocab) and computes no attention map;
    ``attention_maps(tokens)`` returns the weights of every layer and head, (num_layers, B, H, L, L).

    Shapes:
        tokens: (B, L) int64 with L <= max_len. result: (B, L, vocab_size).

    >>> torch.manual_seed(0) and None
    >>> model = TinyTransformer(TransformerConfig(vocab_size=10, max_len=8))
    >>> tokens = torch.zeros(2, 8, dtype=torch.long)
    >>> model(tokens).shape, model.attention_maps(tokens).shape
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

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings plus the positions' encodings: (B, L) -> (B, L, E)."""
        length = tokens.shape[-1]
        if length > self.config.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len = {self.config.max_len}.")
        h = self.embedding(tokens)  # (B, L, E)
        return h + self.positions[:length] if self.config.positional else h

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(self.final_norm(h))  # (B, L, V)

    @torch.no_grad()
    def attention_maps(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights of every layer and head: (num_layers, B, H, L, L). Computed only here."""
        h, maps = self.embed(tokens), []
        for block in self.blocks:
            maps.append(block.attention_weights(h))
            h = block(h)
        return torch.stack(maps)
