"""How closely an exported folder's scores match sentitune's own Predictor on the same reviews: what
export_check.py (the transformers pipeline) and portable_check.py (the folder's own scorer) both measure, and
the one-row Markdown table both write into docs/EXPORT.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentitune.markdown import table


def agreement(theirs: Sequence[dict[str, float]], ours: Sequence[Any], gold: Sequence[int],
              labels: Sequence[str]) -> dict[str, Any]:
    """Largest absolute probability difference over every review and class, labels that differ (the other
    side's argmax against the Predictor's label) and the Predictor's accuracy on the gold label indices."""
    pairs = list(zip(theirs, ours, strict=True))
    diff = max(abs(t[name] - o.probs[name]) for t, o in pairs for name in labels)
    flips = sum(max(t, key=t.__getitem__) != o.label for t, o in pairs)
    accuracy = sum(o.label == labels[g] for o, g in zip(ours, gold, strict=True)) / len(gold)
    return {"max_probability_difference": diff, "labels_differ": flips, "accuracy": round(accuracy, 4)}


def one_row_table(columns: Sequence[tuple[str, Any]]) -> str:
    """A Markdown table of one row from (header, value) pairs: the doc block's body."""
    return "\n".join(table([h for h, _ in columns], [[v for _, v in columns]])) + "\n"
