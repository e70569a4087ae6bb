"""The reference every transformer run is read against: TF-IDF n-grams and a linear model.

What a practitioner reaches for first, and what a fine-tuned transformer has to beat per minute:
uni+bigram TF-IDF (sublinear tf) with logistic regression (`lr`), or NB-weighted features in the
manner of Wang & Manning's NBSVM (`nb`: each feature scaled by its log-count ratio between the
classes, then logistic regression; with `binary`, 0/1 n-gram presence and ratios from document counts, as
NBSVM was published). scikit-learn does the work; it trains in seconds on 2 cores, on
the same splits as every other method (validation carved from train, test read once at the end).

More than two classes (data.labels): `lr` is a multinomial logistic regression; `nb` is one-vs-rest,
one ratio vector and one binary regression per class, their probabilities normalised to sum to 1
(two classes stay exactly the binary model). Target-dependent examples: a second TF-IDF over the
target and `method.tfidf.target_window` words either side of it is appended to the sentence's
features. Without it a linear model gives every target of a sentence the same answer; with it,
`The food was great but the service slow` looks different for `food` and for `service`.

The fitted model is saved as plain arrays and JSON (vocabulary, idf, NB ratios, coefficients), never
as a pickle, so loading a run cannot run code; `sentitune predict` works on a tfidf run like any run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import expit, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from sentitune.atomic import atomic_dir
from sentitune.config import BINARY_LABELS, ConfigError, ExperimentConfig, TfidfSettings, to_dict
from sentitune.data.records import Example
from sentitune.data.sources import load_splits
from sentitune.data.targets import locate
from sentitune.errors import DataError, RunError
from sentitune.metrics import classification_metrics
from sentitune.runs import RunDir
from sentitune.runtime import Report, seed_everything

MODEL_FILE = "tfidf.json"
ARRAYS_FILE = "tfidf.npz"
Span = tuple[int, int] | None


class TfidfClassifier:
    """TF-IDF features (optionally NB-weighted, optionally with target-context features) and a logistic
    regression; `proba` answers like a transformer run's scores (binary: P(positive); more: every class)."""

    def __init__(self, settings: TfidfSettings, vectorizer: TfidfVectorizer, ratios: np.ndarray | None,
                 coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, labels: list[str],
                 target_vectorizer: TfidfVectorizer | None = None) -> None:
        self.settings, self.vectorizer, self.ratios = settings, vectorizer, ratios
        self.coef, self.intercept, self.classes, self.labels = coef, intercept, classes, labels
        self.target_vectorizer = target_vectorizer  # None: trained on whole texts, without targets

    @classmethod
    def fit(cls, texts: list[str], labels: list[int], settings: TfidfSettings, seed: int,
            names: Sequence[str] = BINARY_LABELS, targets: Sequence[str] | None = None,
            spans: Sequence[Span] | None = None) -> TfidfClassifier:
        """Fit on `texts` (class indices into `names`); with `targets`, target-dependent (see the module)."""
        if settings.variant not in ("lr", "nb"):
            raise ConfigError(f"method.tfidf.variant: {settings.variant!r} is not one of lr, nb")
        vectorizer = _vectorizer(settings)
        features = _fit_features(vectorizer, texts, settings, "reviews")
        target_vectorizer = None
        if targets is not None:
            target_vectorizer = _vectorizer(settings)
            contexts = target_contexts(texts, targets, spans, settings.target_window)
            features = sparse.hstack([features, _fit_features(target_vectorizer, contexts, settings, "targets")],
                                     format="csr")
        y = np.asarray(labels)
        classes = np.unique(y)
        ratios = None
        if settings.variant == "nb":  # two classes: one ratio vector (the second class against the first)
            masks = [y == classes[1]] if len(classes) == 2 else [y == k for k in classes]
            ratios = np.stack([_nb_ratios(features, m, settings.nb_alpha) for m in masks])
            ratios = ratios[0] if len(classes) == 2 else ratios
        if ratios is not None and ratios.ndim == 2:  # one-vs-rest: each class on its own weighted features
            fits = [_logistic(settings, seed).fit(_weighted(features, r), (y == k).astype(int))
                    for r, k in zip(ratios, classes, strict=True)]
            coef, intercept = np.vstack([m.coef_ for m in fits]), np.concatenate([m.intercept_ for m in fits])
        else:  # binary, or multinomial over the classes
            model = _logistic(settings, seed).fit(_weighted(features, ratios), y)
            coef, intercept = model.coef_, model.intercept_
        return cls(settings, vectorizer, ratios, coef, intercept, classes, list(names), target_vectorizer)

    @classmethod
    def fit_examples(cls, examples: Sequence[Example], settings: TfidfSettings, seed: int,
                     names: Sequence[str] = BINARY_LABELS) -> TfidfClassifier:
        """`fit` on examples: their texts and labels, and their targets and spans when they have them."""
        targets = [e.target or "" for e in examples] if any(e.target is not None for e in examples) else None
        return cls.fit([e.text for e in examples], [e.label for e in examples], settings, seed, names, targets,
                       [e.span for e in examples])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def class_proba(self, texts: Sequence[str], targets: Sequence[str] | None = None,
                    spans: Sequence[Span] | None = None) -> np.ndarray:
        """[n, classes] probabilities, one column per data.labels entry (0 for a class training lacked)."""
        features = self._features(texts, targets, spans).astype(np.float64)  # probabilities that sum to 1
        if self.ratios is not None and self.ratios.ndim == 2:
            z = np.column_stack([_weighted(features, r) @ w + b
                                 for r, w, b in zip(self.ratios, self.coef, self.intercept, strict=True)])
            present = expit(z)
            present /= present.sum(axis=1, keepdims=True)
        else:
            z = _weighted(features, self.ratios) @ self.coef.T + self.intercept
            present = np.column_stack([1 - expit(z[:, 0]), expit(z[:, 0])]) if z.shape[1] == 1 else softmax(z, axis=1)
        probs = np.zeros((len(texts), self.num_classes))
        probs[:, self.classes] = present
        return probs

    def proba(self, texts: Sequence[str], targets: Sequence[str] | None = None,
              spans: Sequence[Span] | None = None) -> np.ndarray:
        """What a run scores, as `evaluation.score` gives it: two classes, P(positive) [n]; more, [n, classes].
        `targets` (and optionally their character `spans`): one per text, for a target-dependent model."""
        probs = self.class_proba(texts, targets, spans)
        return probs[:, 1] if self.num_classes == 2 else probs

    def proba_examples(self, examples: Sequence[Example]) -> np.ndarray:
        """`proba` of examples: their texts, and their targets and spans when they have them."""
        targets = [e.target or "" for e in examples] if any(e.target is not None for e in examples) else None
        return self.proba([e.text for e in examples], targets, [e.span for e in examples])

    def positive_proba(self, texts: list[str]) -> np.ndarray:
        """P(positive) of a two-class model."""
        if self.num_classes != 2:
            raise RunError(f"this tfidf model has {self.num_classes} classes ({', '.join(self.labels)}): use proba")
        return self.proba(texts)

    def _features(self, texts: Sequence[str], targets: Sequence[str] | None, spans: Sequence[Span] | None
                  ) -> sparse.csr_matrix:
        features = self.vectorizer.transform(texts)
        if (targets is None) != (self.target_vectorizer is None):
            raise DataError("this tfidf model was trained " + ("with targets: give one per text" if targets is None
                                                               else "on whole texts, without targets"))
        if targets is None or self.target_vectorizer is None:
            return features
        contexts = target_contexts(texts, targets, spans, self.settings.target_window)
        return sparse.hstack([features, self.target_vectorizer.transform(contexts)], format="csr")

    @property
    def num_features(self) -> int:
        extra = len(self.target_vectorizer.vocabulary_) if self.target_vectorizer is not None else 0
        return len(self.vectorizer.vocabulary_) + extra

    @property
    def num_parameters(self) -> int:
        """Weights and biases of the regression(s): features + 1 for two classes, (features + 1) per class else."""
        return int(self.coef.size + self.intercept.size)

    def save(self, folder: Path) -> None:
        """vocabulary and settings as JSON, the arrays as .npz: loading never unpickles anything."""
        with atomic_dir(folder) as tmp:
            saved: dict[str, Any] = {"settings": to_dict(self.settings), "vocabulary": _vocabulary(self.vectorizer),
                                     "classes": [int(c) for c in self.classes], "labels": self.labels}
            arrays = {"coef": self.coef, "intercept": self.intercept}
            if self.vectorizer.use_idf:  # binary presence features have no idf
                arrays["idf"] = self.vectorizer.idf_
            if self.target_vectorizer is not None:
                saved["target_vocabulary"] = _vocabulary(self.target_vectorizer)
                if self.target_vectorizer.use_idf:
                    arrays["target_idf"] = self.target_vectorizer.idf_
            if self.ratios is not None:
                arrays["ratios"] = self.ratios
            (tmp / MODEL_FILE).write_text(json.dumps(saved))
            np.savez(tmp / ARRAYS_FILE, **arrays)

    @classmethod
    def load(cls, folder: Path) -> TfidfClassifier:
        """A saved model (also one saved before N classes and targets: two classes, no target features)."""
        try:
            saved = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
                coef, intercept = arrays["coef"], arrays["intercept"]
                idf = arrays["idf"] if "idf" in arrays.files else None
                ratios = arrays["ratios"] if "ratios" in arrays.files else None
                target_idf = arrays["target_idf"] if "target_idf" in arrays.files else None
            settings = TfidfSettings(**saved["settings"])
            vocabulary, classes = saved["vocabulary"], np.asarray(saved["classes"], dtype=int)
            labels = list(saved.get("labels", BINARY_LABELS))
            target_vectorizer = None
            if "target_vocabulary" in saved:
                target_vectorizer = _fitted(_vectorizer(settings, saved["target_vocabulary"]), target_idf)
            vectorizer = _fitted(_vectorizer(settings, vocabulary), idf)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunError(f"{folder}: not a readable tfidf model ({type(e).__name__}: {e})") from None
        return cls(settings, vectorizer, ratios, coef, intercept, classes, labels, target_vectorizer)


def target_contexts(texts: Sequence[str], targets: Sequence[str], spans: Sequence[Span] | None,
                    window: int) -> list[str]:
    """Per text, its target and `window` words either side (whitespace words, as predictions.csv counts
    them). The target is at its span when known, else at its first occurrence; one that does not occur
    in the text (a prediction's free-form target) is its own words only."""
    out = []
    for i, (text, target) in enumerate(zip(texts, targets, strict=True)):
        span = spans[i] if spans is not None else None
        if span is None:
            try:
                span = locate(text, target, f"text {i + 1}")
            except DataError:
                out.append(target)
                continue
        left = text[:span[0]].split()[-window:] if window else []
        right = text[span[1]:].split()[:window] if window else []
        out.append(" ".join([*left, text[span[0]:span[1]], *right]))
    return out


def _vocabulary(vectorizer: TfidfVectorizer) -> dict[str, int]:
    return {term: int(i) for term, i in vectorizer.vocabulary_.items()}


def _logistic(settings: TfidfSettings, seed: int) -> LogisticRegression:
    return LogisticRegression(C=settings.c, max_iter=2000, random_state=seed)


def _vectorizer(settings: TfidfSettings, vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
    """Sublinear TF-IDF, or (settings.binary) plain 0/1 presence of each n-gram: NBSVM's features."""
    binary = settings.binary
    return TfidfVectorizer(ngram_range=(1, settings.ngram_max), min_df=settings.min_df,
                           max_features=settings.max_features, sublinear_tf=not binary, strip_accents="unicode",
                           token_pattern=settings.token_pattern, binary=binary, use_idf=not binary,
                           norm=None if binary else "l2", vocabulary=vocabulary, dtype=np.float32)


def _fitted(vectorizer: TfidfVectorizer, idf: np.ndarray | None) -> TfidfVectorizer:
    """A vectorizer with a saved vocabulary made ready to transform: its idf set, or (presence features,
    no idf) fitted on one dummy text, which leaves the given vocabulary as it is."""
    if vectorizer.use_idf:
        if idf is None:
            raise KeyError("idf")
        vectorizer.idf_ = idf
    else:
        vectorizer.fit(["-"])
    return vectorizer


def _nb_ratios(features: sparse.csr_matrix, inside: np.ndarray, alpha: float) -> np.ndarray:
    """log((p / |p|_1) / (q / |q|_1)): how much more a feature weighs in the `inside` texts (the positive
    class; with more classes, one class) than in the others."""
    p = alpha + np.asarray(features[inside].sum(axis=0)).ravel()
    q = alpha + np.asarray(features[~inside].sum(axis=0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


def _weighted(features: sparse.csr_matrix, ratios: np.ndarray | None) -> sparse.csr_matrix:
    return features if ratios is None else sparse.csr_matrix(features.multiply(ratios))


def _metrics(labels: list[int], scores: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The usual metrics, with the mean cross-entropy as the loss (as the transformer runs report it)."""
    loss = log_loss(labels, scores, labels=list(range(len(names))))
    return classification_metrics(labels, scores, loss=loss, names=names)


def _fit_features(vectorizer: Any, texts: list[str], settings: TfidfSettings, what: str) -> Any:
    """The vectorizer fitted on `texts`; training texts with no n-gram it counts (one-letter words under the
    default token pattern, or min_df above every n-gram's count) are an input error, not a traceback."""
    try:
        return vectorizer.fit_transform(texts)
    except ValueError as e:
        if "vocabulary" not in str(e) and "min_df" not in str(e):
            raise
        raise DataError(f"tfidf: the training {what} contain no n-gram that method.tfidf counts "
                        f"(token_pattern {settings.token_pattern!r}, min_df {settings.min_df}): {len(texts)} texts, "
                        "e.g. only one-letter words; set method.tfidf.token_pattern or min_df") from None


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
    fit_started = time.perf_counter()
    names = list(cfg.data.labels)
    classifier = TfidfClassifier.fit_examples(splits.train, cfg.method.tfidf, cfg.train.seed, names)
    train_seconds = time.perf_counter() - fit_started
    run = RunDir.create(Path(run_dir), cfg, overwrite=overwrite)  # after the fit: a refused one writes nothing
    history = []
    if splits.validation:
        val = _metrics([e.label for e in splits.validation], classifier.proba_examples(splits.validation), names)
        history.append({"phase": 1, "step": 1, "epoch": 1.0,
                        **{k: val[k] for k in ("loss", "accuracy", "roc_auc", "macro_f1")}})
        run.log({"event": "validation", **val})
        report(f"validation: accuracy {val['accuracy']:.4f}, ROC AUC {val['roc_auc']:.4f}")
    test_started = time.perf_counter()
    scores = classifier.proba_examples(splits.test)
    test = _metrics([e.label for e in splits.test], scores, names)
    test_seconds = time.perf_counter() - test_started
    run.log({"event": "final", "split": "test", **test})
    n = classifier.num_parameters
    metrics = {
        "name": cfg.name, "model": f"tfidf-{cfg.method.tfidf.variant}", "method": "tfidf", "test": test,
        "baseline": None, "validation": history,
        "parameters": {"total": n, "trainable": n, "trainable_ratio": 1.0, "lora": 0,
                       "features": classifier.num_features},
        "data": splits.summary() | {"skipped": splits.skipped, "warnings": splits.warnings},
        "train_seconds": round(train_seconds, 2),
        "test_seconds": round(test_seconds, 2), "wall_seconds": round(time.perf_counter() - started, 2),
    }
    run.write_predictions(splits.test, scores.tolist(), labels=names)
    classifier.save(run.model_dir)
    run.write_metrics(metrics)
    return metrics
