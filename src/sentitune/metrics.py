"""Metrics from (labels, scores): one function, used by every method.

Two classes: scores are the positive class's, probabilities or any monotone margin (zero-shot
log-likelihood differences); ROC AUC only needs the ranking, the other metrics use `threshold`.
More classes: scores are rows of class probabilities; the prediction is the most probable class,
precision/recall/F1 are macro averages (per class in `per_class`), ROC AUC is one-vs-rest, macro.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_metrics(
    labels: Sequence[int], scores: Sequence[float] | Sequence[Sequence[float]] | np.ndarray, threshold: float = 0.5,
    loss: float | None = None, names: Sequence[str] | None = None,
) -> dict[str, object]:
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    if s.ndim == 2:
        return _multiclass(y, s, loss, list(names) if names else [f"class_{i}" for i in range(s.shape[1])])
    pred = (s > threshold).astype(int)
    out: dict[str, object] = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan"),
        "positive_rate": float(pred.mean()) if len(pred) else 0.0,
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),  # rows: true neg, true pos
        "macro_f1": float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)),
        "per_class": _per_class(y, pred, list(names) if names else ["negative", "positive"]),
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def _per_class(y: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    ids = list(range(len(names)))
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=ids, zero_division=0)
    return {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(names)}


def _multiclass(y: np.ndarray, probs: np.ndarray, loss: float | None, names: list[str]) -> dict[str, object]:
    ids = list(range(probs.shape[1]))
    pred = probs.argmax(axis=1)
    present = set(y.tolist())
    auc = float("nan")
    if present == set(ids) and len(y):  # one-vs-rest needs every class on both sides
        auc = float(roc_auc_score(y, probs / probs.sum(axis=1, keepdims=True), multi_class="ovr", average="macro",
                                  labels=ids))
    macro = {name: float(fn(y, pred, labels=ids, average="macro", zero_division=0))
             for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score))}
    out: dict[str, object] = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)) if len(y) else 0.0,
        **macro,  # precision, recall, f1: macro averages over the classes
        "macro_f1": macro["f1"],
        "roc_auc": auc,  # one-vs-rest, macro average
        "confusion_matrix": confusion_matrix(y, pred, labels=ids).tolist(),  # rows: true class, columns: predicted
        "labels": names,
        "per_class": _per_class(y, pred, names),
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def format_table(rows: dict[str, dict[str, object]], columns: Sequence[str] = ("accuracy", "precision", "recall",
                 "f1", "roc_auc", "loss")) -> str:
    """A plain-text table, one row per named metrics dict (e.g. baseline vs trained); a column f1_<class>
    is that class's F1 (from per_class)."""
    header = ["", *columns]
    lines = [header]
    for name, metrics in rows.items():
        cells = [name]
        for c in columns:
            v = metrics.get(c)
            if v is None and c.startswith("f1_"):
                v = (metrics.get("per_class") or {}).get(c[3:], {}).get("f1")
            cells.append(f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v)))
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


# ------------------------------------------------------------------------- metrics as people read them


def count_line(metrics: dict[str, Any]) -> str:
    return f"{metrics['n']} {'reviews' if 'labels' not in metrics else 'examples'}"


def table_columns(metrics: dict[str, Any] | None) -> tuple[str, ...]:
    """Two classes: the positive class's precision, recall, F1; more: macro averages, and each class's F1."""
    if not metrics or "labels" not in metrics:
        return ("accuracy", "precision", "recall", "f1", "roc_auc", "loss")
    return ("accuracy", "macro_f1", "roc_auc", "loss", *(f"f1_{name}" for name in metrics["labels"]))


def confusion_line(metrics: dict[str, Any]) -> str:
    if "labels" not in metrics:
        return f"confusion matrix [[TN, FP], [FN, TP]]: {metrics['confusion_matrix']}"
    return (f"confusion matrix (rows: true, columns: predicted; {', '.join(metrics['labels'])}): "
            f"{metrics['confusion_matrix']}")


def answered(metrics: dict[str, object]) -> list[int]:
    """The classes a model's decisions use on some reviews, from their confusion matrix (columns: predicted): a
    model that answers one class for every review of a two-class set learned nothing that tells them apart."""
    return np.flatnonzero(np.asarray(metrics["confusion_matrix"]).sum(axis=0)).tolist()
