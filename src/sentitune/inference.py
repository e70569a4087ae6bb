"""Using a saved run: re-evaluate it on a split, or classify new reviews (any number: streamed in chunks)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sentitune.atomic import write_csv
from sentitune.config import ConfigError, replace
from sentitune.data.records import Example
from sentitune.data.reviews import Review, ReviewFile, iter_reviews
from sentitune.data.reviews import count_reviews as count_reviews  # re-exported: callers import the reader here
from sentitune.data.reviews import read_reviews as read_reviews
from sentitune.data.sources import has_targets, load_splits
from sentitune.data.targets import locate
from sentitune.data.text import clean_text
from sentitune.errors import DataError
from sentitune.export import check_trained
from sentitune.export.onnx import check_quantize
from sentitune.kinds import kind_of
from sentitune.paths import ensure_writable_dir
from sentitune.recipes import recipe_of
from sentitune.runs import RunDir, open_saved
from sentitune.scorers import Scorer


def uses_onnx(backend: str | None, quantize: str | None, precision: str | None) -> bool:
    """Whether ONNX Runtime scores (backend "onnx", or any quantize, which only ONNX Runtime does); checked
    up front: an ONNX graph is fp32 (or int8), so a torch precision does not apply to it."""
    check_quantize(quantize)
    if backend not in (None, "torch", "onnx"):
        raise ConfigError(f"backend: {backend!r} is not one of torch, onnx")
    if quantize and backend == "torch":
        raise ConfigError(f"quantize {quantize}: runs on ONNX Runtime; it cannot go with backend torch")
    onnx = backend == "onnx" or quantize is not None
    if onnx and precision not in (None, "fp32"):
        raise ConfigError(f"precision {precision}: is for the torch backend; ONNX Runtime computes in fp32 "
                          "(or int8 with quantize int8)")
    return onnx


def evaluate_run(run_dir: Path, split: str = "test", data_path: str | None = None, eval_size: int | None = None,
                 baseline: bool = True, progress: bool = False, precision: str | None = None,
                 backend: str | None = None, quantize: str | None = None) -> dict[str, Any]:
    """Metrics of the saved model on `split` (and of the untrained classifier, as a baseline).

    precision: None computes in the precision the model was saved with (fp32 unless chosen otherwise).
    backend "onnx" / quantize "int8": ONNX Runtime scores the run's exported (int8: quantized) graph, and the
    torch fp32 model scores the split too, so the result says what the graph changed (metrics "fp32");
    written to eval-SPLIT-onnx.json / eval-SPLIT-int8.json, beside the torch model's eval-SPLIT.json.
    """
    onnx = uses_onnx(backend, quantize, precision)
    run = RunDir(run_dir)
    cfg = run.config()
    if onnx:
        check_trained(run.path, cfg)
    ensure_writable_dir(run.path)  # eval-*.json goes here: say so now, not after the data and model load
    data_cfg = replace(cfg.data, unlabeled=None)  # a self-trained run's unlabelled reviews: its teacher's, not needed
    if data_path is not None:
        data_cfg = replace(data_cfg, path=data_path)
    if eval_size is not None:
        data_cfg = replace(data_cfg, eval_size=eval_size)
    splits = load_splits(data_cfg, cfg.train.seed)
    examples = getattr(splits, split)
    if not examples:
        raise DataError(f"{run_dir}: the {split} split is empty for this run's data settings (data.val_size?)")
    # the run's own config says what it is (recipes.py), not a file's presence
    scorer = recipe_of(cfg).scorer(run.path, cfg, run.model_dir, precision, onnx, quantize, progress)
    return scorer.evaluate(run, examples, split, baseline, splits.warnings)


@dataclass
class Prediction:
    """One classified text: the most probable class, its probability, and every class's."""

    text: str
    label: str
    probability: float  # of `label`
    probs: dict[str, float]  # class name -> probability, in data.labels order
    target: str | None = None
    line: int | None = None  # the review's line in its file (a CSV row: where it starts); None: not from a file

    @property
    def prob_positive(self) -> float:
        """Two classes: the probability of the second (positive) one."""
        return list(self.probs.values())[1]


def reviews_to_predict(texts: list[str], targets: list[str], path: Path | None = None, text_column: str = "text",
                       target_column: str | None = None) -> tuple[list[Review], ReviewFile | None, Iterator[Review]]:
    """The reviews of one predict call: `texts`, then the file's (read lazily), each with its target. One text and
    several targets: the sentiment toward each; one target: for every text and every row of the file; else one
    per text. Returns the given reviews, the file's reader (its `skipped` count) and the file's reviews with their
    targets, or a DataError saying what to give."""
    texts, given = list(texts), list(targets)
    if len(texts) == 1 and len(given) > 1:
        texts = texts * len(given)
    per_text = given * len(texts) if len(given) == 1 else given
    if texts and given and len(per_text) != len(texts):
        raise DataError(f"predict: --target: give one for all texts or one per text, got {len(given)} for "
                        f"{len(texts)} texts")
    if target_column and path is None:
        raise DataError("predict: --target-column reads a column of --file")
    if given and not texts and (len(given) > 1 or target_column):
        raise DataError("predict: with --file, give one --target for every row, or each row's in --target-column")
    if not texts and path is None:
        raise DataError("predict: give reviews as arguments or with --file")
    reviews = [Review(t, per_text[i] if per_text else None) for i, t in enumerate(texts)]
    review_file = iter_reviews(path, text_column, target_column) if path is not None else None
    in_file: Iterator[Review] = review_file or iter([])
    if review_file is not None and len(given) == 1 and not target_column:
        in_file = (dataclasses.replace(r, target=given[0]) for r in review_file)
    return reviews, review_file, in_file


class Predictor:
    """A saved run, loaded once, that classifies any number of reviews (any kind: recipes.py loads its scorer).

    precision None computes in the precision the model was saved with: fp32 by default, which gives
    the same probabilities on any CPU and whatever reviews share a batch (sentitune.precision).
    Everything goes through `predict_stream` (chunks); the scorer (scorers.py) computes a chunk's class
    probabilities. backend "onnx" / quantize "int8": ONNX Runtime scores the run's exported graph.
    """

    def __init__(self, run_dir: Path, precision: str | None = None, backend: str | None = None,
                 quantize: str | None = None) -> None:
        onnx = uses_onnx(backend, quantize, precision)
        self.path, self.cfg, self.model_dir = open_saved(Path(run_dir))
        self.kind = kind_of(self.cfg)  # the run's own config says what it is, not a file's presence
        if onnx:
            check_trained(self.path, self.cfg)
        self.scorer: Scorer = recipe_of(self.cfg).scorer(self.path, self.cfg, self.model_dir, precision, onnx,
                                                         quantize)

    @property
    def labels(self) -> list[str]:
        return list(self.cfg.data.labels)

    @property
    def needs_target(self) -> bool:
        """A run trained on target-dependent examples classifies (text, target) pairs."""
        return has_targets(self.cfg.data)

    def predict(self, texts: list[str], batch_size: int = 32, targets: list[str] | None = None) -> list[Prediction]:
        """Classify `texts` (with one target per text for a target-dependent run), as one chunk."""
        if not self.needs_target and targets:
            raise DataError(f"{self.path}: this run classifies whole texts; it was not trained with targets")
        if self.needs_target and (not targets or len(targets) != len(texts)):
            raise DataError(f"{self.path}: a target-dependent run needs one target per text (--target), got "
                            f"{len(targets or [])} for {len(texts)} texts")
        reviews = [Review(t, targets[i] if targets else None) for i, t in enumerate(texts)]
        return list(self.predict_stream(reviews, batch_size, chunk_size=max(1, len(reviews))))

    def predict_stream(self, reviews: Iterable[str | Review], batch_size: int = 32, chunk_size: int = 2048,
                       progress: bool = False, total: int | None = None) -> Iterator[Prediction]:
        """Classify `reviews` lazily, in input order: read `chunk_size` of them, predict them in batches of
        similar length (less padding), yield them, and only then read the next chunk, so memory holds one
        chunk whatever the input's size. A bad review raises when its chunk is read (after the earlier chunks
        were yielded). progress: a bar of reviews done (of `total`, when given) on stderr."""
        if batch_size < 1 or chunk_size < 1:
            raise ConfigError(f"batch size and chunk size must be at least 1, got {batch_size} and {chunk_size}")
        rows = iter(reviews)
        done = 0
        with tqdm(total=total, desc="predict", unit="review", disable=not progress) as bar:
            while chunk := list(itertools.islice(rows, chunk_size)):
                predictions = self._predict_chunk(chunk, batch_size, done)
                done += len(chunk)
                bar.update(len(chunk))
                yield from predictions

    def _predict_chunk(self, chunk: list[str | Review], batch_size: int, offset: int) -> list[Prediction]:
        reviews = [r if isinstance(r, Review) else Review(r) for r in chunk]
        examples = [self._example(r, r.where or f"review {offset + i + 1}") for i, r in enumerate(reviews)]
        probs = self.scorer.probabilities(examples, batch_size)  # P(positive) each, or a row per class
        return [self._prediction(r.text, p, e.target, r.line) for r, p, e in zip(reviews, probs, examples, strict=True)]

    def _example(self, review: Review, where: str) -> Example:
        """The review as the run's data pipeline saw its examples: cleaned, with its target located."""
        text = clean_text(review.text) if self.cfg.data.clean_html else review.text
        if not text.strip():
            raise DataError(f"{where}: empty review")
        if not self.needs_target:
            if review.target is not None:
                raise DataError(f"{self.path}: this run classifies whole texts; it was not trained with targets")
            return Example(id=where, text=text, label=0)
        if review.target is None:
            raise DataError(f"{where}: a target-dependent run needs one target per text (--target, --target-column)")
        target = review.target.strip()
        if not target:
            raise DataError(f"{where}: empty target")
        try:
            span: tuple[int, int] | None = locate(text, target, where)
        except DataError:
            if self.cfg.data.target_input == "markers":  # markers go around the target: it must be there
                raise
            span = None  # a pair or a prompt names the target; it need not occur in the text
        return Example(id=where, text=text, label=0, target=target, span=span)

    def _prediction(self, text: str, p: float | list[float], target: str | None, line: int | None) -> Prediction:
        row = p if isinstance(p, list) else [1 - p, p]  # two classes: argmax is p > 0.5 (a tie goes to class 0)
        best = max(range(len(row)), key=row.__getitem__)
        return Prediction(text, self.labels[best], float(row[best]), dict(zip(self.labels, map(float, row),
                                                                               strict=True)), target, line)


def predict_texts(run_dir: Path, texts: list[str], batch_size: int = 32, precision: str | None = None,
                  targets: list[str] | None = None, backend: str | None = None,
                  quantize: str | None = None) -> list[Prediction]:
    """Classify `texts` with the saved run (loads it; use Predictor to classify many batches)."""
    return Predictor(run_dir, precision, backend, quantize).predict(texts, batch_size, targets)


def write_predictions_csv(path: Path, predictions: Iterable[Prediction]) -> int:
    """Write `predictions` as they come (an iterator is consumed once, never held) and return how many.

    The reviews are user text: written spreadsheet-safe, atomically (see atomic.write_csv), so a failure
    midway leaves no half file under `path`. Two classes: text, label, prob_positive as always; more: a
    prob_<class> column each (and target for a target-dependent run): the first prediction sets the header.
    `line`: the review's line in its file (blank for a text given on the command line), so every row can be
    matched to its input line even where blank lines were skipped.
    """
    stream = iter(predictions)
    first = next(stream, None)
    names = list(first.probs) if first else []
    binary = len(names) == 2
    targets = first is not None and first.target is not None
    header = ["text", *(["target"] if targets else []), "label",
              *(["prob_positive"] if binary else [f"prob_{n}" for n in names]), "line"]
    count = 0

    def rows() -> Iterator[list[Any]]:
        nonlocal count
        for p in itertools.chain([first] if first else [], stream):
            count += 1
            yield [p.text, *([p.target] if targets else []), p.label,
                   *([f"{p.prob_positive:.6f}"] if binary else [f"{p.probs[n]:.6f}" for n in names]), p.line]

    write_csv(path, header, rows())
    return count
