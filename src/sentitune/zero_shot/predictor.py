"""A saved zero-shot run as a predictor: `zero_shot.json` holds everything needed to score new reviews
exactly as the run scored test (model, templates, ensemble scales, demonstrations, threshold)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sentitune.atomic import write_json
from sentitune.config import PromptTemplate, to_dict
from sentitune.errors import ModelError
from sentitune.zero_shot.calibration import combine_margins
from sentitune.zero_shot.prompts import Demonstration, PromptEncoder
from sentitune.zero_shot.scoring import CausalScorer, load_causal_lm

PREDICTOR = "zero_shot.json"


def save_predictor(run_dir: Path, spec: str, templates: Sequence[PromptTemplate], scales: Sequence[float],
                   review_tokens: int, truncation: str, demonstrations: Sequence[Demonstration], shot_tokens: int,
                   threshold: float, decision: str) -> None:
    """Everything `predict` needs to score new reviews exactly as the run scored test.

    The demonstrations are stored as text, so a few-shot prompt does not depend on re-reading train.
    """
    write_json(run_dir / PREDICTOR, {
        "model": spec, "templates": [to_dict(t) for t in templates], "scales": list(scales),
        "review_tokens": review_tokens, "truncation": truncation,
        "shot_tokens": shot_tokens, "demonstrations": [{"text": d.text, "label": d.label} for d in demonstrations],
        "threshold": threshold, "decision": decision})


class SavedPrompt:
    """A saved zero-shot run, loaded once: its causal LM, prompt encoders, ensemble scales and threshold."""

    def __init__(self, run_dir: Path, batch_size: int = 8, progress: bool = False) -> None:
        path = Path(run_dir) / PREDICTOR
        try:
            saved = json.loads(path.read_text())
            templates = [PromptTemplate(**t) for t in saved["templates"]]
            self.scales = [float(x) for x in saved["scales"]]
            demos = [Demonstration(d["text"], int(d["label"])) for d in saved["demonstrations"]]
            self.threshold = float(saved["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{path}: not a readable zero-shot predictor ({e})") from e
        model, tokenizer = load_causal_lm(saved["model"])
        self.encoders = [PromptEncoder(tokenizer, t, saved["review_tokens"], saved["truncation"], demos,
                                       saved["shot_tokens"]) for t in templates]
        self.scorer = CausalScorer(model, tokenizer.pad_token_id, batch_size, progress)

    def margins(self, texts: Sequence[str]) -> np.ndarray:
        """The ensemble margin of each review under the saved prompt(s)."""
        return combine_margins([self.scorer.margins(e, texts, f"zero-shot ({e.template.name})")
                                for e in self.encoders], self.scales)


def saved_margins(run_dir: Path, texts: Sequence[str], batch_size: int = 8,
                  progress: bool = False) -> tuple[np.ndarray, float]:
    """Margins of `texts` under a saved zero-shot run's prompt, and the run's decision threshold."""
    prompt = SavedPrompt(run_dir, batch_size, progress)
    return prompt.margins(texts), prompt.threshold


def probabilities(margins: np.ndarray, threshold: float) -> list[float]:
    """sigmoid(margin - threshold): the two label words' normalised probability after the threshold shift."""
    return [1.0 / (1.0 + math.exp(-(m - threshold))) for m in margins]
