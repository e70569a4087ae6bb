"""Calibration: where to put the decision threshold on a margin, and how prompts combine into an ensemble.

A raw margin is usually biased toward one label, so three calibrations are reported beside it
(docs/ZERO_SHOT.md): contextual calibration with content-free inputs (Zhao et al. 2021), a threshold
fitted on a small labelled validation slice, and a label-free threshold (the median margin of
unlabelled training reviews, which assumes roughly balanced classes). The margin stays the score,
so ROC AUC is the same under every threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sentitune.config import ConfigError
from sentitune.metrics import classification_metrics
from sentitune.zero_shot.prompts import PromptEncoder
from sentitune.zero_shot.scoring import CausalScorer


def member_scales(calibration_margins: Sequence[np.ndarray]) -> list[float]:
    """Each member's spread (standard deviation) on the unlabelled calibration reviews; 1 for one member."""
    if len(calibration_margins) == 1:
        return [1.0]
    return [float(np.std(m)) or 1.0 for m in calibration_margins]


def combine_margins(margins: Sequence[np.ndarray], scales: Sequence[float]) -> np.ndarray:
    """An ensemble's score: the mean of its members' margins, each divided by its spread.

    Prompts disagree on different reviews, so averaging them ranks reviews better than either alone
    (docs/ZERO_SHOT.md has the measurement); dividing by the spread keeps a prompt with larger
    margins from outvoting the others. The scales need no labels. One member: its margin, unchanged.
    """
    if len(margins) == 1:
        return np.asarray(margins[0], dtype=float)
    return np.mean([np.asarray(m, dtype=float) / s for m, s in zip(margins, scales, strict=True)], axis=0)


def contextual_offset(scorer: CausalScorer, encoder: PromptEncoder, content_free: Sequence[str]) -> float:
    """Contextual calibration (Zhao et al. 2021) for two labels, as a threshold on the margin.

    The label-word probabilities of content-free inputs ("N/A", "") are normalised over the two
    labels and averaged into p_cf; dividing by p_cf and renormalising moves the decision boundary
    of the margin from 0 to log(p_cf[pos] / p_cf[neg]).
    """
    if not content_free:
        raise ConfigError("zero_shot.content_free: contextual calibration needs at least one input")
    lp = scorer.word_logprobs([encoder.encode(t) for t in content_free], encoder.label_ids, "content-free")
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p_cf = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
    return float(math.log(p_cf[1] / p_cf[0]))


def fit_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The accuracy-maximising threshold (predict positive when score > t); ties: the middle one."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    if len(s) == 0:
        raise ConfigError("fit_threshold: no scores")
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    accuracy = ((s[None, :] > candidates[:, None]) == (y[None, :] == 1)).mean(axis=1)
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[len(best) // 2]])


def label_free_threshold(scores: Sequence[float]) -> float:
    """The median margin of unlabelled reviews: half are called positive, as in balanced IMDb."""
    return float(np.median(np.asarray(scores, dtype=float)))


def calibration_thresholds(offsets: Sequence[float], scales: Sequence[float], labels: Sequence[int],
                           margins: np.ndarray) -> dict[str, float]:
    """The four decision thresholds on the (combined) calibration margins: raw (0) and the three
    calibrations. `offsets` are the members' `contextual_offset`s, weighted as `combine_margins` does."""
    return {
        "raw": 0.0,
        "contextual": float(np.mean([o / s for o, s in zip(offsets, scales, strict=True)])),
        "validation": fit_threshold(labels, margins),
        "label-free": label_free_threshold(margins),  # the labels are not read
    }


@dataclass(frozen=True)
class Calibration:
    """What the calibration slice fixes for a prompt: its members' scales and the four thresholds."""

    scales: list[float]  # per ensemble member; [1.0] for a single prompt
    thresholds: dict[str, float]  # raw, contextual, validation, label-free


def calibrate(member_margins: Sequence[np.ndarray], offsets: Sequence[float], labels: Sequence[int]) -> Calibration:
    """A prompt's (or an ensemble's) calibration from its members' margins on the calibration reviews,
    their `contextual_offset`s and the reviews' labels (only the validation threshold reads them)."""
    scales = member_scales(member_margins)
    return Calibration(scales, calibration_thresholds(offsets, scales, labels, combine_margins(member_margins, scales)))


def calibrated_rows(labels: Sequence[int], margins: np.ndarray, thresholds: dict[str, float]) -> dict[str, dict]:
    """One metrics row per decision threshold; the margin is the score, so ROC AUC is the same in all."""
    rows = {}
    for name, t in thresholds.items():
        rows[name] = {**classification_metrics(labels, margins.tolist(), threshold=t), "threshold": t}
    return rows
