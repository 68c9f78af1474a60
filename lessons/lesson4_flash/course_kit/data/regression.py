"""A toy 1-D regression problem for attention as kernel regression (Lesson 1's opening).

    y = 2 sin(x) + x^0.8 + noise,   x in [0, 5)

the example of d2l's chapter on attention pooling, after Nadaraya (1964) and Watson (1964). Part of
the student kit: it imports only torch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RegressionData(NamedTuple):
    x_train: torch.Tensor  # (n_train,) sorted, the keys
    y_train: torch.Tensor  # (n_train,) noisy targets, the values
    x_test: torch.Tensor  # (n_test,) evenly spaced, the queries
    y_test: torch.Tensor  # (n_test,) the noise-free function at x_test


def true_function(x: torch.Tensor) -> torch.Tensor:
    """f(x) = 2 sin(x) + x^0.8."""
    return 2 * torch.sin(x) + x ** 0.8


def make_regression_data(n_train: int = 50, n_test: int = 50, noise: float = 0.5, seed: int = 0) -> RegressionData:
    """``n_train`` noisy samples of :func:`true_function` at sorted random x in [0, 5), and a test grid.

    >>> data = make_regression_data(n_train=4, n_test=3)
    >>> data.x_train.shape, data.x_test.tolist()
    (torch.Size([4]), [0.0, 2.5, 5.0])
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be at least 1, got {n_train} and {n_test}")
    g = torch.Generator().manual_seed(seed)
    x_train = torch.sort(torch.rand(n_train, generator=g) * 5).values
    y_train = true_function(x_train) + noise * torch.randn(n_train, generator=g)
    x_test = torch.linspace(0, 5, n_test)
    return RegressionData(x_train, y_train, x_test, true_function(x_test))
