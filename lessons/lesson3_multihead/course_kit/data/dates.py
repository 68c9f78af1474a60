"""Dates written the many ways people write them, to translate into ISO 8601 (Lesson 2's task).

    "3rd of March, 2021"  ->  "2021-03-03"
    "Mar 3 21"            ->  "2021-03-03"
    "03/03/2021"          ->  "2021-03-03"

A small translation task with real reordering: the year comes last in most sources and first in the
target, the month is a word in some sources and digits in the target. Every example is generated
here from a seed, so there is nothing to download. Part of the student kit: it imports only the
standard library and torch.

Conventions, so that every source has exactly one translation: slashes are month/day/year (US),
dots are day.month.year (European), and two-digit years 50-99 mean 1950-1999, 00-49 mean 2000-2049.
"""

from __future__ import annotations

import datetime
import random
from typing import NamedTuple

import torch

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FIRST_DAY, LAST_DAY = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)

PAD, BOS = "·", "^"  # padding (source and target) and beginning of sequence (target only)
TARGET_LENGTH = 10  # YYYY-MM-DD


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


# One function per way of writing a date: (day, month number, year, weekday index) -> text.
FORMATS = {
    "3 March 2021": lambda d, m, y, w: f"{d} {MONTHS[m - 1]} {y}",
    "3rd of March, 2021": lambda d, m, y, w: f"{_ordinal(d)} of {MONTHS[m - 1]}, {y}",
    "March 3, 2021": lambda d, m, y, w: f"{MONTHS[m - 1]} {d}, {y}",
    "Mar 3 21": lambda d, m, y, w: f"{MONTHS[m - 1][:3]} {d} {y % 100:02d}",
    "3 mar 2021": lambda d, m, y, w: f"{d} {MONTHS[m - 1][:3].lower()} {y}",
    "MARCH 3RD 2021": lambda d, m, y, w: f"{MONTHS[m - 1].upper()} {_ordinal(d).upper()} {y}",
    "Wed, 3 Mar 2021": lambda d, m, y, w: f"{WEEKDAYS[w][:3]}, {d} {MONTHS[m - 1][:3]} {y}",
    "Wednesday, March 3, 2021": lambda d, m, y, w: f"{WEEKDAYS[w]}, {MONTHS[m - 1]} {d}, {y}",
    "03/03/2021 (month/day)": lambda d, m, y, w: f"{m:02d}/{d:02d}/{y}",
    "3/3/21 (month/day)": lambda d, m, y, w: f"{m}/{d}/{y % 100:02d}",
    "03.03.2021 (day.month)": lambda d, m, y, w: f"{d:02d}.{m:02d}.{y}",
    "3.3.21 (day.month)": lambda d, m, y, w: f"{d}.{m}.{y % 100:02d}",
    "2021/03/03": lambda d, m, y, w: f"{y}/{m:02d}/{d:02d}",
    "20210303": lambda d, m, y, w: f"{y}{m:02d}{d:02d}",
}


class Vocabulary:
    """Characters <-> integer ids; id 0 is the padding character."""

    def __init__(self, characters: str) -> None:
        self.characters = PAD + "".join(sorted(set(characters) - {PAD}))
        self.index = {c: i for i, c in enumerate(self.characters)}

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"characters {unknown} of {text!r} are not in the vocabulary {self.characters!r}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int] | torch.Tensor, strip_padding: bool = True) -> str:
        """The characters of ``ids``; padding (id 0) is left out unless ``strip_padding`` is False."""
        return "".join(self.characters[int(i)] for i in ids if int(i) != 0 or not strip_padding)


# Every character any format can produce: the source vocabulary does not depend on the sample.
SOURCE_VOCAB = Vocabulary("".join(MONTHS) + "".join(WEEKDAYS) + "".join(MONTHS).upper()
                          + "".join(MONTHS).lower() + "0123456789 ,./" + "stndrdth".upper())
TARGET_VOCAB = Vocabulary("0123456789-" + BOS)


class DateSplits(NamedTuple):
    train: list[tuple[str, str]]  # (source, target) pairs
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]

    def training_batch(self, batch_size: int,
                       generator: torch.Generator) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``batch_size`` random training pairs, as the training loop takes them: ``(inputs, targets)``.

        inputs: (source (B, Ls), source_lengths (B,), target_in (B, 10)), the model's arguments;
        targets: target_out (B, 10) int64.
        """
        rows = torch.randint(len(self.train), (batch_size,), generator=generator).tolist()
        source, source_lengths, target_in, target_out = make_batch([self.train[i] for i in rows])
        return (source, source_lengths, target_in), target_out


def random_date(rng: random.Random, style: str | None = None) -> tuple[str, str]:
    """One (source, target) pair: a uniformly random day of 1950-2049 in a random (or given) style."""
    day = FIRST_DAY + datetime.timedelta(days=rng.randrange((LAST_DAY - FIRST_DAY).days + 1))
    style = rng.choice(list(FORMATS)) if style is None else style
    source = FORMATS[style](day.day, day.month, day.year, day.weekday())
    return source, day.isoformat()


def make_date_splits(n_train: int = 20_000, n_validation: int = 1_000, n_test: int = 1_000,
                     seed: int = 0) -> DateSplits:
    """Disjoint train, validation and test splits of distinct (source, target) pairs, from ``seed``.

    >>> splits = make_date_splits(n_train=3, n_validation=1, n_test=1, seed=0)
    >>> len(splits.train), all(len(target) == 10 for _, target in splits.train)
    (3, True)
    """
    if min(n_train, n_validation, n_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got {n_train}, {n_validation}, {n_test}")
    rng = random.Random(seed)
    pairs: dict[str, str] = {}  # source -> target, in the order drawn; distinct sources only
    while len(pairs) < n_train + n_validation + n_test:
        source, target = random_date(rng)
        pairs.setdefault(source, target)
    items = list(pairs.items())
    return DateSplits(items[:n_train], items[n_train:n_train + n_validation], items[n_train + n_validation:])


class Batch(NamedTuple):
    source: torch.Tensor  # (B, Ls) source ids, padded with 0
    source_lengths: torch.Tensor  # (B,) number of real characters in each source
    target_in: torch.Tensor  # (B, 10) BOS followed by the first 9 target characters (teacher forcing)
    target_out: torch.Tensor  # (B, 10) the target characters


def make_batch(pairs: list[tuple[str, str]]) -> Batch:
    """Encode and pad a list of (source, target) pairs into tensors.

    >>> batch = make_batch([("Mar 3 21", "2021-03-03"), ("20210303", "2021-03-03")])
    >>> batch.source.shape, batch.source_lengths.tolist(), TARGET_VOCAB.decode(batch.target_out[0])
    (torch.Size([2, 8]), [8, 8], '2021-03-03')
    """
    if not pairs:
        raise ValueError("make_batch needs at least one (source, target) pair")
    sources = [SOURCE_VOCAB.encode(s) for s, _ in pairs]
    lengths = torch.tensor([len(s) for s in sources])
    source = torch.zeros(len(pairs), int(lengths.max()), dtype=torch.long)
    for row, ids in enumerate(sources):
        source[row, :len(ids)] = torch.tensor(ids)
    target_out = torch.tensor([TARGET_VOCAB.encode(t) for _, t in pairs])
    bos = torch.full((len(pairs), 1), TARGET_VOCAB.index[BOS])
    return Batch(source, lengths, torch.cat([bos, target_out[:, :-1]], dim=1), target_out)
