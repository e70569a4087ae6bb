"""Calibration: where to put the decision threshold on a margin, and how prompts combine into an ensemble.

A raw margin is usually biased toward one label, so three calibrations are reported beside it
(docs/ZERO_SHOT.md): contextual calibration with content-free inputs (Zhao et al. 2021), a threshold
fitted on a small labelled validation slice, and a label-free threshold (the median margin of
unlabelled training reviews, which assumes roughly balanced classes). The margin stays the score,
so ROC AUC is the same under every threshold.

K > 2 classes: the score is a row of K class log-probabilities and a decision is a bias per class,
subtracted before the argmax (and the softmax that gives the probabilities). Two classes are the
special case bias = (0, threshold). Raw is no bias, contextual the content-free inputs' mean log
probabilities, validation the accuracy-maximising biases; label-free (a median) is binary only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from sentitune.config import ConfigError
from sentitune.metrics import classification_metrics
from sentitune.zero_shot.prompts import PromptEncoder
from sentitune.zero_shot.scoring import CausalScorer

Decision = float | list[float]  # a threshold on the margin (two classes) or a bias per class (K > 2)


def member_scales(calibration_margins: Sequence[np.ndarray]) -> list[float]:
    """Each member's spread (standard deviation) on the unlabelled calibration reviews; 1 for one member.
    K > 2 classes: 1 each, as the members' scores are log-probabilities already, on one scale."""
    if len(calibration_margins) == 1 or np.ndim(calibration_margins[0]) == 2:
        return [1.0] * len(calibration_margins)
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


def content_free_probabilities(scorer: CausalScorer, encoder: PromptEncoder, content_free: Sequence[str]
                               ) -> np.ndarray:
    """p_cf: the label words' probabilities for content-free inputs ("N/A", ""), normalised over the words
    and averaged. A {target} slot gets the same content-free string as the text: no target either."""
    if not content_free:
        raise ConfigError("zero_shot.content_free: contextual calibration needs at least one input")
    prompts = [encoder.encode(t, t if encoder.targeted else None) for t in content_free]
    lp = scorer.word_logprobs(prompts, encoder.label_ids, "content-free")
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).mean(axis=0)


def contextual_offset(scorer: CausalScorer, encoder: PromptEncoder, content_free: Sequence[str]) -> float:
    """Contextual calibration (Zhao et al. 2021) for two labels, as a threshold on the margin: dividing
    by p_cf and renormalising moves the decision boundary of the margin from 0 to log(p_cf[pos] / p_cf[neg])."""
    p_cf = content_free_probabilities(scorer, encoder, content_free)
    return float(math.log(p_cf[1] / p_cf[0]))


def contextual_bias(scorer: CausalScorer, encoder: PromptEncoder, content_free: Sequence[str]) -> list[float]:
    """Contextual calibration for K classes: log p_cf per class. Subtracting it from the class
    log-probabilities divides by p_cf, so a content-free input comes out uniform."""
    return np.log(content_free_probabilities(scorer, encoder, content_free)).tolist()


def contextual_decision(scorer: CausalScorer, encoder: PromptEncoder, content_free: Sequence[str]) -> Decision:
    """The contextual offset (two label words) or bias (K)."""
    calibrator = contextual_offset if len(encoder.label_ids) == 2 else contextual_bias
    return calibrator(scorer, encoder, content_free)


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


def fit_bias(labels: Sequence[int], scores: np.ndarray, rounds: int = 20) -> list[float]:
    """Per-class biases that maximise accuracy (the K-class validation threshold), by coordinate ascent.

    With the other biases fixed, class k is predicted when s_k - max_(j!=k)(s_j - b_j) > b_k: a threshold,
    which only rows labelled k or labelled the best other class can make right or wrong, so `fit_threshold`
    on those rows is an exact line search. Class 0 keeps bias 0 (only differences matter); rounds stop when
    accuracy stops improving. Two classes: one step, bias[1] = fit_threshold on the margin.
    """
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    bias = np.zeros(s.shape[1])
    best = float(((s - bias).argmax(axis=1) == y).mean())
    for _ in range(rounds):
        for k in range(1, s.shape[1]):
            others = np.delete(s - bias, k, axis=1)
            rival = np.delete(np.arange(s.shape[1]), k)[others.argmax(axis=1)]
            rows = (y == k) | (y == rival)
            if rows.any():
                bias[k] = fit_threshold((y[rows] == k).astype(int), (s[:, k] - others.max(axis=1))[rows])
        accuracy = float(((s - bias).argmax(axis=1) == y).mean())
        if accuracy <= best:
            break
        best = accuracy
    return bias.tolist()


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


def calibration_biases(biases: Sequence[Sequence[float]], scales: Sequence[float], labels: Sequence[int],
                       scores: np.ndarray) -> dict[str, list[float]]:
    """The K-class decisions on the (combined) calibration scores: raw (no bias), contextual (the members'
    `contextual_bias`es, weighted as `combine_margins` does) and validation (`fit_bias`)."""
    return {
        "raw": [0.0] * scores.shape[1],
        "contextual": np.mean([np.asarray(b) / s for b, s in zip(biases, scales, strict=True)], axis=0).tolist(),
        "validation": fit_bias(labels, scores),
    }


@dataclass(frozen=True)
class Calibration:
    """What the calibration slice fixes for a prompt: its members' scales and the decisions (two classes:
    the four thresholds; K: the three biases)."""

    scales: list[float]  # per ensemble member; [1.0] for a single prompt
    thresholds: dict[str, Decision]  # raw, contextual, validation, label-free (two classes only)


def calibrate(member_margins: Sequence[np.ndarray], offsets: Sequence[Decision], labels: Sequence[int]
              ) -> Calibration:
    """A prompt's (or an ensemble's) calibration from its members' scores on the calibration reviews,
    their `contextual_decision`s and the reviews' labels (only the validation decision reads them)."""
    scales = member_scales(member_margins)
    combined = combine_margins(member_margins, scales)
    decisions = calibration_thresholds if combined.ndim == 1 else calibration_biases
    return Calibration(scales, decisions(offsets, scales, labels, combined))


def probabilities(scores: np.ndarray, decision: Decision) -> list[float] | list[list[float]]:
    """Two classes: sigmoid(margin - threshold), the two label words' normalised probability after the
    threshold shift. K: softmax(log-probabilities - bias), one row of class probabilities per text."""
    if np.ndim(scores) == 2:
        return softmax(np.asarray(scores, dtype=float) - np.asarray(decision, dtype=float), axis=1).tolist()
    t = float(decision)  # type: ignore[arg-type]
    return [1.0 / (1.0 + math.exp(-(m - t))) for m in scores]


def decision_metrics(labels: Sequence[int], scores: np.ndarray, decision: Decision,
                     names: Sequence[str] | None = None) -> dict[str, Any]:
    """The metrics of one decision: on the margin with its threshold, or on the K-class probabilities."""
    if np.ndim(scores) == 2:
        return {**classification_metrics(labels, probabilities(scores, decision), names=names), "bias": list(decision)}
    t = float(decision)  # type: ignore[arg-type]
    return {**classification_metrics(labels, np.asarray(scores).tolist(), threshold=t), "threshold": decision}


def calibrated_rows(labels: Sequence[int], margins: np.ndarray, thresholds: dict[str, Decision],
                    names: Sequence[str] | None = None) -> dict[str, dict]:
    """One metrics row per decision; for two classes the margin is the score, so ROC AUC is the same in all."""
    return {name: decision_metrics(labels, margins, t, names) for name, t in thresholds.items()}
