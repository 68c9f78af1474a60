"""The dates data set: seeded, disjoint splits, and targets that Python's own date parser agrees with."""

from __future__ import annotations

import datetime
import random

import pytest
import torch

from course_kit.data.dates import (
    FORMATS,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    Vocabulary,
    make_batch,
    make_date_splits,
    random_date,
)

# Styles Python's strptime reads (the two-digit-year styles pivot differently from ours, at 69, so
# they are checked by their own rule below).
STRPTIME = {
    "3 March 2021": "%d %B %Y", "March 3, 2021": "%B %d, %Y", "3 mar 2021": "%d %b %Y",
    "Wed, 3 Mar 2021": "%a, %d %b %Y",
    "Wednesday, March 3, 2021": "%A, %B %d, %Y", "03/03/2021 (month/day)": "%m/%d/%Y",
    "03.03.2021 (day.month)": "%d.%m.%Y", "2021/03/03": "%Y/%m/%d", "20210303": "%Y%m%d",
}


@pytest.mark.parametrize("style", sorted(STRPTIME))
def test_targets_are_what_strptime_reads_from_the_source(style):
    rng = random.Random(0)
    for _ in range(200):
        source, target = random_date(rng, style)
        assert datetime.datetime.strptime(source, STRPTIME[style]).date().isoformat() == target, source


def test_two_digit_years_pivot_at_50():
    rng = random.Random(1)
    for _ in range(300):
        source, target = random_date(rng, "3.3.21 (day.month)")
        day, month, year = (int(x) for x in source.split("."))
        assert target == f"{year + (1900 if year >= 50 else 2000)}-{month:02d}-{day:02d}"


def test_every_style_is_drawn_and_every_character_is_in_the_vocabularies():
    splits = make_date_splits(n_train=3000, n_validation=0, n_test=0, seed=2)
    for source, target in splits.train:
        assert SOURCE_VOCAB.decode(SOURCE_VOCAB.encode(source)) == source
        assert TARGET_VOCAB.decode(TARGET_VOCAB.encode(target)) == target
    assert len(FORMATS) == 14


def test_splits_are_seeded_disjoint_and_of_the_requested_sizes():
    first, again, other = make_date_splits(500, 50, 60, seed=0), make_date_splits(500, 50, 60, seed=0), \
        make_date_splits(500, 50, 60, seed=1)
    assert first == again and first != other
    assert [len(split) for split in first] == [500, 50, 60]
    sources = [s for split in first for s, _ in split]
    assert len(set(sources)) == len(sources)


def test_make_batch_pads_with_zeros_and_shifts_the_target_for_teacher_forcing():
    batch = make_batch([("Mar 3 21", "2021-03-03"), ("3.3.21", "2021-03-03")])
    assert batch.source.shape == (2, 8) and batch.source_lengths.tolist() == [8, 6]
    assert batch.source[1, 6:].tolist() == [0, 0]
    assert TARGET_VOCAB.decode(batch.target_in[0]) == "^2021-03-0"
    assert torch.equal(batch.target_in[:, 1:], batch.target_out[:, :-1])


def test_unknown_characters_are_refused_by_name():
    with pytest.raises(ValueError, match=r"\['é'\]"):
        Vocabulary("abc").encode("é")
