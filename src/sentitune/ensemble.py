"""A transformer and an n-gram model, one classifier: their log-probabilities added with fitted weights.

Why: on IMDb the two err on different reviews. The transformer reads word order and negation in the
tokens it sees (a window of the review); the n-gram model (NBSVM-style, sentitune.classical) reads every
word of the whole review, and trains in about a minute. Adding their evidence beats either alone.

How: p(class) is proportional to p_transformer(class)^a * p_ngram(class)^b (two classes: sigmoid of
a * logit_t + b * logit_n), with a, b >= 0 chosen to minimise the log loss on the validation reviews,
which neither model trained on (pulled toward a = b = 1 as much as 20 reviews would: a tiny validation set
leaves them near equal). Two numbers, fitted on hundreds of reviews: they also correct each
member's over- or under-confidence. The test set plays no part.

In a run (`ensemble.ngram: true`) the n-gram model is fitted on the run's own training reviews after
the transformer has trained; it is saved inside the model folder (`model/ngram/`, plain arrays and
JSON) and the weights in sentitune.json, so predict, evaluate and serve answer with the combination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from sentitune.classical import TfidfClassifier
from sentitune.config import ExperimentConfig
from sentitune.data.records import Example
from sentitune.errors import RunError
from sentitune.metrics import answered, classification_metrics

NGRAM_FOLDER = "ngram"  # inside the model folder
MEMBERS = ("transformer", "ngram")
PRIOR_REVIEWS = 20.0  # the pull toward equal weights counts as much as this many validation reviews
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before the log: a 0 would be -inf evidence


def _log_probs(scores: np.ndarray) -> np.ndarray:
    """[n, classes] log-probabilities from what a run scores (two classes: P(positive) [n])."""
    scores = np.asarray(scores, dtype=np.float64)
    probs = np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores
    probs = np.clip(probs, EPS, 1 - EPS)
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def combine(weights: dict[str, float], transformer: np.ndarray, ngram: np.ndarray) -> np.ndarray:
    """The ensemble's scores, in the members' form (two classes: P(positive) [n]; more: [n, classes])."""
    z = weights["transformer"] * _log_probs(transformer) + weights["ngram"] * _log_probs(ngram)
    probs = softmax(z, axis=1)
    return probs[:, 1] if np.asarray(transformer).ndim == 1 else probs


def fit_weights(labels: Sequence[int], transformer: np.ndarray, ngram: np.ndarray,
                prior: float = PRIOR_REVIEWS) -> dict[str, float]:
    """a, b >= 0 minimising the mean log loss of `combine` on labelled (validation) reviews, plus a pull toward
    equal weights (1, 1) worth `prior` reviews: on hundreds of reviews the data decide, on a dozen the weights
    stay near equal instead of following the noise of a few reviews."""
    y = np.asarray(labels, dtype=int)
    lt, ln = _log_probs(transformer), _log_probs(ngram)
    rows = np.arange(len(y))
    strength = prior / max(1, len(y))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] * lt + w[1] * ln
        logp = log_softmax(z, axis=1)
        p = np.exp(logp)
        # d(-log p_y)/dw_k = -(x_k[y] - sum_c p_c x_k[c])
        grad = [-(x[rows, y] - (p * x).sum(axis=1)).mean() for x in (lt, ln)]
        pull = w - 1.0
        return float(-logp[rows, y].mean() + 0.5 * strength * pull @ pull), np.array(grad) + strength * pull

    best = minimize(loss, x0=np.array([1.0, 1.0]), jac=True, method="L-BFGS-B", bounds=[(0.0, 100.0)] * 2)
    return {"transformer": float(best.x[0]), "ngram": float(best.x[1])}


@dataclass
class NgramMember:
    """The n-gram half of an ensemble run and the weights that add it to the transformer."""

    model: TfidfClassifier
    weights: dict[str, float]

    def combine(self, transformer: np.ndarray, examples: Sequence[Example]) -> np.ndarray:
        """The ensemble's scores of `examples`, given the transformer's."""
        return self.combine_scores(transformer, self.model.proba_examples(examples))

    def combine_scores(self, transformer: np.ndarray, ngram: np.ndarray) -> np.ndarray:
        return combine(self.weights, transformer, ngram)

    def save(self, model_dir: Path) -> dict[str, Any]:
        """Write the n-gram model into `model_dir` (a model folder being written); sentitune.json's entry."""
        self.model.save(model_dir / NGRAM_FOLDER)
        return {"ensemble": {"members": list(MEMBERS), "weights": self.weights, "ngram": NGRAM_FOLDER}}

    @classmethod
    def load(cls, model_dir: Path, record: Any) -> NgramMember:
        """From a model folder whose sentitune.json has an `ensemble` entry (`record`)."""
        try:
            weights = {name: float(record["weights"][name]) for name in MEMBERS}
        except (KeyError, TypeError, ValueError):
            raise RunError(f"{model_dir / 'sentitune.json'}: its ensemble entry has no weights for "
                           f"{' and '.join(MEMBERS)} — the run's model folder is damaged") from None
        folder = model_dir / NGRAM_FOLDER
        if not folder.is_dir():
            raise RunError(f"{folder}: missing — the run's model folder is incomplete (an ensemble run keeps its "
                           "n-gram model there)")
        return cls(TfidfClassifier.load(folder), weights)


def fit_member(cfg: ExperimentConfig, train: Sequence[Example], validation: Sequence[Example],
               transformer_validation: np.ndarray) -> tuple[NgramMember, dict[str, Any]]:
    """Fit the n-gram model on `train`, the weights on `validation` (given the transformer's scores there);
    returns the member and a record of what was fitted (validation metrics of each member and of both)."""
    names = list(cfg.data.labels)
    model = TfidfClassifier.fit_examples(train, cfg.method.tfidf, cfg.train.seed, names)
    labels = [e.label for e in validation]
    ngram_validation = model.proba_examples(validation)
    weights = fit_weights(labels, transformer_validation, ngram_validation)
    member = NgramMember(model, weights)
    scores = {"transformer": transformer_validation, "ngram": ngram_validation,
              "ensemble": combine(weights, transformer_validation, ngram_validation)}
    record: dict[str, Any] = {
        "weights": weights, "ngram_features": model.num_features, "ngram_parameters": model.num_parameters,
        "validation": {name: _summary(classification_metrics(labels, s, names=names)) for name, s in scores.items()},
    }
    return member, record


def ensemble_metrics(labels: Sequence[int], scores: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The usual metrics of the ensemble's scores, with its mean cross-entropy as the loss."""
    logp = _log_probs(scores)
    loss = float(-logp[np.arange(len(labels)), np.asarray(labels, dtype=int)].mean()) if len(labels) else 0.0
    return classification_metrics(labels, scores, loss=loss, names=names)


def load_member(model_dir: Path, record: Any) -> NgramMember | None:
    """The n-gram member of a saved model folder whose sentitune.json `ensemble` entry is `record` (None: none)."""
    return None if record is None else NgramMember.load(model_dir, record)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {**{key: metrics.get(key) for key in ("accuracy", "roc_auc", "macro_f1")}, "answered": answered(metrics)}


def member_metrics(labels: Sequence[int], names: list[str], transformer: np.ndarray,
                   ngram: np.ndarray) -> dict[str, Any]:
    """Each member's test metrics on its own, beside the ensemble's (metrics.json `ensemble.test`)."""
    return {"transformer": _summary(classification_metrics(labels, transformer, names=names)),
            "ngram": _summary(classification_metrics(labels, ngram, names=names))}
