"""The recipe registry: for each kind of run (kinds.py), how it runs, how a saved one is loaded to score reviews,
and how its result reads on a terminal. `sentitune train`, `bench`, `evaluate`, `predict` and `serve` ask here;
none of them knows the kinds.

A new kind of run: a `Kind` in kinds.py (what it can do), then a `Recipe` below: its `run` (a config and a run
directory -> the metrics it wrote), its scorer class (scorers.py: `probabilities`, `evaluate`) and its `summary`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentitune.config import ExperimentConfig
from sentitune.kinds import CLASSIFIER, TFIDF, ZERO_SHOT, Kind, kind_of
from sentitune.metrics import confusion_line, count_line, format_table, table_columns
from sentitune.runtime import Report
from sentitune.scorers import ClassifierScorer, PromptScorer, Scorer, TfidfScorer


@dataclass(frozen=True)
class Recipe:
    kind: Kind
    # (config, run directory, resume, overwrite, progress, report) -> the metrics written to the run directory
    run: Callable[[ExperimentConfig, Path, bool, bool, bool, Report], dict[str, Any]]
    scorer: type[Scorer]  # a saved run of this kind, loaded to score reviews
    summary: Callable[[ExperimentConfig, dict[str, Any], Path], str]  # what `sentitune train` prints at the end
    # (config, metrics.json's `data` summary) -> the labelled reviews the run was given: a bench's label budget
    labels: Callable[[ExperimentConfig, dict[str, Any]], int]


def _train(cfg: ExperimentConfig, out: Path, resume: bool, overwrite: bool, progress: bool,
           report: Report) -> dict[str, Any]:
    from sentitune.training import train

    return train(cfg, out, resume=resume, overwrite=overwrite, progress=progress, report=report)


def _zero_shot(cfg: ExperimentConfig, out: Path, resume: bool, overwrite: bool, progress: bool,
               report: Report) -> dict[str, Any]:
    """`resume` does nothing: a zero-shot run writes no checkpoint (a bench row without one starts again)."""
    from sentitune.zero_shot.recipe import run_zero_shot

    return run_zero_shot(cfg, out, overwrite=overwrite, progress=progress, report=report)


def _tfidf(cfg: ExperimentConfig, out: Path, resume: bool, overwrite: bool, progress: bool,
           report: Report) -> dict[str, Any]:
    """`resume` does nothing: a fit takes seconds to a minute and writes no checkpoint."""
    from sentitune.classical import run_tfidf

    return run_tfidf(cfg, out, overwrite=overwrite, report=report)


def _trained_summary(cfg: ExperimentConfig, metrics: dict[str, Any], out: Path) -> str:
    """The baseline, the trained classifier (and each half of an ensemble), parameters, confusion, speed."""
    lines = []
    rows = {"untrained (baseline)": metrics["baseline"]} if metrics["baseline"] else {}
    members = (metrics.get("ensemble") or {}).get("test") or {}
    for member, label in (("transformer", f"{cfg.method.name} alone"), ("ngram", "n-gram alone")):
        if member in members:  # an ensemble: each model's accuracy on its own, then both together
            rows[label] = members[member]
    if metrics["test"] is not None:
        rows[f"{cfg.method.name} + n-gram" if members else f"{cfg.method.name} (trained)"] = metrics["test"]
        lines.append(f"\ntest set, {count_line(metrics['test'])} ({cfg.model.spec}, {cfg.method.name}):")
    else:
        lines.append("\nno test pass (train.evaluate_test=false)" + (":" if rows else ""))
    if rows:
        lines.append(format_table(rows, table_columns(metrics["test"] or metrics["baseline"])))
    par = metrics["parameters"]
    lines.append(f"parameters: {par['trainable']:,} trainable of {par['total']:,} "
                 f"({100 * par['trainable_ratio']:.3f}%)")
    if metrics["test"] is not None:
        lines.append(confusion_line(metrics["test"]))
    lines.append(f"training: {metrics['train_tokens']:,} tokens in {metrics['train_seconds']:.0f} s "
                 f"({metrics['train_tokens_per_second']} tokens/s, {metrics['precision']}); "
                 f"wall {metrics['wall_seconds']:.0f} s")
    lines.append(f"run directory: {out}")
    return "\n".join(lines)


def _zero_shot_summary(cfg: ExperimentConfig, result: dict[str, Any], out: Path) -> str:
    """The label words, the template sweep (if any), and every decision's test metrics."""
    lines = [f"label word {name}: {info['word']!r} -> tokens {info['tokens']}"
             for name, info in result["label_words"].items()]
    binary = "threshold" in result["test"]  # K > 2 classes: macro averages, a bias per class
    if "sweep" in result:
        lines.append(format_table(result["sweep"]["validation"], ("accuracy", "calibrated_accuracy", "roc_auc",
                                                                  "positive_rate") if binary
                                  else ("accuracy", "macro_f1", "roc_auc")))
        lines.append(f"selected template: {result['sweep']['selected']} (by validation {result['sweep']['metric']})")
    lines.append(f"\ntest set, {result['test']['n']} reviews ({cfg.model.spec}, template "
                 f"{result['template']['name']}):")
    lines.append(format_table(result["rows"], ("accuracy", "precision", "recall", "f1", "roc_auc", "positive_rate",
                                               "threshold") if binary
                              else ("accuracy", "precision", "recall", "macro_f1", "roc_auc")))
    if not binary:
        lines.append("precision, recall: macro averages over the classes; roc_auc: one-vs-rest")
    lines.append(f"predictions ({result['decision']} {'threshold' if binary else 'bias'}) and margins in {out}")
    return "\n".join(lines)


def _tfidf_summary(cfg: ExperimentConfig, metrics: dict[str, Any], out: Path) -> str:
    return "\n".join([
        f"\ntest set, {count_line(metrics['test'])} ({metrics['model']}):",
        format_table({"tfidf (trained)": metrics["test"]}, table_columns(metrics["test"])),
        f"features: {metrics['parameters']['features']:,} n-grams",
        confusion_line(metrics["test"]),
        f"training: {metrics['train_seconds']:.1f} s; test {metrics['test_seconds']:.1f} s; "
        f"wall {metrics['wall_seconds']:.0f} s",
        f"run directory: {out}"])


def _given_labels(cfg: ExperimentConfig, data: dict[str, Any]) -> int:
    """A trained run is given its training and its validation reviews, labelled: the budget counts both (not the
    ones a self-training teacher labelled)."""
    return sum(int(data[s]["n"]) - int(data[s].get("pseudo", 0)) for s in ("train", "validation"))


def _prompt_labels(cfg: ExperimentConfig, data: dict[str, Any]) -> int:
    """A prompt reads labels only for its demonstrations (shots) and, when its decision or a template sweep
    uses them, the labelled calibration slice of validation; label-free, raw and contextual decisions read none."""
    zs = cfg.zero_shot
    chooses = zs.decision == "validation" or bool(zs.sweep)
    return zs.shots + (min(zs.calibration_size, int(data["validation"]["n"])) if chooses else 0)


RECIPES = {r.kind.name: r for r in (
    Recipe(CLASSIFIER, _train, ClassifierScorer, _trained_summary, _given_labels),
    Recipe(ZERO_SHOT, _zero_shot, PromptScorer, _zero_shot_summary, _prompt_labels),
    Recipe(TFIDF, _tfidf, TfidfScorer, _tfidf_summary, _given_labels),
)}


def recipe_of(cfg: ExperimentConfig) -> Recipe:
    """The recipe of a run's config (its method's kind)."""
    return RECIPES[kind_of(cfg).name]


def run_recipe(cfg: ExperimentConfig, out: Path, resume: bool = False, overwrite: bool = False,
               progress: bool = False, report: Report = lambda s: None, experiment: str | None = None,
               store: Path | None = None) -> dict[str, Any]:
    """Run `cfg` by its recipe into `out`, reported to train.report_to's trackers (`experiment`: the bench's or
    search's name, which groups its runs; `store`: the folder of the default local MLflow store); the CLI, the
    Python API, bench and search all start runs here."""
    from sentitune.tracking import tracked

    with tracked(cfg, out, experiment, resume, store):
        return recipe_of(cfg).run(cfg, out, resume, overwrite, progress, report)
