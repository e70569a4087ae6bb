"""Self-training: a teacher labels unlabelled reviews, and the ones it is surest of train the student.

Why: with a few dozen labels every trained recipe loses to a prompted LM that saw none (docs/RESULTS.md, "How many
labels do I need?"), yet the prompted LM is slow to use and cannot learn from the labels. Its confident labels on a few
thousand unlabelled reviews give the fast student (the cached prefix + n-grams of `configs/experiments/
quickstart.yaml`) far more to learn from than the labels alone, and the student is an ordinary run: it predicts,
serves and exports like any other (docs/RESULTS.md, "How many labels do I need?").

The teacher's decision is calibrated on the labels: biases that make its predicted class shares over the
unlabelled reviews those of the labelled ones (equal shares with none). Each class then keeps its share of the
`keep` most confident reviews, so the pseudo-labels do not tilt the student toward the prompt's favourite class.

The teacher's scores are cached per review, keyed by the teacher and its prompt, in $SENTITUNE_CACHE/teacher/ and
written after every chunk: a killed run resumes where the teacher stopped, and runs that share reviews (a bench's
seeds and budgets) score each review once.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import softmax
from tqdm.auto import tqdm

from sentitune.atomic import write_json
from sentitune.config import ExperimentConfig, to_dict
from sentitune.data.records import Example, Splits
from sentitune.data.sources import SMALL_VALIDATION
from sentitune.data.splits import sample, split_off
from sentitune.errors import DataError
from sentitune.paths import cache_dir
from sentitune.runtime import Report
from sentitune.zero_shot.calibration import combine_margins, member_scales
from sentitune.zero_shot.prompts import PromptEncoder
from sentitune.zero_shot.scoring import CausalScorer, load_causal_lm
from sentitune.zero_shot.templates import check_templates, get_templates

CHUNK = 64  # reviews scored between two writes of the teacher's cache: what a kill can lose


def stable_draw(examples: Sequence[Example], n: int) -> list[Example]:
    """The `n` examples with the smallest hash of their id: a review is drawn whatever the seed, and a larger draw
    holds a smaller one, so the teacher's cached scores serve every run over the same reviews."""
    return sorted(examples, key=lambda e: hashlib.sha256(e.id.encode()).digest())[:n]


def _review_key(e: Example) -> str:
    return hashlib.sha256(f"{e.text}\0{e.target or ''}".encode()).hexdigest()[:32]


class TeacherCache:
    """One prompt's scores of reviews on disk (review hash -> the score row), and the teacher seconds they cost.

    Every write merges with what is on disk first, so processes that share the cache (bench workers) add to it
    rather than overwrite each other; a lost race costs a rescore, never a wrong score (the key is the text)."""

    def __init__(self, spec: str, encoder: PromptEncoder) -> None:
        ident = {"model": spec, "template": to_dict(encoder.template), "review_tokens": encoder.review_tokens,
                 "truncation": encoder.truncation, "classes": encoder.classes}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
        self.path = cache_dir("teacher") / f"{key}.json"
        self.ident = ident
        self.scores, self.seconds, self.reviews = self._read()

    def _read(self) -> tuple[dict[str, list[float]], float, int]:
        try:
            saved = json.loads(self.path.read_text())
            return dict(saved["scores"]), float(saved["seconds"]), int(saved["reviews"])
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: scored again
            return {}, 0.0, 0

    def add(self, scores: dict[str, list[float]], seconds: float) -> None:
        on_disk, disk_seconds, disk_reviews = self._read()
        new = {k: v for k, v in scores.items() if k not in on_disk}
        self.scores = on_disk | scores
        self.seconds, self.reviews = disk_seconds + seconds, disk_reviews + len(new)
        write_json(self.path, {**self.ident, "seconds": self.seconds, "reviews": self.reviews, "scores": self.scores})

    @property
    def seconds_per_review(self) -> float | None:
        return self.seconds / self.reviews if self.reviews else None


def teacher_scores(scorer: CausalScorer, encoder: PromptEncoder, cache: TeacherCache, examples: Sequence[Example],
                   progress: bool, desc: str) -> np.ndarray:
    """The prompt's score of each example (a margin, or K log-probabilities), scoring only the uncached ones, in
    chunks, each written to the cache as it finishes."""
    if not examples:
        return np.zeros(0) if len(encoder.classes) == 2 else np.zeros((0, len(encoder.classes)))
    keys = [_review_key(e) for e in examples]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache.scores}.values())
    with tqdm(total=len(missing), desc=desc, unit="review", disable=not progress or not missing) as bar:
        for start in range(0, len(missing), CHUNK):
            chunk = [examples[i] for i in missing[start:start + CHUNK]]
            began = time.perf_counter()
            rows = scorer.scores(encoder, [e.text for e in chunk], desc, [e.target for e in chunk])
            cache.add({_review_key(e): np.atleast_1d(r).tolist() for e, r in zip(chunk, rows, strict=True)},
                      time.perf_counter() - began)
            bar.update(len(chunk))
    rows = np.asarray([cache.scores[k] for k in keys], dtype=float)
    return rows[:, 0] if rows.shape[1] == 1 else rows


def as_class_scores(scores: np.ndarray) -> np.ndarray:
    """[n, K] class scores: a two-class margin m is the row (0, m)."""
    return np.stack([np.zeros_like(scores), scores], axis=1) if scores.ndim == 1 else scores


def prior_bias(scores: np.ndarray, prior: np.ndarray, rounds: int = 500) -> np.ndarray:
    """Per-class biases after which the mean predicted probability of each class over `scores` is its `prior`
    share: the EM prior adjustment of Saerens et al. (2002), as fixed-point steps on the biases. A prompt's raw
    scores lean toward one label; this moves its decision to the classes' shares without a label per review."""
    bias = np.zeros(scores.shape[1])
    for _ in range(rounds):
        mean = softmax(scores - bias, axis=1).mean(axis=0)
        step = np.log(np.maximum(mean, 1e-12) / prior)
        bias += step
        bias -= bias[0]
        if np.abs(step).max() < 1e-6:
            break
    return bias


def select_confident(scores: np.ndarray, bias: np.ndarray, prior: np.ndarray, keep: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of the reviews to keep: each class k its prior share of round(keep * n) reviews, the
    ones predicted k with the widest lead over the next class."""
    shifted = scores - bias
    predicted = shifted.argmax(axis=1)
    ordered = np.sort(shifted, axis=1)
    lead = ordered[:, -1] - ordered[:, -2]
    total = round(keep * len(scores))
    chosen = []
    for k in range(scores.shape[1]):
        rows = np.flatnonzero(predicted == k)
        quota = min(len(rows), round(total * prior[k]))
        chosen.append(rows[np.argsort(-lead[rows], kind="stable")[:quota]])
    index = np.sort(np.concatenate(chosen)).astype(int)
    return index, predicted[index]


def class_prior(labelled: Sequence[Example], classes: int) -> np.ndarray:
    """The classes' shares among the labelled reviews, each count + 1 (Laplace): equal shares with none."""
    counts = Counter(e.label for e in labelled)
    raw = np.asarray([counts.get(k, 0) + 1.0 for k in range(classes)])
    return raw / raw.sum()


def score_with_teacher(cfg: ExperimentConfig, reviews: Sequence[Sequence[Example]], progress: bool
                       ) -> tuple[list[np.ndarray], list[TeacherCache], float]:
    """[n, K] class scores of each list of reviews under the teacher's prompt (an ensemble of prompts: their
    margins combined as a zero-shot run combines them, scaled by their spread on the first list), the caches, and
    the seconds spent scoring (what the caches did not hold)."""
    st, zs, classes = cfg.self_train, cfg.zero_shot, cfg.data.labels
    templates = get_templates(zs.template, zs.templates)
    model, tokenizer = load_causal_lm(st.teacher)
    scorer = CausalScorer(model, tokenizer.pad_token_id, st.batch_size)
    encoders = [PromptEncoder(tokenizer, t, zs.review_tokens, zs.truncation, classes=classes) for t in templates]
    caches = [TeacherCache(str(st.teacher), e) for e in encoders]
    started = time.perf_counter()
    parts = [[teacher_scores(scorer, e, c, examples, progress, f"teacher ({e.template.name})")
              for e, c in zip(encoders, caches, strict=True)] for examples in reviews]
    seconds = time.perf_counter() - started
    del model, scorer
    gc.collect()
    scales = member_scales(parts[0])
    return [as_class_scores(combine_margins(p, scales)) for p in parts], caches, seconds


def self_train(cfg: ExperimentConfig, splits: Splits, report: Report = lambda s: None, progress: bool = False
               ) -> tuple[Splits, dict[str, Any]]:
    """The splits with the teacher's confident pseudo-labels added to train (and, when the labelled validation is
    under SMALL_VALIDATION reviews, a `pseudo_validation` share of them to validation), and the record of it for
    metrics.json: the teacher's accuracy on labelled reviews, the pseudo-labels kept, the cost."""
    st, classes = cfg.self_train, cfg.data.labels
    started = time.perf_counter()
    targeted = bool(splits.unlabeled) and splits.unlabeled[0].target is not None
    check_templates(get_templates(cfg.zero_shot.template, cfg.zero_shot.templates), classes, targeted)
    drawn = stable_draw(splits.unlabeled, st.unlabeled_size)
    if not drawn:
        raise DataError(f"data.unlabeled={cfg.data.unlabeled}: no unlabelled reviews left to label (data.train_size "
                        "drew the whole training pool?)")
    labelled = splits.train + splits.validation
    check = sample(labelled, st.check_size, cfg.train.seed) if st.check_size else []
    report(f"self-training: teacher {st.teacher} labels {len(drawn):,} of {len(splits.unlabeled):,} unlabelled "
           f"reviews" + (f" and {len(check)} labelled ones (its accuracy)" if check else ""))
    (scores, check_scores), caches, scoring = score_with_teacher(cfg, [drawn, check], progress)
    prior = class_prior(labelled, len(classes))
    bias = prior_bias(scores, prior)
    index, labels = select_confident(scores, bias, prior, st.keep)
    pseudo = [dataclasses.replace(drawn[i], label=int(y)) for i, y in zip(index, labels, strict=True)]
    to_validation: list[Example] = []
    if len(splits.validation) < SMALL_VALIDATION and st.pseudo_validation:
        pseudo, to_validation = split_off(pseudo, st.pseudo_validation, cfg.train.seed)
    record = {"teacher": st.teacher, "template": cfg.zero_shot.template, "unlabeled": len(splits.unlabeled),
              "scored": len(drawn), "kept": len(index), "pseudo_train": len(pseudo),
              "pseudo_validation": len(to_validation), "prior": prior.round(4).tolist(),
              "bias": bias.round(4).tolist(), "seconds": round(time.perf_counter() - started, 2),
              "scoring_seconds": round(scoring, 2),
              **_teacher_cost(caches, len(drawn) + len(check)),
              **_accuracies(drawn, (scores - bias).argmax(axis=1), index, labels, check, check_scores - bias)}
    kept = ", ".join(f"{n} {classes[k]}" for k, n in sorted(Counter(labels.tolist()).items()))
    report(f"self-training: kept {len(index):,} pseudo-labels ({kept}): {len(pseudo):,} train, "
           f"{len(to_validation):,} validation" + (f"; teacher accuracy on {len(check)} labelled reviews "
                                                   f"{record['teacher_accuracy']:.4f}" if check else ""))
    out = dataclasses.replace(splits, train=splits.train + pseudo, validation=splits.validation + to_validation,
                              pseudo={"train": len(pseudo), "validation": len(to_validation)})
    return out, record


def _teacher_cost(caches: Sequence[TeacherCache], reviews: int) -> dict[str, Any]:
    """What scoring every review this run used costs (seconds per review measured when the cache was filled),
    however many it found cached: a bench's later rows are cheap only because earlier ones paid."""
    per_review = [c.seconds_per_review for c in caches]
    cost = None if None in per_review else sum(per_review) * reviews  # type: ignore[arg-type]
    return {"teacher_cost_seconds": round(cost, 1) if cost is not None else None,
            "teacher_cache": [str(c.path) for c in caches]}


def _accuracies(drawn: Sequence[Example], predicted: np.ndarray, index: np.ndarray, labels: np.ndarray,
                check: Sequence[Example], check_scores: np.ndarray) -> dict[str, Any]:
    """The teacher's accuracy on the labelled reviews it was checked on; where the unlabelled reviews have hidden
    labels (data.unlabeled=pool), its accuracy on all of them and on the ones kept."""
    out: dict[str, Any] = {}
    if len(check):
        truth = np.asarray([e.label for e in check])
        out |= {"teacher_accuracy": round(float((check_scores.argmax(axis=1) == truth).mean()), 4),
                "teacher_checked": len(check)}
    hidden = np.asarray([e.label for e in drawn])
    if len(hidden) and (hidden >= 0).all():
        out |= {"teacher_accuracy_unlabeled": round(float((predicted == hidden).mean()), 4),
                "pseudo_accuracy": round(float((hidden[index] == labels).mean()), 4)}
    return out
