"""metrics.py: classification metrics from (labels, scores), against scikit-learn's own; the lines people read."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import THREE_CLASSES
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from sentitune.metrics import classification_metrics, confusion_line, table_columns


def test_nclass_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y.tolist(), probs, loss=0.5, names=THREE_CLASSES)
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1"] == m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    per = f1_score(y, pred, average=None)
    assert [m["per_class"][n]["f1"] for n in THREE_CLASSES] == pytest.approx(per.tolist())
    assert m["labels"] == THREE_CLASSES and m["loss"] == 0.5
    # a class absent from the labels: ROC AUC one-vs-rest is undefined, the rest still computed
    assert np.isnan(classification_metrics([0, 1, 1], probs[:3])["roc_auc"])
    # binary keeps its threshold semantics and gains macro-F1 and per-class scores
    b = classification_metrics(y[y < 2].tolist(), probs[y < 2, 1].tolist())
    assert b["macro_f1"] == pytest.approx(f1_score(y[y < 2], (probs[y < 2, 1] > 0.5).astype(int), average="macro"))


def test_table_columns_and_confusion_line_follow_the_number_of_classes() -> None:
    y = [0, 1, 1, 0]
    binary = classification_metrics(y, [0.2, 0.8, 0.6, 0.4])
    assert table_columns(binary) == ("accuracy", "precision", "recall", "f1", "roc_auc", "loss")
    assert confusion_line(binary) == "confusion matrix [[TN, FP], [FN, TP]]: [[2, 0], [0, 2]]"
    probs = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.2 / 3
    three = classification_metrics([0, 1, 2, 1], probs, names=THREE_CLASSES)
    assert table_columns(three) == ("accuracy", "macro_f1", "roc_auc", "loss", "f1_negative", "f1_neutral",
                                    "f1_positive")
    assert confusion_line(three).startswith("confusion matrix (rows: true, columns: predicted; negative, neutral, ")
