"""The zero-shot method end to end: optional prompt sweep on validation, test with the raw and the three
calibrated decisions (two for K > 2 classes), optional few-shot, and the run's outputs (metrics, predictions,
margins, predictor)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentitune.atomic import write_csv
from sentitune.config import ConfigError, ExperimentConfig, PromptTemplate, to_dict
from sentitune.data.records import Example
from sentitune.data.sources import load_splits
from sentitune.data.splits import sample
from sentitune.metrics import classification_metrics
from sentitune.runs import RunDir
from sentitune.runtime import Report, seed_everything, set_threads
from sentitune.zero_shot.calibration import (
    Decision,
    calibrate,
    calibrated_rows,
    combine_margins,
    contextual_decision,
    decision_metrics,
    label_free_threshold,
    member_scales,
    probabilities,
)
from sentitune.zero_shot.predictor import save_predictor
from sentitune.zero_shot.prompts import PromptEncoder, describe_prompts, draw_demonstrations
from sentitune.zero_shot.scoring import CausalScorer, load_causal_lm
from sentitune.zero_shot.templates import ENSEMBLE_SEP, check_templates, get_templates


@dataclass
class PromptResult:
    """One prompt (zero- or k-shot) on test: its margins (or K-class log-probabilities), and what each decision
    (threshold, or per-class bias) makes of them."""

    template: str
    shots: int
    label_words: dict[str, dict[str, Any]]
    thresholds: dict[str, Decision]
    rows: dict[str, dict[str, Any]]
    margins: np.ndarray
    scales: list[float]  # per ensemble member; [1.0] for a single prompt
    prompt_example: str  # the prompt around a placeholder review, for the record


def score_examples(scorer: CausalScorer, encoder: PromptEncoder, examples: Sequence[Example], desc: str
                   ) -> np.ndarray:
    """`CausalScorer.scores` of examples: their texts, and their targets for a target template."""
    return scorer.scores(encoder, [x.text for x in examples], desc, [x.target for x in examples])


def evaluate_prompt(scorer: CausalScorer, encoders: Sequence[PromptEncoder], test: Sequence[Example],
                    calibration: Sequence[Example], content_free: Sequence[str], shots: int = 0) -> PromptResult:
    """Score test once and derive the raw and the calibrated decisions from the one margin (or K log-probs)."""
    name = ENSEMBLE_SEP.join(e.template.name for e in encoders)
    tag = f"{name}, {shots}-shot"
    val_parts = [score_examples(scorer, e, calibration, f"calibration ({tag})") for e in encoders]
    test_parts = [score_examples(scorer, e, test, f"test ({tag})") for e in encoders]
    offsets = [contextual_decision(scorer, e, content_free) for e in encoders]
    cal = calibrate(val_parts, offsets, [x.label for x in calibration])
    margins = combine_margins(test_parts, cal.scales)
    words, example = describe_prompts(encoders)
    rows = calibrated_rows([x.label for x in test], margins, cal.thresholds, encoders[0].classes)
    return PromptResult(name, shots, words, cal.thresholds, rows, margins, cal.scales, example)


def sweep_row(labels: Sequence[int], member_margins: Sequence[np.ndarray]) -> dict[str, float]:
    """A prompt's (or an ensemble's) validation numbers from its members' margins on the validation reviews:
    raw accuracy, ROC AUC, raw positive rate, median-calibrated accuracy. K > 2 classes: raw accuracy,
    one-vs-rest ROC AUC and macro-F1 (the median threshold is binary only)."""
    margins = combine_margins(member_margins, member_scales(member_margins))
    if margins.ndim == 2:
        raw = decision_metrics(labels, margins, [0.0] * margins.shape[1])
        return {"accuracy": raw["accuracy"], "roc_auc": raw["roc_auc"], "macro_f1": raw["macro_f1"]}
    raw = classification_metrics(labels, margins.tolist(), 0.0)
    median = classification_metrics(labels, margins.tolist(), label_free_threshold(margins))
    return {"accuracy": raw["accuracy"], "roc_auc": raw["roc_auc"], "positive_rate": raw["positive_rate"],
            "calibrated_accuracy": median["accuracy"]}


def sweep_templates(scorer: CausalScorer, tokenizer: Any, names: Sequence[str], custom: Sequence[PromptTemplate],
                    validation: Sequence[Example], review_tokens: int, truncation: str,
                    classes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each template (or `a+b` ensemble) on the labelled validation slice: raw accuracy, ROC AUC and
    median-calibrated accuracy. An ensemble reuses its members' margins when they are in the sweep too."""
    labels = [e.label for e in validation]
    scored: dict[str, np.ndarray] = {}
    table = {}
    for name in names:
        encoders = [PromptEncoder(tokenizer, t, review_tokens, truncation, classes=classes)
                    for t in get_templates(name, custom)]
        for e in encoders:
            if e.template.name not in scored:
                scored[e.template.name] = score_examples(scorer, e, validation, f"sweep {e.template.name}")
        table[name] = {**sweep_row(labels, [scored[e.template.name] for e in encoders]),
                       "label_words": describe_prompts(encoders)[0]}
    return table


def run_zero_shot(cfg: ExperimentConfig, out: Path | None = None, overwrite: bool = False, progress: bool = False,
                  report: Report | None = None) -> dict[str, Any]:
    """The zero-shot method end to end: data, optional sweep, test with calibrations, few-shot, outputs."""
    say = report or (lambda s: None)
    zs = cfg.zero_shot
    seed = cfg.train.seed
    started = time.perf_counter()
    run = RunDir.create(out, cfg, overwrite=overwrite) if out is not None else None
    set_threads(cfg.train.threads)
    seed_everything(seed)
    splits = load_splits(cfg.data, seed)
    if not splits.test:
        raise ConfigError("zero-shot: the data source has no test split")
    # One calibration slice of training reviews (the validation carve-out): its labels fit the
    # validation threshold; the label-free threshold reads the same reviews without their labels.
    labelled = sample(splits.validation, zs.calibration_size, seed)
    if len(labelled) < 2:
        raise ConfigError("zero-shot: calibration needs a validation slice (data.val_size > 0)")
    classes = cfg.data.labels
    targeted = splits.test[0].target is not None  # load_splits: all examples have a target, or none
    check_templates([t for n in (zs.sweep or [zs.template]) for t in get_templates(n, zs.templates)], classes,
                    targeted)
    model, tokenizer = load_causal_lm(cfg.model.spec)
    scorer = CausalScorer(model, tokenizer.pad_token_id, zs.batch_size, progress)
    say(f"data: {len(splits.test)} test reviews, {len(labelled)} validation reviews for calibration")

    result: dict[str, Any] = {"model": cfg.model.spec, "data": splits.summary(), "review_tokens": zs.review_tokens,
                              "truncation": zs.truncation}
    name = zs.template
    if zs.sweep:
        table = sweep_templates(scorer, tokenizer, zs.sweep, zs.templates, labelled, zs.review_tokens, zs.truncation,
                                classes)
        name = max(table, key=lambda n: table[n][zs.sweep_metric])
        result["sweep"] = {"metric": zs.sweep_metric, "selected": name, "validation": table}
        say(f"sweep on {len(labelled)} validation reviews: selected {name!r} by {zs.sweep_metric}")
    templates = get_templates(name, zs.templates)

    encoders = [PromptEncoder(tokenizer, t, zs.review_tokens, zs.truncation, classes=classes) for t in templates]
    results = [evaluate_prompt(scorer, encoders, splits.test, labelled, zs.content_free)]
    demos = draw_demonstrations(splits.train, zs.shots, seed, len(classes))  # [] when shots == 0
    if zs.shots:
        few = [PromptEncoder(tokenizer, t, zs.review_tokens, zs.truncation, demos, zs.shot_tokens, classes)
               for t in templates]
        results.append(evaluate_prompt(scorer, few, splits.test, labelled, zs.content_free, zs.shots))

    result["template"] = (to_dict(templates[0]) if len(templates) == 1
                          else {"name": name, "members": [to_dict(t) for t in templates]})
    result["label_words"] = results[0].label_words
    result["prompts"] = {f"{r.shots}-shot": r.prompt_example for r in results}
    result["thresholds"] = {f"{r.shots}-shot": r.thresholds for r in results}
    result["rows"] = {(k if r.shots == 0 else f"{r.shots}-shot {k}"): v for r in results for k, v in r.rows.items()}
    primary = results[-1]
    result["test"] = primary.rows[zs.decision]
    result["decision"] = f"{primary.shots}-shot {zs.decision}"
    result["tokens_scored"] = scorer.tokens
    result["tokens_per_second"] = round(scorer.tokens / scorer.seconds) if scorer.seconds else None
    result["wall_seconds"] = time.perf_counter() - started
    if run is not None:
        save_predictor(run.path, cfg.model.spec, templates, primary.scales, zs.review_tokens, zs.truncation, demos,
                       zs.shot_tokens, primary.thresholds[zs.decision], result["decision"], classes)
        for r in results:
            suffix = "" if r is primary else f"-{r.shots}-shot"
            t = r.thresholds[zs.decision]
            probs = probabilities(r.margins, t)
            run.write_predictions(splits.test, probs, name=f"predictions{suffix}.csv", labels=classes)
            _write_margins(run.path / f"margins{suffix}.csv", splits.test, r.margins, classes)
        run.write_metrics(result)
    return result


def _write_margins(path: Path, examples: Sequence[Example], margins: np.ndarray, classes: Sequence[str]) -> None:
    """The raw scores: a margin per example, or (K > 2 classes) a log-probability per class."""
    columns = ["margin"] if margins.ndim == 1 else [f"logp_{c}" for c in classes]
    rows = ([e.id, e.label, *(f"{x:.6f}" for x in np.atleast_1d(m))] for e, m in zip(examples, margins, strict=True))
    write_csv(path, ["id", "label", *columns], rows)  # ids can be the user's: written spreadsheet-safe
