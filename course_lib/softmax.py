"""Softmax, and softmax over the positions a mask lets take part.

Lesson: from scores to attention weights. ``softmax`` is the numerically
stable textbook function; ``masked_softmax`` is what attention needs, where
some keys (padding, the future) must get exactly zero weight.
"""

from __future__ import annotations

import torch

from course_lib.masks import check_mask_broadcasts

__all__ = ["softmax", "masked_softmax"]


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Numerically stable softmax of ``x`` along ``dim``.

    Equation (for a row x along ``dim``)::

        softmax(x)_i = exp(x_i - max_j x_j) / sum_j exp(x_j - max_j x_j)

    Subtracting the row maximum changes nothing mathematically (softmax is
    invariant to adding a constant to every entry) but keeps every exponent
    <= 0, so ``exp`` cannot overflow even for logits of size 1e4.

    Shapes:
        x: any shape (..., n, ...), floating point.
        result: same shape and dtype as ``x``; entries along ``dim`` are
        >= 0 and sum to 1.

    Masking: none. A row whose entries are all ``-inf`` gives NaN, exactly
    like ``torch.softmax`` (0 / 0). To give positions zero weight, use
    :func:`masked_softmax`, which returns zeros for a row with nothing left.

    Reference: ``torch.softmax``; Goodfellow, Bengio & Courville, *Deep
    Learning* (2016), section 4.1 on overflow and the max trick.

    >>> softmax(torch.tensor([1.0, 2.0, 3.0]))
    tensor([0.0900, 0.2447, 0.6652])
    """
    _check_floating(x, "x")
    # The shift does not change the result, so no gradient needs to flow through it.
    x_max = x.amax(dim=dim, keepdim=True).detach()
    exp_x = torch.exp(x - x_max)
    return exp_x / exp_x.sum(dim=dim, keepdim=True)


def masked_softmax(
    scores: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1
) -> torch.Tensor:
    r"""Softmax of ``scores`` along ``dim`` over the positions where ``mask`` is True.

    Mask polarity: **True = the position takes part**, False = it gets
    probability exactly 0. This is the convention of
    ``torch.nn.functional.scaled_dot_product_attention``'s boolean
    ``attn_mask`` (and the opposite of ``nn.MultiheadAttention``'s
    ``key_padding_mask``, where True means "ignore").

    Equation (for a row s along ``dim`` with mask m)::

        p_i = m_i * exp(s_i - c) / sum_j m_j * exp(s_j - c),   c = max_{j: m_j} s_j

    A score of ``-inf`` counts as masked too. A row where nothing takes part
    (every m_j False, or every score -inf) gives all zeros, not NaN, and a
    zero gradient: this is what ``F.scaled_dot_product_attention`` returns
    for such rows.

    Shapes:
        scores: (..., n, ...) floating point; softmax is taken along ``dim``.
        mask: boolean, broadcastable to ``scores.shape`` (e.g. (Lq, Lk)
        against (B, H, Lq, Lk) scores, or a padding mask (B, 1, 1, Lk)),
        or None for no masking.
        result: same shape and dtype as ``scores``; each row along ``dim``
        sums to 1, or to 0 when the whole row is masked.

    Reference: d2l.ai, section 11.3 "Attention Scoring Functions" (masked
    softmax operation); PyTorch docs of ``F.scaled_dot_product_attention``.

    >>> scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    >>> mask = torch.tensor([[True, True, False], [False, False, False]])
    >>> masked_softmax(scores, mask)
    tensor([[0.2689, 0.7311, 0.0000],
            [0.0000, 0.0000, 0.0000]])
    """
    _check_floating(scores, "scores")
    if mask is not None:
        _check_boolean_mask(mask, scores)
        # masked_fill (not multiplication) so a masked score of inf or NaN cannot leak through.
        scores = scores.masked_fill(~mask, float("-inf"))

    s_max = scores.amax(dim=dim, keepdim=True).detach()
    # A fully masked row has max -inf; shift it by 0 instead so exp gives 0, not NaN.
    s_max = s_max.masked_fill(s_max == float("-inf"), 0.0)
    exp_s = torch.exp(scores - s_max)  # masked positions: exp(-inf) = 0
    total = exp_s.sum(dim=dim, keepdim=True)
    # A fully masked row sums to 0; dividing its zeros by 1 keeps them 0.
    return exp_s / total.masked_fill(total == 0, 1.0)


def _check_floating(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}. "
            f"Convert it first, e.g. {name}.float()."
        )


def _check_boolean_mask(mask: torch.Tensor, scores: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(
            f"mask must be a boolean tensor (True = takes part, False = masked out), "
            f"got {got}. If you hold 0/1 values, use mask.bool(); if you hold an "
            f"additive float mask (0 / -inf), add it to the scores instead."
        )
    check_mask_broadcasts(mask, scores, "mask")

