"""A bench's plots (PNG, matplotlib), drawn from its run directories like its tables: nothing is typed in.

Five figures answer the bench's questions: how well each row ranks (ROC curves), what its accuracy costs
(against trainable parameters and against training time), how training went (training and validation
loss), and where it fails (accuracy by review length). The data behind each figure is computed by a plain
function (tested on its own); drawing only lays it out.

With more than two classes a row's ROC curve is one-vs-rest, averaged over the classes (macro, the same
average as its ROC AUC in the tables), and a sixth figure shows each row's confusion matrix.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentitune.atomic import write_atomic
from sentitune.config import BINARY_LABELS

# Review length in words (whitespace-separated, after cleaning): the same bins for every tokenizer.
LENGTH_BINS: tuple[tuple[int, float], ...] = ((0, 100), (101, 200), (201, 300), (301, 500), (501, math.inf))
PLOTS = {
    "roc": "ROC curves on the test set",
    "accuracy_vs_parameters": "Test accuracy against trainable parameters",
    "accuracy_vs_time": "Test accuracy against training time",
    "time_to_accuracy": "Time to accuracy: each row's whole wall-clock time (data, training, test pass)",
    "curves": "Training and validation loss",
    "accuracy_by_length": "Test accuracy by review length",
}
MULTICLASS_PLOTS = {"confusion": "Confusion matrices on the test set (rows: true class, share of the row)"}
BUDGET_PLOTS = {"learning_curve": "Test accuracy against labelled reviews (train + validation; mean ± sd over seeds)"}
CAPTIONS = {**PLOTS, **MULTICLASS_PLOTS, **BUDGET_PLOTS}


@dataclass
class RowData:
    """What the plots need from one finished row's run directory."""

    name: str
    labels: np.ndarray  # class index per test example (binary: 0/1)
    scores: np.ndarray  # binary: P(positive) [n]; more classes: every class's probability [n, classes]
    preds: np.ndarray  # the row's decisions (its own threshold; more classes: the most probable)
    words: np.ndarray | None  # review lengths; None for runs written before predictions.csv had them
    train_curve: list[tuple[float, float]]  # (epoch across phases, mean training loss)
    val_curve: list[tuple[float, float]]  # (epoch across phases, validation loss)
    classes: list[str] = field(default_factory=lambda: list(BINARY_LABELS))  # names, in index order

    @property
    def multiclass(self) -> bool:
        return self.scores.ndim == 2


def read_row(name: str, run_dir: Path) -> RowData:
    """predictions.csv (either layout: prob_positive, or one prob_<class> column per class) and log.jsonl
    of a finished run."""
    with (run_dir / "predictions.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    words = np.array([int(r["words"]) for r in rows]) if rows and "words" in rows[0] else None
    train_curve, val_curve = loss_curves(_log(run_dir / "log.jsonl"))
    columns = [c for c in fields if c.startswith("prob_")]
    if len(columns) < 2:  # binary: prob_positive alone (more classes may have a prob_positive too)
        scores, classes = np.array([float(r["prob_positive"]) for r in rows]), list(BINARY_LABELS)
    else:
        scores = np.array([[float(r[c]) for c in columns] for r in rows]).reshape(len(rows), len(columns))
        classes = [c.removeprefix("prob_") for c in columns]
    return RowData(name, np.array([int(r["label"]) for r in rows]), scores, np.array([int(r["pred"]) for r in rows]),
                   words, train_curve, val_curve, classes)


def _log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def loss_curves(log: Iterable[dict[str, Any]]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Training and validation loss against epochs counted across phases (a two-phase run's second phase
    starts where the first ended)."""
    train: list[tuple[float, float]] = []
    val: list[tuple[float, float]] = []
    offsets: dict[int, float] = {}
    last_epoch: dict[int, float] = {}
    for record in log:
        if record.get("event") not in ("train", "validation") or "epoch" not in record:
            continue
        phase = int(record.get("phase", 1))
        if phase not in offsets:
            offsets[phase] = sum(last_epoch.get(p, 0.0) for p in range(1, phase))
        last_epoch[phase] = max(last_epoch.get(phase, 0.0), float(record["epoch"]))
        point = (offsets[phase] + float(record["epoch"]), float(record["loss"]))
        (train if record["event"] == "train" else val).append(point)
    return train, val


def length_label(low: int, high: float) -> str:
    """`101-200`, or `>500` for the open last bin."""
    return f"{low}-{int(high)}" if math.isfinite(high) else f">{low - 1}"


def accuracy_by_length(row: RowData) -> list[tuple[str, int, float | None]]:
    """(bin label, reviews in it, accuracy or None when empty) for each of LENGTH_BINS."""
    if row.words is None:
        return []
    out = []
    for low, high in LENGTH_BINS:
        inside = (row.words >= low) & (row.words <= high)
        label = length_label(low, high)
        n = int(inside.sum())
        out.append((label, n, float((row.preds[inside] == row.labels[inside]).mean()) if n else None))
    return out


def roc_points(row: RowData) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates, and the ROC AUC (scikit-learn). More classes: one-vs-rest, macro: the
    mean of each class's curve (true positive rate at every false positive rate any class reaches) and the
    mean of each class's AUC, over the classes present in the test set with examples on both sides."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if not row.multiclass:
        fpr, tpr, _ = roc_curve(row.labels, row.scores)
        return fpr, tpr, float(roc_auc_score(row.labels, row.scores))
    probs = row.scores / row.scores.sum(axis=1, keepdims=True)  # as metrics.py scores them
    present = [k for k in range(probs.shape[1]) if 0 < (row.labels == k).sum() < len(row.labels)]
    if not present:
        return np.array([]), np.array([]), math.nan
    curves = [roc_curve(row.labels == k, probs[:, k])[:2] for k in present]
    grid = np.unique(np.concatenate([[0.0], *(fpr for fpr, _ in curves)]))
    tpr = np.mean([np.interp(grid, fpr, tpr) for fpr, tpr in curves], axis=0)
    auc = float(np.mean([roc_auc_score(row.labels == k, probs[:, k]) for k in present]))
    return np.concatenate([[0.0], grid]), np.concatenate([[0.0], tpr]), auc


def confusion(row: RowData) -> np.ndarray:
    """Counts [true class, predicted class] of the row's decisions (scikit-learn)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(row.labels, row.preds, labels=list(range(len(row.classes))))


# ------------------------------------------------------------------------------------------ drawing


def _figure(width: float = 7.0, height: float = 4.5) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, the same on any machine
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def _scatter(ax: Any, points: list[tuple[str, float, float]]) -> None:
    for name, x, y in points:
        ax.scatter([x], [y], s=30)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)


def draw_all(results: dict[str, Any], data: dict[str, RowData], out: Path) -> dict[str, Path]:
    """The PNGs in `out`, from results.json's rows and each row's RowData; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in results["rows"] if r["name"] in data]
    paths = {}

    multiclass = any(data[r["name"]].multiclass for r in rows)
    fig, ax = _figure(6.5, 5.5)
    for r in rows:
        d = data[r["name"]]
        fpr, tpr, auc = roc_points(d)
        if len(fpr):
            kind = "macro AUC" if d.multiclass else "AUC"
            ax.plot(fpr, tpr, lw=1.2, label=f"{r['name']} ({kind} {auc:.3f}, n={len(d.labels):,})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    title = PLOTS["roc"] + ("\n(more than two classes: one-vs-rest, macro average over the classes)" if multiclass
                            else "")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    paths["roc"] = _save(fig, out / "roc.png")

    for plot, key, xlabel in (("accuracy_vs_parameters", "trainable_parameters", "trainable parameters"),
                              ("accuracy_vs_time", "train_seconds", "training time, seconds")):
        fig, ax = _figure()
        _scatter(ax, [(r["name"], r[key], r["accuracy"]) for r in rows if r[key] and r["accuracy"] is not None])
        ax.set(xscale="log", xlabel=f"{xlabel} (log scale)", ylabel="test accuracy", title=PLOTS[plot])
        paths[plot] = _save(fig, out / f"{plot}.png")

    paths["time_to_accuracy"] = _draw_time_to_accuracy(rows, out)

    # Rows that trained in steps (a TF-IDF fit or a zero-shot run has one validation point, or none).
    curved = [r["name"] for r in rows if data[r["name"]].train_curve or len(data[r["name"]].val_curve) > 1]
    cols = 3
    grid = max(1, math.ceil(len(curved) / cols))
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(grid, cols, figsize=(4 * cols, 2.8 * grid), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, curved, strict=False):
        d = data[name]
        if d.train_curve:
            ax.plot(*zip(*d.train_curve, strict=True), lw=1, label="training")
        if d.val_curve:
            ax.plot(*zip(*d.val_curve, strict=True), marker="o", lw=1, label="validation")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(curved):]:
        ax.axis("off")
    if not curved:
        axes.flat[0].text(0.5, 0.5, "no row trained in steps", ha="center", va="center")
    fig.suptitle(PLOTS["curves"])
    paths["curves"] = _save(fig, out / "curves.png")

    fig, ax = _figure()
    for r in rows:
        bins = accuracy_by_length(data[r["name"]])
        kept = [(label, acc) for label, _, acc in bins if acc is not None]
        if kept:
            ax.plot([k[0] for k in kept], [k[1] for k in kept], marker="o", lw=1, label=r["name"])
    ax.set(xlabel="review length (words)", ylabel="test accuracy", title=PLOTS["accuracy_by_length"])
    ax.legend(fontsize=7)
    paths["accuracy_by_length"] = _save(fig, out / "accuracy_by_length.png")
    if multiclass:
        paths["confusion"] = _draw_confusion([r["name"] for r in rows if data[r["name"]].multiclass], data, out)
    if results.get("curve"):
        paths["learning_curve"] = _draw_learning_curve(results["curve"], out)
    return paths


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (time, accuracy) points no other point beats at once on time and on accuracy, fastest first: the
    best accuracy to be had at each budget."""
    best: list[tuple[float, float]] = []
    for t, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not best or a > best[-1][1]:
            best.append((t, a))
    return best


def _draw_time_to_accuracy(rows: list[dict[str, Any]], out: Path) -> Path:
    """Accuracy against the wall-clock minutes of the whole row, with the frontier as a step line. The
    frontier joins only rows scored on the most test reviews (the same test set); a row scored on fewer
    says its n in its label."""
    fig, ax = _figure()
    timed = [r for r in rows if r.get("wall_seconds") and r["accuracy"] is not None]
    most = max((r["n"] or 0 for r in timed), default=0)
    _scatter(ax, [(r["name"] if r["n"] == most else f"{r['name']} (n={r['n']:,})", r["wall_seconds"] / 60,
                   r["accuracy"]) for r in timed])
    best = frontier([(r["wall_seconds"] / 60, r["accuracy"]) for r in timed if r["n"] == most])
    if len(best) > 1:
        xs, ys = zip(*best, strict=True)
        ax.step(xs, ys, where="post", ls="--", lw=1, c="grey", label=f"best accuracy at this budget (n={most:,})")
        ax.legend(fontsize=7, loc="lower right")
    ax.margins(x=0.25)  # room for the labels of the first and last points
    ax.set(xscale="log", xlabel="wall-clock minutes of the whole row (log scale)", ylabel="test accuracy",
           title=PLOTS["time_to_accuracy"])
    ax.title.set_fontsize(9)
    return _save(fig, out / "time_to_accuracy.png")


def _draw_learning_curve(curve: list[dict[str, Any]], out: Path) -> Path:
    """One line per method over label budgets (log scale above the smallest budget, linear from 0 to it, so a
    line's 0-label point shows; sd as error bars, each point's mean minutes beside it); a line whose only point is
    at 0 labels (a prompt) is a dashed level: what no labels at all give."""
    fig, ax = _figure()
    for line in curve:
        points = line["points"]
        if [p["labels"] for p in points] == [0]:
            ax.axhline(points[0]["accuracy_mean"], ls="--", lw=1, c="grey",
                       label=f"{line['line']}: 0 labels ({points[0]['accuracy_mean']:.3f})")
            continue
        xs, ys = [p["labels"] for p in points], [p["accuracy_mean"] for p in points]
        ax.errorbar(xs, ys, yerr=[p["accuracy_sd"] or 0.0 for p in points], marker="o", lw=1.2, capsize=3,
                    label=line["line"])
        for p in points:
            if p["cost_seconds_mean"]:
                ax.annotate(f"{p['cost_seconds_mean'] / 60:.1f} min", (p["labels"], p["accuracy_mean"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=6)
    budgets = sorted({p["labels"] for line in curve for p in line["points"] if len(line["points"]) > 1})
    ax.set_xscale("symlog", linthresh=min([b for b in budgets if b > 0], default=1))
    ax.set(xlabel="labelled reviews (train + validation, log scale)", ylabel="test accuracy",
           title=BUDGET_PLOTS["learning_curve"])
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])  # the budgets themselves, not powers of ten
    ax.minorticks_off()
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out / "learning_curve.png")


def _draw_confusion(names: list[str], data: dict[str, RowData], out: Path) -> Path:
    """One heat map per row: the share of each true class given each prediction, with the counts."""
    import matplotlib.pyplot as plt

    cols = min(3, len(names))
    grid = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(grid, cols, figsize=(3.6 * cols, 3.3 * grid), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        d = data[name]
        counts = confusion(d)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, f"{share[i, j]:.2f}\n({n})", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
        ticks = range(len(d.classes))
        ax.set_xticks(ticks, d.classes, fontsize=7, rotation=30)
        ax.set_yticks(ticks, d.classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(MULTICLASS_PLOTS["confusion"])
    return _save(fig, out / "confusion.png")
