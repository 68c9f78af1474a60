"""Nadaraya–Watson kernel regression: attention pooling before deep learning.

A prediction at a query q is an average of the training targets y_i, each
weighted by how close its key (input) x_i is to q. With a Gaussian kernel the
weights are a softmax over keys, which is attention with the score
-||q - k||^2 / (2 h^2) instead of a dot product.
"""

from __future__ import annotations

import torch

from course_lib.softmax import softmax

__all__ = ["nadaraya_watson", "nadaraya_watson_weights"]


def nadaraya_watson_weights(
    queries: torch.Tensor, keys: torch.Tensor, bandwidth: float | torch.Tensor = 1.0
) -> torch.Tensor:
    r"""Gaussian-kernel attention weights of Nadaraya–Watson regression.

    Equation (h = ``bandwidth``)::

        alpha(q_i, k_j) = exp(-||q_i - k_j||^2 / (2 h^2)) / sum_l exp(-||q_i - k_l||^2 / (2 h^2))
                        = softmax_j(-||q_i - k_j||^2 / (2 h^2))

    The Gaussian's normalising constant cancels in the ratio. A small h
    makes each query look only at its nearest keys; a large h averages over
    all of them.

    Shapes:
        queries: (Lq,) for scalar inputs (the lesson's 1-D regression), or
        (..., Lq, D) for D-dimensional inputs.
        keys: (Lk,) or (..., Lk, D), with the same D as queries.
        A 1-D tensor always means scalar features, so a batch of 1-D
        problems is written (B, L, 1), not (B, L). Leading dims broadcast.
        bandwidth: h > 0, a float or a tensor (e.g. a learnable parameter)
        broadcastable to the result.
        result: (..., Lq, Lk); each row sums to 1. No masking.

    Reference: E. A. Nadaraya, "On estimating regression", Theory Probab.
    Appl. 9 (1964); G. S. Watson, "Smooth regression analysis", Sankhya A 26
    (1964); d2l.ai, section 11.2 "Attention Pooling by Similarity".

    >>> nadaraya_watson_weights(torch.tensor([1.0]), torch.tensor([0.0, 1.0, 2.0]))
    tensor([[0.2741, 0.4519, 0.2741]])
    """
    q = _as_features(queries, "queries")  # (..., Lq, D)
    k = _as_features(keys, "keys")  # (..., Lk, D)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"queries and keys must have the same number of features D (last dim) to "
            f"measure distances between them: queries {tuple(queries.shape)} has D = "
            f"{q.shape[-1]}, keys {tuple(keys.shape)} has D = {k.shape[-1]}."
        )
    if isinstance(bandwidth, torch.Tensor):
        if (bandwidth <= 0).any():
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}.")
    elif not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}.")

    # (..., Lq, 1, D) - (..., 1, Lk, D) -> (..., Lq, Lk, D)
    diff = q[..., :, None, :] - k[..., None, :, :]
    squared_distance = (diff**2).sum(dim=-1)  # (..., Lq, Lk)
    return softmax(-squared_distance / (2 * bandwidth**2), dim=-1)


def nadaraya_watson(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    bandwidth: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    r"""Nadaraya–Watson kernel regression (attention pooling) with a Gaussian kernel.

    Equation (h = ``bandwidth``)::

        f(q_i) = sum_j alpha(q_i, k_j) v_j,   alpha = nadaraya_watson_weights(q, k, h)

    i.e. each prediction is a weighted average of the values (training
    targets), weighted by the similarity of the query to each key
    (training input).

    Shapes:
        queries: (Lq,) or (..., Lq, D); keys: (Lk,) or (..., Lk, D), as in
        :func:`nadaraya_watson_weights`.
        values: (Lk,) for scalar targets, or (..., Lk, Dv).
        bandwidth: h > 0, float or tensor.
        result: (..., Lq) when values is (Lk,); (..., Lq, Dv) when values is
        (..., Lk, Dv). No masking.

    Reference: Nadaraya (1964); Watson (1964); d2l.ai, section 11.2
    "Attention Pooling by Similarity".

    >>> x_train = torch.tensor([0.0, 1.0, 2.0])
    >>> y_train = torch.tensor([0.0, 1.0, 4.0])
    >>> nadaraya_watson(torch.tensor([1.0]), x_train, y_train)
    tensor([1.5481])
    """
    weights = nadaraya_watson_weights(queries, keys, bandwidth)  # (..., Lq, Lk)
    _check_values(values, keys, n_keys=weights.shape[-1])
    # (..., Lq, Lk) @ (Lk,) -> (..., Lq), or (..., Lq, Lk) @ (..., Lk, Dv) -> (..., Lq, Dv)
    return weights @ values


def _as_features(x: torch.Tensor, name: str) -> torch.Tensor:
    """(L,) scalar inputs -> (L, 1); (..., L, D) unchanged."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}; use {name}.float().")
    if x.dim() == 0:
        raise ValueError(
            f"{name} must be (L,) or (..., L, D), got a 0-d tensor; use {name}.reshape(1)."
        )
    return x[:, None] if x.dim() == 1 else x


def _check_values(values: torch.Tensor, keys: torch.Tensor, n_keys: int) -> None:
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        got = values.dtype if isinstance(values, torch.Tensor) else type(values).__name__
        raise TypeError(f"values must be a floating-point tensor, got {got}.")
    n_values = None if values.dim() == 0 else values.shape[0 if values.dim() == 1 else -2]
    if n_values != n_keys:
        raise ValueError(
            f"keys and values must have the same number of positions Lk, one value per key: "
            f"keys {tuple(keys.shape)} gives Lk = {n_keys}, values {tuple(values.shape)} "
            f"gives Lk = {n_values}. Scalar targets are (Lk,), vector targets (..., Lk, Dv)."
        )
