"""What every lesson's exercise definitions share: the Exercise record, tolerances and input makers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Inputs = list[tuple]  # (case description, args, kwargs[, options]); see exercises._case

# Fused operators an exercise may not delegate to, by the names answers.FUSED knows. Every
# exercise forbids the two that compute attention outright; the softmax exercises add softmax.
DEFAULT_FORBIDDEN = ("scaled_dot_product_attention", "multihead_attention")


@dataclass(frozen=True)
class Mistake:
    """A mistake students really make, as the output it gives: ``reference`` computes that wrong
    output from a case's inputs (the exercise's reference with the mistake in it), and a failing answer
    that matches it gets ``hint``, which names the mistake ("did you divide by sqrt(d)?"). Where the
    mistake cannot run on a case (a weight applied untransposed), an answer that raises the very error
    ``reference`` raises gets the hint: write the reference in the plain torch a student writes."""

    hint: str
    reference: Callable[..., object]


@dataclass(frozen=True)
class Exercise:
    name: str
    lesson: str
    reference: Callable[..., torch.Tensor]
    visible_inputs: Callable[[torch.Generator], Inputs]
    hidden_inputs: Callable[[torch.Generator], Inputs]
    forbidden: tuple[str, ...] = DEFAULT_FORBIDDEN  # keys of course_kit.checks.FUSED
    mistakes: tuple[Mistake, ...] = ()
    # A check of all the answers together that needs the reference library, made by the grader (a
    # trained model's forward recomputed from its own weights, say): (answers, cases) -> problem or None.
    check_answers: Callable[[list, list], str | None] | None = None


def randn(g: torch.Generator, *shape: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Normal samples drawn in float64 and rounded to ``dtype``: torch draws float32 samples with a
    vectorised path that differs between CPUs (AVX2 and plain x86-64 give other numbers from one
    seed), float64 samples the same way everywhere, so the cases are the same bytes on every machine."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def rand(g: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    """Uniform samples on [0, 1), drawn in float64 and rounded to ``dtype`` (see :func:`randn`)."""
    return torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)


def size(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a transposed (non-contiguous) layout."""
    return x.transpose(-2, -1).contiguous().transpose(-2, -1)
