"""Statistics of test decisions: a bootstrap interval of the accuracy, McNemar's exact test between two runs,
each class's F1. Pure functions of (label, prediction) pairs, so a bench table and a doc compute them alike."""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def accuracy_ci(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy, resampling test examples (seeded: reports are stable)."""
    if len(correct) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(correct))  # ~16 MB of indices at a time, also on 25,000 test reviews
    means = np.concatenate([correct[rng.integers(0, len(correct), size=(min(chunk, resamples - start),
                                                                        len(correct)))].mean(axis=1)
                            for start in range(0, resamples, chunk)])
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def mcnemar_p(reference: dict[str, tuple[int, int]], other: dict[str, tuple[int, int]]) -> float | None:
    """Exact McNemar test (binomial on the discordant pairs: right in one row, wrong in the other, for any
    number of classes); None unless both rows hold the same test ids."""
    from scipy.stats import binomtest

    if set(reference) != set(other):
        return None
    ref_only = sum(1 for i, (y, p) in reference.items() if p == y and other[i][1] != other[i][0])
    other_only = sum(1 for i, (y, p) in reference.items() if p != y and other[i][1] == other[i][0])
    if ref_only + other_only == 0:
        return 1.0
    return float(binomtest(ref_only, ref_only + other_only, 0.5).pvalue)


def class_f1(pred: dict[str, tuple[int, int]], names: list[str]) -> dict[str, dict[str, float]]:
    """Each class's F1 and support from (label, pred) pairs: for a run whose metrics.json predates per_class."""
    from sklearn.metrics import precision_recall_fscore_support

    pairs = list(pred.values())
    _, _, f1, support = precision_recall_fscore_support([y for y, _ in pairs], [p for _, p in pairs],
                                                        labels=list(range(len(names))), zero_division=0)
    return {name: {"f1": float(f1[i]), "support": int(support[i])} for i, name in enumerate(names)}
