"""The reference every transformer run is read against: TF-IDF n-grams and a linear model.

What a practitioner reaches for first, and what a fine-tuned transformer has to beat per minute:
uni+bigram TF-IDF (sublinear tf) with logistic regression (`lr`), or NB-weighted features in the
manner of Wang & Manning's NBSVM (`nb`: each feature scaled by its log-count ratio between the
classes, then logistic regression). scikit-learn does the work; it trains in seconds on 2 cores, on
the same splits as every other method (validation carved from train, test read once at the end).

The fitted model is saved as plain arrays and JSON (vocabulary, idf, NB ratios, coefficients), never
as a pickle, so loading a run cannot run code; `sentitune predict` works on a tfidf run like any run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from sentitune.atomic import atomic_dir
from sentitune.config import ConfigError, ExperimentConfig, TfidfSettings, to_dict
from sentitune.data.sources import load_splits
from sentitune.errors import RunError
from sentitune.metrics import classification_metrics
from sentitune.runs import RunDir
from sentitune.runtime import seed_everything

Report = Callable[[str], None]
MODEL_FILE = "tfidf.json"
ARRAYS_FILE = "tfidf.npz"


class TfidfClassifier:
    """TF-IDF features (optionally NB-weighted) and a logistic regression: probabilities of positive."""

    def __init__(self, settings: TfidfSettings, vectorizer: TfidfVectorizer, ratios: np.ndarray | None,
                 model: LogisticRegression) -> None:
        self.settings, self.vectorizer, self.ratios, self.model = settings, vectorizer, ratios, model

    @classmethod
    def fit(cls, texts: list[str], labels: list[int], settings: TfidfSettings, seed: int) -> TfidfClassifier:
        if settings.variant not in ("lr", "nb"):
            raise ConfigError(f"method.tfidf.variant: {settings.variant!r} is not one of lr, nb")
        vectorizer = _vectorizer(settings)
        features = vectorizer.fit_transform(texts)
        y = np.asarray(labels)
        ratios = _nb_ratios(features, y, settings.nb_alpha) if settings.variant == "nb" else None
        model = LogisticRegression(C=settings.c, max_iter=2000, random_state=seed)
        model.fit(_weighted(features, ratios), y)
        return cls(settings, vectorizer, ratios, model)

    def positive_proba(self, texts: list[str]) -> np.ndarray:
        features = _weighted(self.vectorizer.transform(texts), self.ratios)
        return self.model.predict_proba(features)[:, list(self.model.classes_).index(1)]

    @property
    def num_features(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def save(self, folder: Path) -> None:
        """vocabulary and settings as JSON, the arrays as .npz: loading never unpickles anything."""
        with atomic_dir(folder) as tmp:
            vocabulary = {term: int(i) for term, i in self.vectorizer.vocabulary_.items()}
            (tmp / MODEL_FILE).write_text(json.dumps({"settings": to_dict(self.settings), "vocabulary": vocabulary,
                                                      "classes": [int(c) for c in self.model.classes_]}))
            arrays = {"idf": self.vectorizer.idf_, "coef": self.model.coef_, "intercept": self.model.intercept_}
            if self.ratios is not None:
                arrays["ratios"] = self.ratios
            np.savez(tmp / ARRAYS_FILE, **arrays)

    @classmethod
    def load(cls, folder: Path) -> TfidfClassifier:
        try:
            saved = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
                idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
                ratios = arrays["ratios"] if "ratios" in arrays.files else None
            settings = TfidfSettings(**saved["settings"])
            vocabulary, classes = saved["vocabulary"], np.asarray(saved["classes"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunError(f"{folder}: not a readable tfidf model ({type(e).__name__}: {e})") from None
        vectorizer = _vectorizer(settings, vocabulary)
        vectorizer.idf_ = idf
        model = LogisticRegression(C=settings.c)
        model.coef_, model.intercept_, model.classes_ = coef, intercept, classes
        return cls(settings, vectorizer, ratios, model)


def _vectorizer(settings: TfidfSettings, vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, settings.ngram_max), min_df=settings.min_df,
                           max_features=settings.max_features, sublinear_tf=True, strip_accents="unicode",
                           vocabulary=vocabulary, dtype=np.float32)


def _nb_ratios(features: sparse.csr_matrix, y: np.ndarray, alpha: float) -> np.ndarray:
    """log((p / |p|_1) / (q / |q|_1)): how much more a feature weighs in positive than in negative reviews."""
    p = alpha + np.asarray(features[y == 1].sum(axis=0)).ravel()
    q = alpha + np.asarray(features[y == 0].sum(axis=0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


def _weighted(features: sparse.csr_matrix, ratios: np.ndarray | None) -> sparse.csr_matrix:
    return features if ratios is None else sparse.csr_matrix(features.multiply(ratios))


def _metrics(labels: list[int], scores: np.ndarray) -> dict[str, Any]:
    """The usual metrics, with the mean cross-entropy as the loss (as the transformer runs report it)."""
    return classification_metrics(labels, scores.tolist(), loss=log_loss(labels, scores, labels=[0, 1]))


def run_tfidf(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False,
              report: Report = lambda s: None) -> dict[str, Any]:
    """Fit on the run's training split, report validation, evaluate test once; a run directory like any."""
    started = time.perf_counter()
    RunDir(run_dir).check_free(overwrite)
    seed_everything(cfg.train.seed)
    splits = load_splits(cfg.data, cfg.train.seed)
    report(f"data: train {len(splits.train)}, validation {len(splits.validation)}, test {len(splits.test)}")
    for warning in splits.warnings:
        report(f"warning: {warning}")
    run = RunDir.create(Path(run_dir), cfg, overwrite=overwrite)
    fit_started = time.perf_counter()
    classifier = TfidfClassifier.fit([e.text for e in splits.train], [e.label for e in splits.train],
                                     cfg.method.tfidf, cfg.train.seed)
    train_seconds = time.perf_counter() - fit_started
    history = []
    if splits.validation:
        val = _metrics([e.label for e in splits.validation],
                       classifier.positive_proba([e.text for e in splits.validation]))
        history.append({"phase": 1, "step": 1, "epoch": 1.0, "loss": val["loss"], "accuracy": val["accuracy"],
                        "roc_auc": val["roc_auc"]})
        run.log({"event": "validation", **val})
        report(f"validation: accuracy {val['accuracy']:.4f}, ROC AUC {val['roc_auc']:.4f}")
    test_started = time.perf_counter()
    scores = classifier.positive_proba([e.text for e in splits.test])
    test = _metrics([e.label for e in splits.test], scores)
    test_seconds = time.perf_counter() - test_started
    run.log({"event": "final", "split": "test", **test})
    n = classifier.num_features + 1
    metrics = {
        "name": cfg.name, "model": f"tfidf-{cfg.method.tfidf.variant}", "method": "tfidf", "test": test,
        "baseline": None, "validation": history,
        "parameters": {"total": n, "trainable": n, "trainable_ratio": 1.0, "lora": 0, "features": n - 1},
        "data": splits.summary() | {"skipped": splits.skipped, "warnings": splits.warnings},
        "train_seconds": round(train_seconds, 2),
        "test_seconds": round(test_seconds, 2), "wall_seconds": round(time.perf_counter() - started, 2),
    }
    run.write_predictions(splits.test, scores.tolist())
    classifier.save(run.model_dir)
    run.write_metrics(metrics)
    return metrics
