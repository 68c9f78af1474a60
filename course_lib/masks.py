"""Boolean attention masks: which keys each query may look at.

Polarity in course_lib: **True = the key takes part** in attention, False =
it is masked out (only parameters named after ``nn.MultiheadAttention``'s
masks keep torch's opposite meaning). This is the polarity of the boolean
``attn_mask`` of ``torch.nn.functional.scaled_dot_product_attention``, and
the opposite of ``nn.MultiheadAttention``'s ``key_padding_mask``.
"""

from __future__ import annotations

import operator

import torch

__all__ = ["causal_mask", "padding_mask"]


def causal_mask(
    n_q: int, n_k: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Causal mask: query i may attend key j only if j <= i.

    Equation::

        mask[i, j] = (j <= i)

    The mask is aligned top-left, as ``is_causal=True`` in
    ``F.scaled_dot_product_attention``: query 0 sees key 0, whatever n_q and
    n_k are. (With n_q < n_k the last keys are seen by nobody; with
    n_q > n_k the last queries see every key.)

    Mask polarity: True = the key takes part, False = masked out.

    Shapes:
        n_q: number of queries Lq; n_k: number of keys Lk (defaults to n_q).
        result: boolean (n_q, n_k), lower-triangular. It broadcasts against
        scores (..., Lq, Lk).

    Reference: Vaswani et al., "Attention Is All You Need" (2017),
    section 3.2.3 (masking out illegal connections in the decoder).

    >>> causal_mask(3)
    tensor([[ True, False, False],
            [ True,  True, False],
            [ True,  True,  True]])
    """
    n_q = _length(n_q, "n_q")
    n_k = n_q if n_k is None else _length(n_k, "n_k")
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    r"""Padding mask: in sequence b, only the first ``lengths[b]`` positions are real.

    Equation::

        mask[b, j] = (j < lengths[b])

    Mask polarity: True = a valid key that takes part, False = padding,
    masked out.

    Shapes:
        lengths: 1-D integer tensor (B,), each in [0, max_len].
        max_len: the padded length Lk.
        result: boolean (B, max_len), on the device of ``lengths``. To use
        it with scores (B, H, Lq, Lk), index it as ``mask[:, None, None, :]``
        (shape (B, 1, 1, Lk)) so that it broadcasts over heads and queries.

    Reference: d2l.ai, section 11.3 "Attention Scoring Functions" (valid
    lengths in the masked softmax).

    >>> padding_mask(torch.tensor([1, 3]), max_len=4)
    tensor([[ True, False, False, False],
            [ True,  True,  True, False]])
    """
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(
            f"lengths must be a 1-D integer tensor (B,), got {type(lengths).__name__}; "
            f"wrap it, e.g. torch.tensor(lengths)."
        )
    if lengths.dim() != 1:
        raise ValueError(
            f"lengths must be 1-D with one length per sequence (B,), "
            f"got shape {tuple(lengths.shape)}."
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(
            f"lengths must hold integers, got dtype {lengths.dtype}; use lengths.long()."
        )
    max_len = _length(max_len, "max_len")
    if (lengths < 0).any():
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}.")
    if (lengths > max_len).any():
        raise ValueError(
            f"every length must be <= max_len = {max_len}, got {lengths.tolist()}; "
            f"a sequence cannot be longer than the padded length."
        )
    positions = torch.arange(max_len, device=lengths.device)  # (Lk,)
    return positions[None, :] < lengths[:, None]  # (1, Lk) < (B, 1) -> (B, Lk)


def _length(n: int, name: str) -> int:
    """``n`` as a Python int, or a clear error if it is not a usable length."""
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)  # accepts int, numpy ints, 0-d integer tensors
    except TypeError:
        raise TypeError(f"{name} must be an int (a sequence length), got {n!r}.") from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0 (a sequence length), got {n}.")
    return n

def check_mask_broadcasts(mask: torch.Tensor, scores: torch.Tensor, name: str) -> None:
    """Raise a ValueError that says how, unless ``mask`` broadcasts to ``scores`` (it may be smaller than
    the scores, never larger or misaligned); ``name`` names it in the message."""
    try:
        shape = torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        shape = None
    if shape != scores.shape:
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"of shape {tuple(scores.shape)} = (..., Lq, Lk). Its dims, aligned from the right, "
            f"must equal the scores' or be 1: e.g. (Lq, Lk), or (B, 1, 1, Lk) for a padding "
            f"mask over (B, H, Lq, Lk) scores."
        )
