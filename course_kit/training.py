"""One training loop for the lessons that train a model: AdamW on cross-entropy, with a progress bar.

Lesson 2's translator and Lesson 3's transformer both train here. Its options make a short run end
in the same place on every machine: a learning rate warmed up and decayed to 0, so that the last
steps settle into a minimum instead of jumping around it (where a different rounding on another CPU
lands elsewhere), and gradient clipping, for RNNs' occasional huge gradients.

Part of the student kit (it holds nothing the exercises ask for): it imports only torch, and tqdm
when it is installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

try:
    from tqdm.auto import tqdm
except ImportError:  # a bare student setup: train without a progress bar
    tqdm = None


def train_token_classifier(
    model: torch.nn.Module,
    make_batch: Callable[[int, torch.Generator], tuple[torch.Tensor | tuple, torch.Tensor]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-2,
    warmup_steps: int = 0,
    decay: bool = False,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` to predict a token at every position; return the loss of every step.

    ``make_batch(batch_size, generator)`` gives ``(inputs, targets)``, targets (B, L) int64;
    ``model(inputs)`` must return logits (B, L, vocab); an ``inputs`` tuple is the model's
    arguments, ``model(*inputs)``. The loss is the mean cross-entropy over all positions. The
    learning rate follows :func:`learning_rate` (``warmup_steps``, ``decay``); ``clip_grad_norm``
    rescales the gradients to at most that norm. Batches are drawn from a generator seeded with
    ``seed``; seed torch's global generator too (for the initial weights) and the run is
    reproducible on one machine.

    Shapes:
        inputs: whatever ``model`` takes, e.g. tokens (B, L), or a tuple of its arguments;
        targets: (B, L) int64; ``model(inputs)``: logits (B, L, vocab). result: ``steps`` floats.

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
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup_steps, decay)
        inputs, targets = make_batch(batch_size, generator)
        logits = model(*inputs) if isinstance(inputs, tuple) else model(inputs)  # (B, L, V)
        loss = F.cross_entropy(logits.flatten(0, -2), targets.flatten())
        optimiser.zero_grad()
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimiser.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


def learning_rate(step: int, steps: int, lr: float, warmup_steps: int = 0, decay: bool = False) -> float:
    """The learning rate of ``step`` (0-based) of ``steps``: a linear warm-up over ``warmup_steps``, then
    ``lr``, or with ``decay`` a cosine from ``lr`` towards 0 at the end (Loshchilov & Hutter, 2017).

    >>> [round(learning_rate(step, 6, 1.0, warmup_steps=2, decay=True), 2) for step in range(6)]
    [0.5, 1.0, 1.0, 0.85, 0.5, 0.15]
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if not decay:
        return lr
    progress = (step - warmup_steps) / (steps - warmup_steps)  # 0 after warm-up, nearly 1 at the last step
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


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
