"""Seeded, stratified subsampling and the validation carve-out (from train, never from test)."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

from sentitune.data.records import Example


def _stratify(examples: list[Example], count: int) -> list[int] | None:
    """Labels to stratify on, or None when a class (or either side of the split) is too small for it.

    sklearn refuses a stratified split with fewer examples on a side than there are classes; a
    plain seeded split is the best that can be done there (e.g. val_size=1).
    """
    counts = Counter(e.label for e in examples)
    sides_fit = min(count, len(examples) - count) >= len(counts)
    return [e.label for e in examples] if len(counts) > 1 and min(counts.values()) >= 2 and sides_fit else None


def split_off(examples: list[Example], size: float | int, seed: int) -> tuple[list[Example], list[Example]]:
    """Split `examples` into (rest, carved) with `size` a fraction (<1) or a count (>=1)."""
    n = len(examples)
    count = round(size * n) if size < 1 else int(size)
    if count <= 0:
        return list(examples), []
    if count >= n:
        return [], list(examples)
    rest, carved = train_test_split(examples, test_size=count, random_state=seed, stratify=_stratify(examples, count))
    return rest, carved


def sample(examples: list[Example], size: int | None, seed: int) -> list[Example]:
    """A stratified, seeded subsample of `size` examples (all of them when size is None or larger)."""
    if size is None or size >= len(examples):
        return list(examples)
    return split_off(examples, size, seed)[1]
