"""A saved zero-shot run as a predictor: `zero_shot.json` holds everything needed to score new reviews
exactly as the run scored test (model, templates, classes, ensemble scales, demonstrations, decision)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentitune.atomic import write_json
from sentitune.config import BINARY_LABELS, PromptTemplate, to_dict
from sentitune.data.records import Example
from sentitune.errors import ModelError
from sentitune.zero_shot.calibration import Decision, combine_margins, decision_metrics, probabilities
from sentitune.zero_shot.prompts import Demonstration, PromptEncoder
from sentitune.zero_shot.scoring import CausalScorer, load_causal_lm

PREDICTOR = "zero_shot.json"


def save_predictor(run_dir: Path, spec: str, templates: Sequence[PromptTemplate], scales: Sequence[float],
                   review_tokens: int, truncation: str, demonstrations: Sequence[Demonstration], shot_tokens: int,
                   threshold: Decision, decision: str, labels: Sequence[str] = BINARY_LABELS) -> None:
    """Everything `predict` needs to score new reviews exactly as the run scored test.

    The demonstrations are stored as text, so a few-shot prompt does not depend on re-reading train. The
    decision is a threshold on the margin (two classes) or, under `bias`, one bias per class (K > 2).
    """
    key = "bias" if isinstance(threshold, list) else "threshold"
    write_json(run_dir / PREDICTOR, {
        "model": spec, "templates": [to_dict(t) for t in templates], "labels": list(labels), "scales": list(scales),
        "review_tokens": review_tokens, "truncation": truncation,
        "shot_tokens": shot_tokens, "demonstrations": [_demonstration(d) for d in demonstrations],
        key: threshold, "decision": decision})


def _demonstration(demo: Demonstration) -> dict[str, Any]:
    return {"text": demo.text, "label": demo.label, **({"target": demo.target} if demo.target is not None else {})}


class SavedPrompt:
    """A saved zero-shot run, loaded once: its causal LM, prompt encoders, ensemble scales and decision."""

    def __init__(self, run_dir: Path, batch_size: int = 8, progress: bool = False) -> None:
        path = Path(run_dir) / PREDICTOR
        try:
            saved = json.loads(path.read_text())
            templates = [PromptTemplate(**t) for t in saved["templates"]]
            self.labels = [str(x) for x in saved.get("labels", BINARY_LABELS)]  # runs saved before N classes
            self.scales = [float(x) for x in saved["scales"]]
            demos = [Demonstration(d["text"], int(d["label"]), d.get("target")) for d in saved["demonstrations"]]
            self.threshold: Decision = (float(saved["threshold"]) if "threshold" in saved
                                        else [float(b) for b in saved["bias"]])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{path}: not a readable zero-shot predictor ({e})") from e
        model, tokenizer = load_causal_lm(saved["model"])
        self.encoders = [PromptEncoder(tokenizer, t, saved["review_tokens"], saved["truncation"], demos,
                                       saved["shot_tokens"], self.labels) for t in templates]
        self.scorer = CausalScorer(model, tokenizer.pad_token_id, batch_size, progress)

    def scores(self, texts: Sequence[str], targets: Sequence[str | None] | None = None) -> np.ndarray:
        """The ensemble score of each review (and target) under the saved prompt(s): a margin, or K log-probs."""
        return combine_margins([self.scorer.scores(e, texts, f"zero-shot ({e.template.name})", targets)
                                for e in self.encoders], self.scales)

    def probabilities(self, texts: Sequence[str], targets: Sequence[str | None] | None = None
                      ) -> list[float] | list[list[float]]:
        """After the saved decision: prob_positive per text (two classes), or a row of K class probabilities."""
        return probabilities(self.scores(texts, targets), self.threshold)

    def evaluate(self, examples: Sequence[Example]) -> tuple[dict[str, Any], list[float] | list[list[float]]]:
        """Metrics of the saved decision on labelled examples, and their probabilities (for predictions.csv)."""
        scores = self.scores([e.text for e in examples], [e.target for e in examples])
        metrics = decision_metrics([e.label for e in examples], scores, self.threshold, self.labels)
        return metrics, probabilities(scores, self.threshold)


def saved_margins(run_dir: Path, texts: Sequence[str], batch_size: int = 8, progress: bool = False,
                  targets: Sequence[str | None] | None = None) -> tuple[np.ndarray, Decision]:
    """Scores of `texts` under a saved zero-shot run's prompt, and the run's decision (threshold or biases)."""
    prompt = SavedPrompt(run_dir, batch_size, progress)
    return prompt.scores(texts, targets), prompt.threshold
