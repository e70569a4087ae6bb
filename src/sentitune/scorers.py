"""A saved run, loaded to score reviews: one class per kind of run, with the same two methods.

`probabilities(examples, batch_size)` gives each example's class probabilities (two classes: P(positive)), for
`predict` and `serve`; `evaluate(run, examples, split, ...)` scores a labelled split and writes eval-SPLIT.json and
predictions-SPLIT.csv, for `evaluate`. recipes.py says which class loads which kind; inference.py runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sentitune.classical import TfidfClassifier
from sentitune.config import ExperimentConfig
from sentitune.data.batching import Encoded, encode, encoding_args
from sentitune.data.records import Example
from sentitune.ensemble import NgramMember, ensemble_metrics, load_member
from sentitune.evaluation import evaluate, score
from sentitune.export.onnx import OnnxScorer, run_graph
from sentitune.metrics import classification_metrics
from sentitune.models.blocks import count_parameters
from sentitune.models.methods import build_classifier
from sentitune.models.registry import is_decoder, resolve
from sentitune.models.saving import load_model, saved_entry, saved_precision
from sentitune.precision import name as precision_name
from sentitune.precision import pick_precision
from sentitune.runs import RunDir
from sentitune.runtime import device, seed_everything
from sentitune.zero_shot.predictor import SavedPrompt

Scores = list[float] | list[list[float]]


class ClassifierScorer:
    """A trained transformer classifier (with its n-gram ensemble member, if any), in torch or ONNX Runtime.

    precision None computes in the precision the model was saved with: fp32 by default, which gives the same
    probabilities on any CPU and whatever reviews share a batch (sentitune.precision). quantize "int8" (or
    onnx=True): ONNX Runtime scores the run's exported graph (sentitune.export.onnx).
    """

    def __init__(self, run_path: Path, cfg: ExperimentConfig, model_dir: Path, precision: str | None = None,
                 onnx: bool = False, quantize: str | None = None, progress: bool = False) -> None:
        self.cfg, self.model_dir, self.quantize, self.progress = cfg, model_dir, quantize, progress
        self.model, self.tokenizer = load_model(model_dir)
        self.model.to(device())
        self.ngram: NgramMember | None = load_member(model_dir, saved_entry(model_dir, "ensemble"))
        self.chosen = precision or saved_precision(model_dir)
        self.dtype = pick_precision(self.chosen, device())
        self.precision: str | None = precision_name(self.dtype)
        self.graph = run_graph(model_dir, self.model, quantize) if onnx else None
        self.onnx = OnnxScorer(self.graph) if self.graph is not None else None

    def encode(self, examples: list[Example]) -> Encoded:
        return encode(examples, self.tokenizer, **encoding_args(self.cfg.data, is_decoder(self.model.backbone.config)))

    def probabilities(self, examples: list[Example], batch_size: int) -> Scores:
        scores = self.score_encoded(self.encode(examples), batch_size)
        return (scores if self.ngram is None else self.ngram.combine(scores, examples)).tolist()

    def score_encoded(self, data: Encoded, batch_size: int) -> np.ndarray:
        """The backend: class probabilities of encoded reviews, in their order, computed in batches sorted by
        token length (evaluation.score). Another backend (an exported graph) replaces only this."""
        if self.onnx is not None:
            return self.onnx.score(data, batch_size, self.tokenizer.pad_token_id)[0]
        return score(self.model, data, batch_size, self.tokenizer.pad_token_id, self.dtype)[0]

    def evaluate(self, run: RunDir, examples: list[Example], split: str, baseline: bool = True,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        """Metrics (and the untrained classifier's, as a baseline). With ONNX Runtime the torch fp32 model scores
        the split too, so the result says what the graph changed (metrics "fp32"), written to
        eval-SPLIT-onnx.json / eval-SPLIT-int8.json beside the torch model's eval-SPLIT.json."""
        model, cfg, progress = self.model, self.cfg, self.progress
        data = self.encode(examples)
        result: dict[str, Any] = {"run": str(run.path), "split": split, "precision": self.chosen,
                                  "warnings": warnings or []}
        batch_size, pad_id = cfg.train.eval_batch_size, self.tokenizer.pad_token_id
        suffix = ""
        if self.onnx is not None:
            scores, loss = self.onnx.score(data, batch_size, pad_id, split, progress)
            result["model"] = classification_metrics(data.labels, scores, loss=loss, names=model.labels)
            result["fp32"], _ = evaluate(model, data, batch_size, pad_id, None, "fp32", progress)
            result.update(precision=self.quantize or "fp32", backend="onnxruntime", graph=str(self.graph),
                          accuracy_change=result["model"]["accuracy"] - result["fp32"]["accuracy"])
            suffix = f"-{self.quantize or 'onnx'}"
        else:
            result["model"], scores = evaluate(model, data, batch_size, pad_id, self.dtype, split, progress)
        if self.ngram is not None:  # an ensemble run: the transformer's scores, then both models' together
            result["transformer"] = result["model"]
            scores = self.ngram.combine(scores, examples)
            result["model"] = ensemble_metrics(data.labels, scores, model.labels)
        result["parameters"] = {"total": count_parameters(model)["total"]}
        if baseline:
            seed_everything(cfg.train.seed)
            untrained = build_classifier(cfg, resolve(cfg.model.spec), pad_id).to(device())
            result["baseline"], _ = evaluate(untrained, data, batch_size, pad_id, self.dtype, "baseline", progress)
        return _written(run, result, examples, scores.tolist(), model.labels, split, suffix)


class PromptScorer:
    """A zero-shot run: no trained weights, a prompt and a decision (threshold or biases) scored by its causal LM,
    which scores its own prompts, longest first, in its own batches."""

    precision: str | None = None

    def __init__(self, run_path: Path, cfg: ExperimentConfig, model_dir: Path, precision: str | None = None,
                 onnx: bool = False, quantize: str | None = None, progress: bool = False) -> None:
        self.prompt = SavedPrompt(run_path, progress=progress)

    def probabilities(self, examples: list[Example], batch_size: int) -> Scores:
        return self.prompt.probabilities([e.text for e in examples], [e.target for e in examples])

    def evaluate(self, run: RunDir, examples: list[Example], split: str, baseline: bool = True,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        """The split re-scored with the saved prompt and decision (no baseline: nothing was trained)."""
        metrics, probs = self.prompt.evaluate(examples)
        result: dict[str, Any] = {"run": str(run.path), "split": split, "warnings": warnings or [], "model": metrics}
        return _written(run, result, examples, probs, self.prompt.labels, split)


class TfidfScorer:
    """A tfidf run: its saved vocabulary, weights and classifier (no baseline: nothing untrained)."""

    precision: str | None = None

    def __init__(self, run_path: Path, cfg: ExperimentConfig, model_dir: Path, precision: str | None = None,
                 onnx: bool = False, quantize: str | None = None, progress: bool = False) -> None:
        self.tfidf = TfidfClassifier.load(model_dir)

    def probabilities(self, examples: list[Example], batch_size: int) -> Scores:
        return self.tfidf.proba_examples(examples).tolist()

    def evaluate(self, run: RunDir, examples: list[Example], split: str, baseline: bool = True,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        scores = self.tfidf.proba_examples(examples)
        labels = [e.label for e in examples]
        result: dict[str, Any] = {"run": str(run.path), "split": split, "warnings": warnings or [],
                                  "model": classification_metrics(labels, scores.tolist(), names=self.tfidf.labels)}
        return _written(run, result, examples, scores.tolist(), self.tfidf.labels, split)


def _written(run: RunDir, result: dict[str, Any], examples: list[Example], scores: Scores, labels: list[str],
             split: str, suffix: str = "") -> dict[str, Any]:
    """`evaluate`'s two files, named alike for every kind: eval-SPLIT[-onnx|-int8].json and predictions-SPLIT...csv."""
    run.write_metrics(result, f"eval-{split}{suffix}.json")
    run.write_predictions(examples, scores, name=f"predictions-{split}{suffix}.csv", labels=labels)
    return result


Scorer = ClassifierScorer | PromptScorer | TfidfScorer
