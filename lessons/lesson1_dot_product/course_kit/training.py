"""One training loop for the lessons that train a model: AdamW on cross-entropy, with a progress bar.

Part of the student kit (it holds nothing the exercises ask for): it imports only torch, and tqdm
when it is installed.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

try:
    from tqdm.auto import tqdm
except ImportError:  # a bare student setup: train without a progress bar
    tqdm = None


def train_token_classifier(
    model: torch.nn.Module,
    make_batch: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` to predict a token at every position; return the loss of every step.

    ``make_batch(batch_size, generator)`` gives ``(inputs, targets)``, targets (B, L) int64;
    ``model(inputs)`` must return logits (B, L, vocab). The loss is the mean cross-entropy over
    all positions. Batches are drawn from a generator seeded with ``seed``; seed torch's global
    generator too (for the initial weights) and the run is reproducible on one machine.

    Shapes:
        inputs: whatever ``model`` takes, e.g. tokens (B, L); targets: (B, L) int64;
        ``model(inputs)``: logits (B, L, vocab). result: ``steps`` floats.

    >>> model = torch.nn.Sequential(torch.nn.Embedding(3, 3))  # learns the identity map
    >>> batch = lambda n, g: (torch.randint(0, 3, (n, 4), generator=g),) * 2
    >>> losses = train_token_classifier(model, batch, steps=50, lr=0.1, progress=False)
    >>> losses[-1] < losses[0]
    True
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="training", leave=False) if progress and tqdm is not None else range(steps)
    for _ in bar:
        inputs, targets = make_batch(batch_size, generator)
        logits = model(inputs)  # (B, L, V)
        loss = F.cross_entropy(logits.flatten(0, -2), targets.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


@torch.no_grad()
def sequence_accuracy(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The fraction of sequences whose every token ``model`` predicts right (argmax of its logits).

    Shapes:
        inputs: (N, L) tokens; targets: (N, L) int64; ``model(inputs)``: (N, L, vocab).
        result: a float in [0, 1].

    >>> model = torch.nn.Embedding(3, 3)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(3))
    >>> sequence_accuracy(model, torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 0]]))
    0.5
    """
    was_training = model.training
    model.eval()
    predictions = model(inputs).argmax(dim=-1)  # (N, L)
    model.train(was_training)
    return (predictions == targets).all(dim=-1).float().mean().item()
