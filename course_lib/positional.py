"""Positional information: attention is permutation equivariant, so the order must be put in.

Two ways, both with the frequencies theta_i = base^(-2i/d), i = 0 .. d/2 - 1:

* sinusoidal encoding (Vaswani et al., 2017, section 3.5): a vector per position, *added* to the
  token embeddings;
* rotary embedding, RoPE (Su et al., "RoFormer", 2021): rotate each pair of features of the
  queries and keys by the angle p * theta_i. Then q_m . k_n depends on the positions only through
  the offset m - n.

Pairing convention: feature pairs are **interleaved**, (x[2i], x[2i+1]), as in the RoFormer paper
(eq. 34) and in ``sinusoidal_encoding``'s sin/cos columns. (GPT-NeoX and Hugging Face Llama pair
x[i] with x[i + d/2] instead: the same idea with the features permuted, not interchangeable.)
"""

from __future__ import annotations

import torch

__all__ = ["sinusoidal_encoding", "rope_angles", "apply_rope"]


def _even_dim(d: int, name: str) -> None:
    if d < 2 or d % 2:
        raise ValueError(f"{name} must be even (features come in sin/cos or rotation pairs), got {d}.")


def sinusoidal_encoding(
    length: int, d_model: int, *, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""The sinusoidal positional encoding of Vaswani et al. (2017), one row per position.

    Equation (p = position, i = 0 .. d/2 - 1)::

        PE[p, 2i]     = sin(p / base^(2i / d))
        PE[p, 2i + 1] = cos(p / base^(2i / d))

    Column pair i is a clock turning at frequency base^(-2i/d): the first columns turn fast, the
    last slowly, so positions stay distinguishable over long sequences. PE[p + k] is a rotation of
    PE[p] that depends only on k (section 3.5).

    Shapes:
        length: number of positions L; d_model: even width d.
        result: (L, d), in ``dtype``; entries in [-1, 1].

    Reference: Vaswani et al., "Attention Is All You Need" (2017), section 3.5.

    >>> sinusoidal_encoding(2, 4)
    tensor([[0.0000, 1.0000, 0.0000, 1.0000],
            [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    _even_dim(d_model, "d_model")
    angles = rope_angles(torch.arange(length, dtype=torch.float64), d_model, base=base)  # (L, d/2)
    encoding = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (L, d/2, 2)
    return encoding.reshape(length, d_model).to(dtype)  # interleave: columns sin_0, cos_0, sin_1, ...


def rope_angles(positions: torch.Tensor, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    r"""Rotation angles p * theta_i of every position and feature pair, theta_i = base^(-2i / dim).

    Shapes:
        positions: (...,) positions (integers or floats).
        result: (..., dim / 2), in float64 for integer positions, else the positions' dtype.

    >>> rope_angles(torch.tensor([0, 1, 2]), dim=4)
    tensor([[0.0000, 0.0000],
            [1.0000, 0.0100],
            [2.0000, 0.0200]], dtype=torch.float64)
    """
    _even_dim(dim, "dim")
    positions = positions if positions.is_floating_point() else positions.double()
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    return positions[..., None] * theta.to(positions.dtype)  # (..., dim/2)


def apply_rope(x: torch.Tensor, positions: torch.Tensor | None = None, *, base: float = 10000.0) -> torch.Tensor:
    r"""Rotary position embedding: rotate each interleaved feature pair of x by its position's angle.

    Equation (pair i = (x[2i], x[2i+1]), angle a = p * theta_i, theta_i = base^(-2i / d))::

        out[2i]     = x[2i] cos a - x[2i+1] sin a
        out[2i + 1] = x[2i] sin a + x[2i+1] cos a

    Applied to queries and keys (never to values), it makes the score of a query at position m
    and a key at position n a function of m - n only: R_m^T R_n = R_{n-m}. Rotations preserve
    norms, so |out| = |x| at every position.

    Shapes:
        x: (..., L, d) with d even, floating point.
        positions: (L,) or broadcastable to (..., L), integers or floats; default 0, 1, ..., L - 1.
        Tokens that come after T_old cached ones sit at T_old, T_old + 1, ...: pass
        ``positions=torch.arange(T_old, T_old + L)`` (see :func:`course_lib.cached_causal_attention`).
        result: same shape and dtype as x.

    Reference: Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding"
    (2021), eq. (34).

    >>> apply_rope(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # position 1 turns (1, 0) by 1 radian
    tensor([[1.0000, 0.0000],
            [0.5403, 0.8415]])
    >>> apply_rope(torch.tensor([[1.0, 0.0]]), positions=torch.tensor([1]))  # the same token at position 1
    tensor([[0.5403, 0.8415]])
    """
    if not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be a floating-point (..., L, d) tensor, got {x.dtype} {tuple(x.shape)}.")
    length, dim = x.shape[-2:]
    _even_dim(dim, "the last dim of x")
    positions = torch.arange(length, device=x.device) if positions is None else positions.to(x.device)
    angles = rope_angles(positions, dim, base=base)  # (..., L, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., L, d/2) each: the two members of every pair
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)  # (..., L, d/2, 2)
    return rotated.flatten(-2)  # interleave back to (..., L, d)
