"""Metrics from (labels, positive-class scores): one function, used by every method.

Scores may be probabilities or any monotone margin (zero-shot log-likelihood differences);
ROC AUC only needs the ranking, the other metrics use `threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_metrics(
    labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5, loss: float | None = None
) -> dict[str, object]:
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
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
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def format_table(rows: dict[str, dict[str, object]], columns: Sequence[str] = ("accuracy", "precision", "recall",
                 "f1", "roc_auc", "loss")) -> str:
    """A plain-text table, one row per named metrics dict (e.g. baseline vs trained)."""
    header = ["", *columns]
    lines = [header]
    for name, metrics in rows.items():
        cells = [name]
        for c in columns:
            v = metrics.get(c)
            cells.append(f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v)))
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)
