"""Zero- and few-shot sentiment with a causal LM: compare the likelihood of two label words.

For a prompt such as ``Review: {text}\\nSentiment:`` the score of a review is the log-likelihood
margin ``log p(positive words | prompt) - log p(negative words | prompt)`` (each label word may be
several tokens: their log-probabilities are summed). The margin is a score like any classifier's,
so ROC AUC and the other metrics come from the same `classification_metrics`. A raw margin is
usually biased toward one label, so three calibrations are reported beside it (docs/ZERO_SHOT.md):
contextual calibration with content-free inputs (Zhao et al. 2021), a threshold fitted on a small
labelled validation slice, and a label-free threshold (the median margin of unlabelled training
reviews, which assumes roughly balanced classes).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sentitune.config import ConfigError, ExperimentConfig, PromptTemplate, to_dict
from sentitune.data.records import Example
from sentitune.data.text import truncate_ids
from sentitune.errors import ModelError

Report = Callable[[str], None]

TEXT_SLOT = "{text}"
ENSEMBLE_SEP = "+"  # zero_shot.template: "review-sentiment+chat" averages the two prompts' margins
_SENTINEL = "\u2063SENTITUNE_TEXT\u2063"  # stands in for the review while a chat template renders

# Built-in templates. "published" is the prompt of the GPT-2 experiment the issue cites.
BUILTIN_TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("published", "Review: {text} Sentiment:", " Positive", " Negative"),
        PromptTemplate("review-sentiment", "Review: {text}\nSentiment:", " positive", " negative"),
        PromptTemplate("review-sentiment-cap", "Review: {text}\nSentiment:", " Positive", " Negative"),
        PromptTemplate("movie-was", "Review: {text}\nOverall, the movie was", " great", " terrible"),
        PromptTemplate("question", "Movie review: {text}\nQuestion: Is this review positive or negative?\nAnswer:",
                       " positive", " negative"),
        PromptTemplate("chat", "Is the sentiment of this movie review positive or negative?\n\nReview: {text}\n\n"
                       "Answer with one word.", "Positive", "Negative", chat=True),
    )
}


def get_template(name: str, custom: Sequence[PromptTemplate] = ()) -> PromptTemplate:
    """A user-defined template (by name) wins over a built-in of the same name."""
    for t in custom:
        if t.name == name:
            return t
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    known = ", ".join([*BUILTIN_TEMPLATES, *(t.name for t in custom)])
    raise ConfigError(f"zero_shot.template: unknown template {name!r} (known: {known})")


def get_templates(spec: str, custom: Sequence[PromptTemplate] = ()) -> list[PromptTemplate]:
    """`a+b` names a prompt ensemble (see `combine_margins`); a plain name is a one-member list."""
    names = [n.strip() for n in spec.split(ENSEMBLE_SEP)]
    if not all(names):
        raise ConfigError(f"zero_shot.template: {spec!r} has an empty member (write e.g. review-sentiment+chat)")
    return [get_template(n, custom) for n in names]


def member_scales(calibration_margins: Sequence[np.ndarray]) -> list[float]:
    """Each member's spread (standard deviation) on the unlabelled calibration reviews; 1 for one member."""
    if len(calibration_margins) == 1:
        return [1.0]
    return [float(np.std(m)) or 1.0 for m in calibration_margins]


def combine_margins(margins: Sequence[np.ndarray], scales: Sequence[float]) -> np.ndarray:
    """An ensemble's score: the mean of its members' margins, each divided by its spread.

    Prompts disagree on different reviews, so averaging them ranks reviews better than either alone
    (docs/ZERO_SHOT.md has the measurement); dividing by the spread keeps a prompt with larger
    margins from outvoting the others. The scales need no labels. One member: its margin, unchanged.
    """
    if len(margins) == 1:
        return np.asarray(margins[0], dtype=float)
    return np.mean([np.asarray(m, dtype=float) / s for m, s in zip(margins, scales, strict=True)], axis=0)


# ---------------------------------------------------------------------------- prompts -> token ids


@dataclass(frozen=True)
class Demonstration:
    text: str
    label: int


class PromptEncoder:
    """Turns a review into prompt ids: prefix + truncated review + suffix.

    The pieces are tokenized separately and concatenated, so the instruction and the suffix always
    survive whole (only the review is cut) and the ids the model sees are exactly the reported ones.
    """

    def __init__(self, tokenizer: Any, template: PromptTemplate, review_tokens: int, truncation: str = "tail",
                 demonstrations: Sequence[Demonstration] = (), shot_tokens: int = 60) -> None:
        if template.prompt.count(TEXT_SLOT) != 1:
            raise ConfigError(f"template {template.name!r}: the prompt needs exactly one {TEXT_SLOT} slot")
        self.tokenizer = tokenizer
        self.template = template
        self.review_tokens = review_tokens
        self.truncation = truncation
        self.label_ids = [self._word_ids(template.negative, "negative"), self._word_ids(template.positive, "positive")]
        demo_text = "".join(self._demonstration(d, shot_tokens) for d in demonstrations)
        content = demo_text + template.prompt
        if template.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise ModelError(f"template {template.name!r} needs a chat template; this tokenizer has none")
            message = {"role": "user", "content": content.replace(TEXT_SLOT, _SENTINEL)}
            rendered = tokenizer.apply_chat_template([message], add_generation_prompt=True, tokenize=False)
            if rendered.count(_SENTINEL) != 1:
                raise ModelError(f"template {template.name!r}: the chat template did not keep the review slot")
            prefix, suffix = rendered.split(_SENTINEL)
        else:
            prefix, suffix = content.split(TEXT_SLOT)
        # Spaces before the slot belong to the review's first token (" Great", not " " + "Great").
        stripped = prefix.rstrip(" ")
        self.lead = prefix[len(stripped):]
        self.prefix_ids = self._bos() + self._ids(stripped)
        self.suffix_ids = self._ids(suffix)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _bos(self) -> list[int]:
        """The BOS token, for tokenizers that add one (Llama-2 style); chat templates write their own."""
        bos = self.tokenizer.bos_token_id
        if self.template.chat or bos is None:
            return []
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return [bos] if ids and ids[0] == bos else []

    def _word_ids(self, word: str, which: str) -> list[int]:
        ids = self._ids(word)
        if not ids:
            raise ConfigError(f"template {self.template.name!r}: the {which} label word is empty")
        return ids

    def _demonstration(self, demo: Demonstration, shot_tokens: int) -> str:
        """A demonstration is the template filled with a (cut) training review and its label word."""
        ids = truncate_ids(self._ids(demo.text), shot_tokens, self.truncation)
        text = self.tokenizer.decode(ids).strip()
        word = self.template.positive if demo.label == 1 else self.template.negative
        return self.template.prompt.replace(TEXT_SLOT, text) + word + "\n\n"

    def encode(self, text: str) -> list[int]:
        review = truncate_ids(self._ids(self.lead + text), self.review_tokens, self.truncation)
        return self.prefix_ids + review + self.suffix_ids

    def describe_label_words(self) -> dict[str, dict[str, Any]]:
        """How each label word tokenizes: the answer to "why is ' Positive' not 'Positive'"."""
        out = {}
        for name, word, ids in (("positive", self.template.positive, self.label_ids[1]),
                                ("negative", self.template.negative, self.label_ids[0])):
            out[name] = {"word": word, "ids": ids, "tokens": [self.tokenizer.decode([i]) for i in ids]}
        return out


# ---------------------------------------------------------------------------- scoring

MIN_SHARED_PREFIX = 16  # below this, reusing a KV cache saves less than copying it costs


def _common_prefix(sequences: Sequence[list[int]], limit: int) -> int:
    """Length of the longest prefix all sequences share, at most `limit`."""
    if not sequences:
        return 0
    first = sequences[0]
    n = min(limit, len(first))
    for seq in sequences[1:]:
        i = 0
        while i < n and seq[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


class CausalScorer:
    """Batched log-likelihoods of continuations under a causal LM, with left padding.

    Position ids are computed from the attention mask, so a left-padded review gets the same
    positions (and the same scores, to float tolerance) as the review alone.
    """

    def __init__(self, model: Any, pad_id: int, batch_size: int = 8, progress: bool = False) -> None:
        self.model = model
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.progress = progress
        self.tokens = 0
        self.seconds = 0.0

    @torch.inference_mode()
    def _last_logprobs(self, sequences: list[list[int]], keep: int, desc: str) -> list[torch.Tensor]:
        """log-softmax of the last `keep` positions of each sequence (only those go through the LM head).

        A prefix shared by every sequence (few-shot demonstrations) is run once and its KV cache
        reused by every batch, so k demonstrations cost attention, not k times the forward pass.
        """
        out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        shared = _common_prefix(sequences, max(0, min(map(len, sequences), default=0) - keep))
        prefix_cache = None
        start = time.perf_counter()
        if shared >= MIN_SHARED_PREFIX:
            prefix_cache = self.model(input_ids=torch.tensor([sequences[0][:shared]]), use_cache=True).past_key_values
            self.tokens += shared
        else:
            shared = 0
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
            width = max(len(sequences[i]) for i in batch) - shared
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for row, i in enumerate(batch):
                rest = sequences[i][shared:]
                ids[row, width - len(rest):] = torch.tensor(rest)
                mask[row, shared + width - len(rest):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
            kwargs: dict[str, Any] = {"use_cache": False}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                kwargs = {"use_cache": True, "past_key_values": cache}
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                                **kwargs).logits
            logprobs = torch.log_softmax(logits[:, -keep:].float(), dim=-1)
            for row, i in enumerate(batch):
                out[i] = logprobs[row]
            self.tokens += int(mask[:, shared:].sum())
        self.seconds += time.perf_counter() - start
        return out

    def word_logprobs(self, prompts: list[list[int]], words: list[list[int]], desc: str = "scoring") -> np.ndarray:
        """[n_prompts, n_words]: the summed log-probability of each word's tokens after each prompt.

        Single-token words share one pass that keeps only the last position; a multi-token word gets
        its own pass over prompt + word[:-1], reading the positions that predict each word token.
        """
        result = np.zeros((len(prompts), len(words)))
        single = [j for j, w in enumerate(words) if len(w) == 1]
        if single:
            last = self._last_logprobs(prompts, 1, desc)
            for i, lp in enumerate(last):
                for j in single:
                    result[i, j] = float(lp[0, words[j][0]])
        for j, word in enumerate(words):
            if len(word) == 1:
                continue
            rows = self._last_logprobs([p + word[:-1] for p in prompts], len(word), f"{desc} (word {j})")
            target = torch.tensor(word)
            for i, lp in enumerate(rows):
                result[i, j] = float(lp.gather(-1, target[:, None]).sum())
        return result

    def margins(self, encoder: PromptEncoder, texts: Sequence[str], desc: str = "scoring") -> np.ndarray:
        """log p(positive words) - log p(negative words) for each text."""
        lp = self.word_logprobs([encoder.encode(t) for t in texts], encoder.label_ids, desc)
        return lp[:, 1] - lp[:, 0]


# ---------------------------------------------------------------------------- calibration


def contextual_offset(scorer: CausalScorer, encoder: PromptEncoder, content_free: Sequence[str]) -> float:
    """Contextual calibration (Zhao et al. 2021) for two labels, as a threshold on the margin.

    The label-word probabilities of content-free inputs ("N/A", "") are normalised over the two
    labels and averaged into p_cf; dividing by p_cf and renormalising moves the decision boundary
    of the margin from 0 to log(p_cf[pos] / p_cf[neg]).
    """
    if not content_free:
        raise ConfigError("zero_shot.content_free: contextual calibration needs at least one input")
    lp = scorer.word_logprobs([encoder.encode(t) for t in content_free], encoder.label_ids, "content-free")
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p_cf = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
    return float(math.log(p_cf[1] / p_cf[0]))


def fit_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The accuracy-maximising threshold (predict positive when score > t); ties: the middle one."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    if len(s) == 0:
        raise ConfigError("fit_threshold: no scores")
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    accuracy = ((s[None, :] > candidates[:, None]) == (y[None, :] == 1)).mean(axis=1)
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[len(best) // 2]])


def label_free_threshold(scores: Sequence[float]) -> float:
    """The median margin of unlabelled reviews: half are called positive, as in balanced IMDb."""
    return float(np.median(np.asarray(scores, dtype=float)))


def draw_demonstrations(pool: Sequence[Example], k: int, seed: int) -> list[Demonstration]:
    """k demonstrations, balanced between the labels (the odd one out at random), seeded, shuffled."""
    if k == 0:
        return []
    rng = random.Random(seed)
    by_label = {lab: [e for e in pool if e.label == lab] for lab in (0, 1)}
    counts = {0: k // 2, 1: k // 2}
    if k % 2:
        counts[rng.choice((0, 1))] += 1
    if any(len(by_label[lab]) < counts[lab] for lab in (0, 1)):
        raise ConfigError(f"zero_shot.shots={k}: the training pool has too few reviews of one label")
    chosen = [e for lab in (0, 1) for e in rng.sample(by_label[lab], counts[lab])]
    rng.shuffle(chosen)
    return [Demonstration(e.text, e.label) for e in chosen]


# ---------------------------------------------------------------------------- evaluation


def calibration_thresholds(offsets: Sequence[float], scales: Sequence[float], labels: Sequence[int],
                           margins: np.ndarray) -> dict[str, float]:
    """The four decision thresholds on the (combined) calibration margins: raw (0) and the three
    calibrations. `offsets` are the members' `contextual_offset`s, weighted as `combine_margins` does."""
    return {
        "raw": 0.0,
        "contextual": float(np.mean([o / s for o, s in zip(offsets, scales, strict=True)])),
        "validation": fit_threshold(labels, margins),
        "label-free": label_free_threshold(margins),  # the labels are not read
    }


def calibrated_rows(labels: Sequence[int], margins: np.ndarray, thresholds: dict[str, float]) -> dict[str, dict]:
    """One metrics row per decision threshold; the margin is the score, so ROC AUC is the same in all."""
    from sentitune.metrics import classification_metrics

    rows = {}
    for name, t in thresholds.items():
        rows[name] = {**classification_metrics(labels, margins.tolist(), threshold=t), "threshold": t}
    return rows


@dataclass
class PromptResult:
    template: str
    shots: int
    label_words: dict[str, dict[str, Any]]
    thresholds: dict[str, float]
    rows: dict[str, dict[str, Any]]
    margins: np.ndarray
    scales: list[float]  # per ensemble member; [1.0] for a single prompt
    prompt_example: str  # the prompt around a placeholder review, for the record


def describe_prompts(encoders: Sequence[PromptEncoder]) -> tuple[dict[str, dict[str, Any]], str]:
    """Label-word tokenization (keys prefixed by the member's name in an ensemble) and the prompt text."""
    words: dict[str, dict[str, Any]] = {}
    examples = []
    for e in encoders:
        lead = "" if len(encoders) == 1 else f"{e.template.name} "
        words.update({lead + k: v for k, v in e.describe_label_words().items()})
        tok = e.tokenizer
        examples.append(tok.decode(e.prefix_ids) + e.lead + "<review>" + tok.decode(e.suffix_ids))
    return words, "\n----\n".join(examples)


def evaluate_prompt(scorer: CausalScorer, encoders: Sequence[PromptEncoder], test: Sequence[Example],
                    calibration: Sequence[Example], content_free: Sequence[str], shots: int = 0) -> PromptResult:
    """Score test once and derive the raw and the three calibrated decisions from the one margin."""
    name = ENSEMBLE_SEP.join(e.template.name for e in encoders)
    tag = f"{name}, {shots}-shot"
    val_parts = [scorer.margins(e, [x.text for x in calibration], f"calibration ({tag})") for e in encoders]
    scales = member_scales(val_parts)
    val = combine_margins(val_parts, scales)
    margins = combine_margins([scorer.margins(e, [x.text for x in test], f"test ({tag})") for e in encoders], scales)
    offsets = [contextual_offset(scorer, e, content_free) for e in encoders]
    thresholds = calibration_thresholds(offsets, scales, [x.label for x in calibration], val)
    words, example = describe_prompts(encoders)
    return PromptResult(name, shots, words, thresholds, calibrated_rows([x.label for x in test], margins, thresholds),
                        margins, scales, example)


def sweep_templates(scorer: CausalScorer, tokenizer: Any, names: Sequence[str], custom: Sequence[PromptTemplate],
                    validation: Sequence[Example], review_tokens: int, truncation: str) -> dict[str, dict[str, Any]]:
    """Each template (or `a+b` ensemble) on the labelled validation slice: raw accuracy, ROC AUC and
    median-calibrated accuracy. An ensemble reuses its members' margins when they are in the sweep too."""
    labels = [e.label for e in validation]
    scored: dict[str, np.ndarray] = {}
    table = {}
    for name in names:
        encoders = [PromptEncoder(tokenizer, t, review_tokens, truncation) for t in get_templates(name, custom)]
        for e in encoders:
            if e.template.name not in scored:
                scored[e.template.name] = scorer.margins(e, [x.text for x in validation], f"sweep {e.template.name}")
        parts = [scored[e.template.name] for e in encoders]
        m = combine_margins(parts, member_scales(parts))
        table[name] = {**sweep_row(labels, m), "label_words": describe_prompts(encoders)[0]}
    return table


def sweep_row(labels: Sequence[int], margins: np.ndarray) -> dict[str, float]:
    """A prompt's validation numbers: raw accuracy, ROC AUC, raw positive rate, median-calibrated accuracy."""
    from sentitune.metrics import classification_metrics

    raw = classification_metrics(labels, margins.tolist(), 0.0)
    median = classification_metrics(labels, margins.tolist(), label_free_threshold(margins))
    return {"accuracy": raw["accuracy"], "roc_auc": raw["roc_auc"], "positive_rate": raw["positive_rate"],
            "calibrated_accuracy": median["accuracy"]}


def load_causal_lm(spec: str) -> tuple[Any, Any]:
    """The causal LM and its tokenizer (pad = EOS when there is no pad token, as for GPT-2)."""
    from transformers import AutoModelForCausalLM

    from sentitune.models.registry import load_tokenizer, resolve

    resolved = resolve(spec)
    if not resolved.is_decoder:
        raise ModelError(f"model {spec!r} ({resolved.model_type}) is not a causal LM; zero-shot needs a decoder")
    tokenizer = load_tokenizer(resolved.source)
    model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def run_zero_shot(cfg: ExperimentConfig, out: Path | None = None, overwrite: bool = False, progress: bool = False,
                  report: Report | None = None) -> dict[str, Any]:
    """The zero-shot method end to end: data, optional sweep, test with calibrations, few-shot, outputs."""
    from sentitune.data.sources import load_splits
    from sentitune.data.splits import sample
    from sentitune.runs import RunDir
    from sentitune.runtime import seed_everything, set_threads

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
    model, tokenizer = load_causal_lm(cfg.model.spec)
    scorer = CausalScorer(model, tokenizer.pad_token_id, zs.batch_size, progress)
    say(f"data: {len(splits.test)} test reviews, {len(labelled)} validation reviews for calibration")

    result: dict[str, Any] = {"model": cfg.model.spec, "data": splits.summary(), "review_tokens": zs.review_tokens,
                              "truncation": zs.truncation}
    name = zs.template
    if zs.sweep:
        table = sweep_templates(scorer, tokenizer, zs.sweep, zs.templates, labelled, zs.review_tokens, zs.truncation)
        name = max(table, key=lambda n: table[n][zs.sweep_metric])
        result["sweep"] = {"metric": zs.sweep_metric, "selected": name, "validation": table}
        say(f"sweep on {len(labelled)} validation reviews: selected {name!r} by {zs.sweep_metric}")
    templates = get_templates(name, zs.templates)

    encoders = [PromptEncoder(tokenizer, t, zs.review_tokens, zs.truncation) for t in templates]
    results = [evaluate_prompt(scorer, encoders, splits.test, labelled, zs.content_free)]
    demos = draw_demonstrations(splits.train, zs.shots, seed)  # [] when shots == 0
    if zs.shots:
        few = [PromptEncoder(tokenizer, t, zs.review_tokens, zs.truncation, demos, zs.shot_tokens) for t in templates]
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
                       zs.shot_tokens, primary.thresholds[zs.decision], result["decision"])
        for r in results:
            suffix = "" if r is primary else f"-{r.shots}-shot"
            t = r.thresholds[zs.decision]
            probs = probabilities(r.margins, t)
            run.write_predictions([e.id for e in splits.test], [e.label for e in splits.test], probs,
                                  name=f"predictions{suffix}.csv")
            _write_margins(run.path / f"margins{suffix}.csv", splits.test, r.margins)
        run.write_metrics(result)
    return result


# ---------------------------------------------------------------------------- using a saved run

PREDICTOR = "zero_shot.json"


def save_predictor(run_dir: Path, spec: str, templates: Sequence[PromptTemplate], scales: Sequence[float],
                   review_tokens: int, truncation: str, demonstrations: Sequence[Demonstration], shot_tokens: int,
                   threshold: float, decision: str) -> None:
    """Everything `predict` needs to score new reviews exactly as the run scored test.

    The demonstrations are stored as text, so a few-shot prompt does not depend on re-reading train.
    """
    from sentitune.atomic import write_json

    write_json(run_dir / PREDICTOR, {
        "model": spec, "templates": [to_dict(t) for t in templates], "scales": list(scales),
        "review_tokens": review_tokens, "truncation": truncation,
        "shot_tokens": shot_tokens, "demonstrations": [{"text": d.text, "label": d.label} for d in demonstrations],
        "threshold": threshold, "decision": decision})


def is_zero_shot_run(run_dir: Path) -> bool:
    return (Path(run_dir) / PREDICTOR).exists()


def saved_margins(run_dir: Path, texts: Sequence[str], batch_size: int = 8,
                  progress: bool = False) -> tuple[np.ndarray, float]:
    """Margins of `texts` under a saved zero-shot run's prompt, and the run's decision threshold."""
    import json

    path = Path(run_dir) / PREDICTOR
    try:
        saved = json.loads(path.read_text())
        templates = [PromptTemplate(**t) for t in saved["templates"]]
        scales = [float(x) for x in saved["scales"]]
        demos = [Demonstration(d["text"], int(d["label"])) for d in saved["demonstrations"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: not a readable zero-shot predictor ({e})") from e
    model, tokenizer = load_causal_lm(saved["model"])
    encoders = [PromptEncoder(tokenizer, t, saved["review_tokens"], saved["truncation"], demos, saved["shot_tokens"])
                for t in templates]
    scorer = CausalScorer(model, tokenizer.pad_token_id, batch_size, progress)
    margins = combine_margins([scorer.margins(e, texts, f"zero-shot ({e.template.name})") for e in encoders], scales)
    return margins, float(saved["threshold"])


def probabilities(margins: np.ndarray, threshold: float) -> list[float]:
    """sigmoid(margin - threshold): the two label words' normalised probability after the threshold shift."""
    return [1.0 / (1.0 + math.exp(-(m - threshold))) for m in margins]


def _write_margins(path: Path, examples: Sequence[Example], margins: np.ndarray) -> None:
    from sentitune.atomic import write_text
    from sentitune.runs import spreadsheet_safe

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "label", "margin"])
    for e, m in zip(examples, margins, strict=True):
        writer.writerow([spreadsheet_safe(e.id), e.label, f"{m:.6f}"])  # ids can be the user's
    write_text(path, buf.getvalue())
