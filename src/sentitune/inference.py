"""Using a saved run: re-evaluate it on a split, or classify new reviews."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentitune.atomic import write_csv
from sentitune.classical import TfidfClassifier
from sentitune.config import replace
from sentitune.data.batching import encode, encoding_args
from sentitune.data.records import Example
from sentitune.data.sources import has_targets, load_splits
from sentitune.data.targets import locate
from sentitune.data.text import clean_text
from sentitune.errors import DataError
from sentitune.evaluation import evaluate, score
from sentitune.models.adapt import count_parameters
from sentitune.models.methods import build_classifier
from sentitune.models.registry import is_decoder
from sentitune.models.saving import load_model, saved_precision
from sentitune.paths import ensure_writable_dir
from sentitune.precision import pick_precision
from sentitune.runs import RunDir, open_saved
from sentitune.runtime import device, seed_everything
from sentitune.zero_shot.predictor import SavedPrompt


def evaluate_run(run_dir: Path, split: str = "test", data_path: str | None = None, eval_size: int | None = None,
                 baseline: bool = True, progress: bool = False, precision: str | None = None) -> dict[str, Any]:
    """Metrics of the saved model on `split` (and of the untrained classifier, as a baseline).

    precision: None computes in the precision the model was saved with (fp32 unless chosen otherwise).
    """
    run = RunDir(run_dir)
    cfg = run.config()
    ensure_writable_dir(run.path)  # eval-*.json goes here: say so now, not after the data and model load
    data_cfg = cfg.data
    if data_path is not None:
        data_cfg = replace(data_cfg, path=data_path)
    if eval_size is not None:
        data_cfg = replace(data_cfg, eval_size=eval_size)
    splits = load_splits(data_cfg, cfg.train.seed)
    examples = getattr(splits, split)
    if not examples:
        raise DataError(f"{run_dir}: the {split} split is empty for this run's data settings (data.val_size?)")
    if cfg.method.name == "zero-shot":  # the run's own config says what it is, not a file's presence
        return _evaluate_zero_shot(run, examples, split, progress)
    if cfg.method.name == "tfidf":
        return _evaluate_tfidf(run, examples, split, splits.warnings)
    model, tokenizer = load_model(run.model_dir)
    model.to(device())
    data = encode(examples, tokenizer, **encoding_args(cfg.data, is_decoder(model.backbone.config)))
    chosen = precision or saved_precision(run.model_dir)
    dtype = pick_precision(chosen, device())
    result: dict[str, Any] = {"run": str(run_dir), "split": split, "precision": chosen,
                              "warnings": splits.warnings}
    batch_size, pad_id = cfg.train.eval_batch_size, tokenizer.pad_token_id
    result["model"], scores = evaluate(model, data, batch_size, pad_id, dtype, split, progress)
    result["parameters"] = {"total": count_parameters(model)["total"]}
    if baseline:
        seed_everything(cfg.train.seed)
        from sentitune.models.registry import resolve

        untrained = build_classifier(cfg, resolve(cfg.model.spec), tokenizer.pad_token_id).to(device())
        result["baseline"], _ = evaluate(untrained, data, batch_size, pad_id, dtype, "baseline", progress)
    run.write_metrics(result, f"eval-{split}.json")
    run.write_predictions(examples, scores.tolist(), name=f"predictions-{split}.csv", labels=model.labels)
    return result


def _evaluate_tfidf(run: RunDir, examples: list[Example], split: str, warnings: list[str]) -> dict[str, Any]:
    """A tfidf run: its saved vocabulary, weights and classifier score the split (no baseline: nothing untrained)."""
    from sentitune.metrics import classification_metrics

    tfidf = TfidfClassifier.load(run.model_dir)
    scores = tfidf.proba_examples(examples)
    labels = [e.label for e in examples]
    result: dict[str, Any] = {"run": str(run.path), "split": split, "warnings": warnings,
                              "model": classification_metrics(labels, scores.tolist(), names=tfidf.labels)}
    run.write_metrics(result, f"eval-{split}.json")
    run.write_predictions(examples, scores.tolist(), name=f"predictions-{split}.csv", labels=tfidf.labels)
    return result


def _evaluate_zero_shot(run: RunDir, examples: list[Example], split: str, progress: bool) -> dict[str, Any]:
    """A zero-shot run has no trained weights: re-score the split with its saved prompt and decision."""
    prompt = SavedPrompt(run.path, progress=progress)
    metrics, probs = prompt.evaluate(examples)
    result: dict[str, Any] = {"run": str(run.path), "split": split, "model": metrics}
    run.write_metrics(result, f"eval-{split}.json")
    run.write_predictions(examples, probs, name=f"predictions-{split}.csv", labels=prompt.labels)
    return result


@dataclass
class Prediction:
    """One classified text: the most probable class, its probability, and every class's."""

    text: str
    label: str
    probability: float  # of `label`
    probs: dict[str, float]  # class name -> probability, in data.labels order
    target: str | None = None

    @property
    def prob_positive(self) -> float:
        """Two classes: the probability of the second (positive) one."""
        return list(self.probs.values())[1]


def read_reviews(path: Path, text_column: str = "text") -> list[str]:
    """One review per line (.txt) or a column of a CSV/JSONL file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        from sentitune.data.tabular import iter_rows

        texts = []
        for line, row in iter_rows(path):
            if row.get(text_column) is None:  # absent, or a short CSV row: never classify the text "None"
                raise DataError(f"{path}:{line}: missing field {text_column!r}")
            texts.append(str(row[text_column]))
        return texts
    try:
        return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None


class Predictor:
    """A saved run, loaded once, that classifies any number of reviews (trained, zero-shot or tfidf).

    precision None computes in the precision the model was saved with: fp32 by default, which gives
    the same probabilities on any CPU and whatever reviews share a batch (sentitune.precision).
    """

    def __init__(self, run_dir: Path, precision: str | None = None) -> None:
        self.path, self.cfg, self.model_dir = open_saved(Path(run_dir))
        self.kind = self.cfg.method.name  # the run's own config says what it is, not a file's presence
        if self.kind == "zero-shot":  # a prompt and a threshold, no trained weights
            self.prompt = SavedPrompt(self.path)
        elif self.kind == "tfidf":
            self.tfidf = TfidfClassifier.load(self.model_dir)
        else:
            self.model, self.tokenizer = load_model(self.model_dir)
            self.model.to(device())
            self.dtype = pick_precision(precision or saved_precision(self.model_dir), device())

    @property
    def labels(self) -> list[str]:
        return list(self.cfg.data.labels)

    @property
    def needs_target(self) -> bool:
        """A run trained on target-dependent examples classifies (text, target) pairs."""
        return has_targets(self.cfg.data)

    def predict(self, texts: list[str], batch_size: int = 32, targets: list[str] | None = None) -> list[Prediction]:
        """Classify `texts` (with one target per text for a target-dependent run)."""
        cfg = self.cfg
        cleaned = [clean_text(t) if cfg.data.clean_html else t for t in texts]
        for i, t in enumerate(cleaned):
            if not t.strip():
                raise DataError(f"review {i + 1}: empty")
        examples = self._examples(cleaned, targets)
        if self.kind == "zero-shot":
            probs = self.prompt.probabilities(cleaned, [e.target for e in examples])
        elif self.kind == "tfidf":
            probs = self.tfidf.proba_examples(examples).tolist()
        else:
            data = encode(examples, self.tokenizer, **encoding_args(cfg.data, is_decoder(self.model.backbone.config)))
            probs = score(self.model, data, batch_size, self.tokenizer.pad_token_id, self.dtype)[0].tolist()
        return [self._prediction(t, p, e.target) for t, p, e in zip(texts, probs, examples, strict=True)]

    def _examples(self, cleaned: list[str], targets: list[str] | None) -> list[Example]:
        if not self.needs_target:
            if targets:
                raise DataError(f"{self.path}: this run classifies whole texts; it was not trained with targets")
            return [Example(id=str(i), text=t, label=0) for i, t in enumerate(cleaned)]
        if not targets or len(targets) != len(cleaned):
            raise DataError(f"{self.path}: a target-dependent run needs one target per text (--target), got "
                            f"{len(targets or [])} for {len(cleaned)} texts")
        out = []
        for i, (text, target) in enumerate(zip(cleaned, targets, strict=True)):
            if not target.strip():
                raise DataError(f"text {i + 1}: empty target")
            try:
                span: tuple[int, int] | None = locate(text, target.strip(), f"text {i + 1}")
            except DataError:
                if self.cfg.data.target_input == "markers":  # markers go around the target: it must be there
                    raise
                span = None  # a pair or a prompt names the target; it need not occur in the text
            out.append(Example(id=str(i), text=text, label=0, target=target.strip(), span=span))
        return out

    def _prediction(self, text: str, p: float | list[float], target: str | None) -> Prediction:
        row = p if isinstance(p, list) else [1 - p, p]  # two classes: argmax is p > 0.5 (a tie goes to class 0)
        best = max(range(len(row)), key=row.__getitem__)
        return Prediction(text, self.labels[best], float(row[best]), dict(zip(self.labels, map(float, row),
                                                                               strict=True)), target)


def predict_texts(run_dir: Path, texts: list[str], batch_size: int = 32, precision: str | None = None,
                  targets: list[str] | None = None) -> list[Prediction]:
    """Classify `texts` with the saved run (loads it; use Predictor to classify many batches)."""
    return Predictor(run_dir, precision).predict(texts, batch_size, targets)


def write_predictions_csv(path: Path, predictions: list[Prediction]) -> None:
    """The reviews are user text: written spreadsheet-safe (see atomic.write_csv). Two classes: text, label,
    prob_positive as always; more: a prob_<class> column each (and target for a target-dependent run)."""
    names = list(predictions[0].probs) if predictions else []
    binary = len(names) == 2
    targets = any(p.target is not None for p in predictions)
    header = ["text", *(["target"] if targets else []), "label",
              *(["prob_positive"] if binary else [f"prob_{n}" for n in names])]
    rows = ([p.text, *([p.target] if targets else []), p.label,
             *([f"{p.prob_positive:.6f}"] if binary else [f"{p.probs[n]:.6f}" for n in names])] for p in predictions)
    write_csv(path, header, rows, text_columns={"text", "target"} & set(header))


