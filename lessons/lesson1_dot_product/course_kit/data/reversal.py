"""Sequence reversal: a generated task that a model can only solve by attending to other positions.

Input: ``length`` random tokens from ``0 .. vocab_size - 1``; target: the same tokens reversed. The
output at position i is the input at position L - 1 - i, so a model must look across the sequence,
and it must know positions: attention alone is permutation equivariant and cannot tell i from
L - 1 - i. Part of the student kit: it imports only torch.

The *held-out split* is a fixed set of sequences drawn from ``seed``; training batches never contain
one of them, so accuracy on it measures generalisation, not memory.
"""

from __future__ import annotations

import torch


class ReversalTask:
    """Random token sequences and their reversals, with a held-out split no training batch contains.

    >>> task = ReversalTask(vocab_size=5, length=4, n_held_out=3, seed=0)
    >>> task.held_out_inputs.shape, torch.equal(task.held_out_targets, task.held_out_inputs.flip(-1))
    (torch.Size([3, 4]), True)
    """

    def __init__(self, vocab_size: int = 10, length: int = 8, n_held_out: int = 1000, seed: int = 0) -> None:
        if vocab_size < 2 or length < 2 or n_held_out < 1:
            raise ValueError(f"need vocab_size >= 2, length >= 2 and n_held_out >= 1, got "
                             f"{vocab_size}, {length}, {n_held_out}")
        if vocab_size**length < 10 * n_held_out:
            raise ValueError(f"only {vocab_size ** length} distinct sequences: too few to hold out "
                             f"{n_held_out} and still train on the rest")
        self.vocab_size, self.length = vocab_size, length
        g = torch.Generator().manual_seed(seed)
        self.held_out_inputs = torch.randint(0, vocab_size, (n_held_out, length), generator=g)  # (N, L)
        self.held_out_targets = self.held_out_inputs.flip(-1)  # (N, L)
        self._held_out_codes = set(self._codes(self.held_out_inputs).tolist())

    def _codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """One integer per sequence (its digits in base vocab_size), to test membership fast."""
        powers = self.vocab_size ** torch.arange(self.length, dtype=torch.float64)
        return (tokens.double() @ powers).long()

    def training_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, each (batch_size, length) int64; no row is in the held-out split."""
        inputs = torch.randint(0, self.vocab_size, (batch_size, self.length), generator=generator)
        while True:
            held = torch.tensor([code in self._held_out_codes for code in self._codes(inputs).tolist()])
            if not held.any():
                return inputs, inputs.flip(-1)
            inputs[held] = torch.randint(0, self.vocab_size, (int(held.sum()), self.length), generator=generator)
