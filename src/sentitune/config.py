"""One dataclass tree describes a run completely; it is saved in the run directory as YAML.

Why dataclasses and not a dict: every field is typed, defaulted and documented in one place, and
``key.sub=value`` overrides are validated against the field's type before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentitune.coerce import check_choice as _check_choice
from sentitune.coerce import check_name as _check_name
from sentitune.coerce import check_pattern as _check_pattern
from sentitune.coerce import check_positive as _positive
from sentitune.coerce import from_dict, read_yaml
from sentitune.errors import ConfigError
from sentitune.kinds import METHODS, PHASE_METHODS, ZERO_SHOT, kind_of

__all__ = ["METHODS", "PHASE_METHODS"]  # the methods of each kind are kinds.py's; settings name them
POOLINGS = ("auto", "mean", "cls", "last")
HEADS = ("softmax", "sigmoid")
TRUNCATIONS = ("head", "tail", "head+tail")
WINDOW_POOLINGS = ("mean", "max", "attention")  # how the window logits of one review are pooled
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TRACKERS = ("tensorboard", "mlflow")  # train.report_to (tracking.py)
TARGET_INPUTS = ("auto", "pair", "markers", "prompt")  # how a target reaches the model (data/targets.py)
DATA_FORMATS = ("auto", "table", "target-lines")
BINARY_LABELS = ["negative", "positive"]


@dataclass
class DataConfig:
    source: str = "imdb"  # imdb (archive/folder) | hf:NAME[:CONFIG] | save_to_disk folder | .parquet | CSV/JSONL
    path: str | None = None  # IMDb archive or extracted folder; None: $SENTITUNE_IMDB, cache, download
    test_path: str | None = None  # for file sources: a separate test file; None: 20% of source held out
    train_split: str = "train"  # a dataset source's split mapping (data/hf_datasets.py):
    validation_split: str | None = "auto"  # auto: its "validation" when it is not the test; null: carved from train
    test_split: str | None = "auto"  # auto: "test", or "validation" where test's labels are hidden; null: held out
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    # Class names, in index order (labels in files: a name, or its index). Binary is the default; e.g.
    # [negative, neutral, positive] for target-dependent sentiment.
    labels: list[str] = field(default_factory=lambda: list(BINARY_LABELS))
    format: str = "auto"  # auto: by suffix (.raw/.seg: three-line $T$ target files) | table | target-lines
    target_column: str | None = None  # CSV/JSONL: the target's column (a target-dependent task)
    target_start_column: str | None = None  # optional character offsets of the target in the text, for a
    target_end_column: str | None = None  #   target that occurs twice (default: its first occurrence)
    target_input: str = "auto"  # pair (sentence, target) | markers (inline) | prompt; auto: pair for encoders,
    #                             prompt for decoders
    target_markers: list[str] = field(default_factory=lambda: ["<t>", "</t>"])  # put around the target
    target_prompt: str = "{text} The sentiment toward {target} is"  # {text} is truncated, never the rest
    train_size: int | None = None  # stratified, seeded subsample of the training pool
    val_size: float = 0.1  # fraction (<1) or count (>=1) carved from train, never from test
    eval_size: int | None = None  # stratified, seeded subsample of test
    clean_html: bool = True  # turn the "<br />" tags of IMDb into spaces
    max_length: int = 256
    truncation: str = "head"  # head | tail | head+tail
    head_tokens: int | None = None  # with head+tail: tokens kept from the head (default: a quarter)
    # A long review read as up to this many windows of max_length tokens each (special tokens on every one),
    # whose logits are pooled (model.window_pooling); 1: one window, cut by data.truncation (docs/METHODS.md).
    windows: int = 1
    window_stride: int | None = None  # review tokens between window starts; None: windows do not overlap
    empty: str = "error"  # empty reviews: "error" or "skip" (skips are counted and reported)
    max_chars: int = 1_000_000  # a longer review is an input error, not a silent memory blow-up
    unlabeled: str | None = None  # for self_train: unsup (IMDb train/unsup) | pool (train's rest, labels hidden) | file


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = None  # None: per-architecture default
    top_layers: int | None = None  # adapters only in the last N blocks; None: all blocks
    merge: bool = False  # merge adapters into the base weights when saving (export)


@dataclass
class TfidfSettings:
    """method.name=tfidf: the classical reference, TF-IDF n-grams + logistic regression (sentitune.classical)."""

    variant: str = "lr"  # lr: TF-IDF + logistic regression; nb: features scaled by NB log-count ratios (NBSVM-style)
    ngram_max: int = 2  # n-grams from 1 to this (2: unigrams and bigrams)
    min_df: int = 2  # drop n-grams seen in fewer training reviews
    max_features: int | None = None  # keep the most frequent n-grams only; None: all
    c: float = 4.0  # inverse regularisation strength of the logistic regression
    nb_alpha: float = 1.0  # smoothing of the NB ratios
    # true: features are n-gram presence (0/1), and NB ratios count the reviews an n-gram occurs in: NBSVM as
    # Wang & Manning (2012) published it (docs/RESULTS.md measures both); false: sublinear TF-IDF values
    binary: bool = False
    # what a word is (a regex; scikit-learn's default drops one-letter words and punctuation). The frontier's
    # n-gram model uses r"(?u)\b\w+\b|[!?]": "a", "I" and "!" carry sentiment in trigrams ("a must see", "!!")
    token_pattern: str = r"(?u)\b\w\w+\b"
    # Target-dependent data: a second TF-IDF over the target and this many words either side of it, so two
    # targets of one sentence get different features (0: the target's own words only).
    target_window: int = 3


@dataclass
class PhaseConfig:
    """One phase of a schedule: what trains, for how long, how fast."""

    method: str = "lora"  # probe | partial | full | lora
    epochs: float = 1.0
    lr: float | None = None  # None: TrainConfig.lr
    # cross-entropy: the head's logits against the labels. contrastive: no head; reviews of one class pulled
    # together and of other classes apart in each batch (models/contrastive.py); a later phase trains the head.
    loss: str = "cross-entropy"
    temperature: float = 0.1  # contrastive: the softmax temperature of the cosine similarities


@dataclass
class ContrastiveSettings:
    """method.name=contrastive, the SetFit idea on sentitune's cached prefix: the top blocks (partial, above
    method.freeze_layers) tuned with a batch-wise supervised contrastive loss for train.epochs at train.lr (each
    review encoded once per step, not once per pair), then a linear head (logistic regression) on the tuned
    encoder's cached states."""

    temperature: float = 0.1
    head_epochs: float = 10.0
    head_lr: float = 0.01


@dataclass
class MethodConfig:
    # probe | partial | full | lora | two-phase | contrastive | zero-shot | tfidf (the classical reference)
    name: str = "lora"
    freeze_layers: int = 10  # partial (and contrastive): embeddings + first N blocks frozen
    lora: LoraSettings = field(default_factory=LoraSettings)
    phases: list[PhaseConfig] = field(default_factory=list)  # two-phase
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)
    tfidf: TfidfSettings = field(default_factory=TfidfSettings)  # tfidf


@dataclass
class ModelConfig:
    spec: str = "minilm"  # hub id, local folder or packaged name (see `sentitune models`)
    pooling: str = "auto"  # auto (last for decoders, mean for encoders) | mean | cls | last
    head: str = "softmax"  # softmax: one logit per class + cross-entropy; sigmoid (two classes): 1 logit + BCE
    dropout: float = 0.1  # dropout before the head
    # Dropout on the attention probabilities of the blocks that train; None: the backbone's own (GPT-2, BERT,
    # MPNet: 0.1). 0 lets them use the fused attention kernel: on a CPU drawing the dropout masks over every
    # (token, token) pair was about a quarter of later epochs' time (docs/PERFORMANCE.md, profile); frozen blocks
    # use none.
    attention_dropout: float | None = None
    window_pooling: str = "mean"  # data.windows > 1: mean | max | attention (a learned score per window)


@dataclass
class TrainConfig:
    epochs: float = 1.0
    # Each phase trains at least this many optimizer steps: on a few dozen labels one epoch is a handful of
    # steps and learns nothing, so the epochs are scaled up (0: epochs alone decide).
    min_steps: int = 0
    lr: float = 5e-4
    batch_size: int = 16
    eval_batch_size: int = 16  # small: length-sorted batches then pad little (64 lost the bucketing gain)
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"  # any transformers scheduler name: linear, cosine, constant_with_warmup…
    max_grad_norm: float = 1.0
    patience: int | None = None  # early stopping on validation loss, in evaluations
    eval_every: int | None = None  # optimizer steps between validations; None: once per epoch
    checkpoint_every: int | None = 200  # optimizer steps between resumable checkpoints
    log_every: int | None = 10  # optimizer steps between training-loss records in log.jsonl (curves); 0: off
    report_to: list[str] = field(default_factory=list)  # tensorboard | mlflow (tracking.py; sentitune[tracking])
    tracking_uri: str | None = None  # MLflow's; None: $MLFLOW_TRACKING_URI, else sqlite mlflow.db beside the run
    seed: int = 42
    precision: str = "auto"  # training autocast: auto | bf16 | fp16 (GPU only) | fp32
    eval_precision: str = "fp32"  # baseline, test, evaluate, predict: fp32 gives the same numbers on any CPU
    threads: int | None = None  # torch threads; None: all cores
    # A kept model that answers one class for every validation review ends the run with an error (a failure,
    # not a result); false keeps it (a code-path test's tiny random model may learn nothing, on purpose).
    refuse_one_class: bool = True
    baseline: bool = True  # evaluate the untrained classifier on test before training
    # The final test pass (metrics.json "test", predictions.csv). false: test is never scored nor tokenized
    # (with baseline false too); `sentitune search` trains its trials so, and only the chosen one sees test.
    evaluate_test: bool = True
    feature_cache: bool = False  # frozen prefix computed once, stored on disk (docs/PERFORMANCE.md)
    feature_cache_dir: str | None = None  # its folder; None: features/ in $SENTITUNE_CACHE (~/.cache/sentitune)


@dataclass
class PromptTemplate:
    """A user-defined zero-shot prompt: `prompt` has one {text} slot (and a {target} slot for target-dependent
    examples); the label words continue it."""

    name: str = "custom"
    prompt: str = "Review: {text}\nSentiment:"
    positive: str = " positive"  # the leading space matters: " positive" and "positive" are different tokens
    negative: str = " negative"
    chat: bool = False  # wrap the prompt in the tokenizer's chat template (instruct models)
    # One label word per class, in data.labels order (e.g. [" negative", " neutral", " positive"]); empty: the
    # two words above, negative then positive.
    words: list[str] = field(default_factory=list)


@dataclass
class ZeroShotConfig:
    """method.name=zero-shot: score label words with a causal LM (see docs/ZERO_SHOT.md)."""

    template: str = "review-sentiment"  # a built-in name, one of `templates`, or names joined by + (an ensemble)
    templates: list[PromptTemplate] = field(default_factory=list)  # user-defined templates
    review_tokens: int = 200  # the review is cut to this many tokens inside the template, never the prompt
    truncation: str = "tail"  # which end of the review survives: head | tail | head+tail
    shots: int = 0  # few-shot: k labelled demonstrations (balanced, seeded, from train) prepended
    shot_tokens: int = 60  # each demonstration review cut to this many tokens
    calibration_size: int = 200  # labelled validation reviews (threshold) and unlabelled train reviews (median)
    content_free: list[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])  # contextual calibration
    decision: str = "label-free"  # predictions.csv: raw | contextual | validation | label-free (two classes only)
    sweep: list[str] = field(default_factory=list)  # templates compared on validation; the best goes to test
    sweep_metric: str = "roc_auc"  # roc_auc | accuracy | calibrated_accuracy
    batch_size: int = 8


@dataclass
class EnsembleConfig:
    """A transformer run that also fits an n-gram model (method.tfidf's settings) on the same training reviews
    and adds the two models' log-probabilities with weights fitted on validation (sentitune.ensemble)."""

    ngram: bool = False
    # which reviews the n-gram model trains on: "all" = every training review left after the validation
    # carve-out (it fits 24,000 IMDb reviews in about a minute; data.train_size is the transformer's budget),
    # "train" = the transformer's own training reviews
    ngram_data: str = "all"


@dataclass
class SelfTrainConfig:
    """Self-training (sentitune.self_training): a teacher labels unlabelled reviews (data.unlabeled), the ones it
    is surest of join the labelled training reviews, and the student trains on both as usual. The teacher is a
    causal LM prompted as the zero_shot section says (template, review_tokens, truncation), its decision moved to
    the class shares of the labelled reviews (equal shares with none)."""

    teacher: str | None = None  # hub id, folder or packaged name of the causal LM; None: no self-training
    unlabeled_size: int = 2000  # unlabelled reviews the teacher labels (a draw stable across seeds and sizes)
    keep: float = 0.5  # the most confident fraction of them trains the student (each class in its share)
    check_size: int = 200  # labelled reviews the teacher is also scored on: its accuracy, recorded (0: none)
    pseudo_validation: float = 0.2  # of the kept, to validation when it has under 100 labelled reviews (0: never)
    batch_size: int = 8  # teacher prompts per forward pass


@dataclass
class ExperimentConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)

    def phases(self) -> list[PhaseConfig]:
        """Every run is a list of phases; a single method is one phase of `train.epochs`."""
        if self.method.name == "two-phase":
            return [dataclasses.replace(p, lr=p.lr if p.lr is not None else self.train.lr)
                    for p in self.method.phases]
        if self.method.name == "contrastive":
            c = self.method.contrastive
            return [PhaseConfig("partial", self.train.epochs, self.train.lr, "contrastive", c.temperature),
                    PhaseConfig("probe", c.head_epochs, c.head_lr)]
        return [PhaseConfig(self.method.name, self.train.epochs, self.train.lr)]

    def validate(self) -> ExperimentConfig:
        """Every field in range and every combination meaningful, or a ConfigError naming the field."""
        _check_name(self.name)
        _check_choice("method.name", self.method.name, METHODS)
        self._validate_data()
        self._validate_training()
        self._validate_methods()
        self._validate_zero_shot()
        self._validate_self_train()
        return self

    def _validate_self_train(self) -> None:
        """The self_train section and what it needs: unlabelled reviews and a trained student."""
        st = self.self_train
        if (st.teacher is None) != (self.data.unlabeled is None):
            raise ConfigError("self_train.teacher and data.unlabeled: self-training needs both (a teacher and "
                              "unsup, pool or a file of reviews for it to label); give both or neither")
        if st.teacher is not None and not kind_of(self).trains:
            raise ConfigError(f"self_train.teacher: trains a student; {self.method.name} trains no transformer")
        _positive("self_train.unlabeled_size", st.unlabeled_size, minimum=1)
        _positive("self_train.check_size", st.check_size, minimum=0)
        _positive("self_train.batch_size", st.batch_size, minimum=1)
        if not (0 < st.keep <= 1 and 0 <= st.pseudo_validation < 1):
            raise ConfigError(f"self_train.keep must be in (0, 1] and self_train.pseudo_validation in [0, 1), got "
                              f"{st.keep} and {st.pseudo_validation}")

    def _validate_data(self) -> None:
        """Choices, class names, target settings, sizes and lengths of the data section."""
        _check_choice("model.pooling", self.model.pooling, POOLINGS)
        _check_choice("model.head", self.model.head, HEADS)
        _check_choice("data.truncation", self.data.truncation, TRUNCATIONS)
        _check_choice("data.empty", self.data.empty, ("error", "skip"))
        _check_choice("data.format", self.data.format, DATA_FORMATS)
        _check_choice("data.target_input", self.data.target_input, TARGET_INPUTS)
        labels = self.data.labels
        if len(labels) < 2 or len({x.lower() for x in labels}) != len(labels) or not all(x.strip() for x in labels):
            raise ConfigError(f"data.labels: need two or more distinct, non-empty names, got {labels}")
        if self.model.head == "sigmoid" and len(labels) != 2:
            raise ConfigError(f"model.head: sigmoid is for two classes; data.labels has {len(labels)} (use softmax)")
        if len(self.data.target_markers) != 2:
            raise ConfigError(f"data.target_markers: two strings (before, after), got {self.data.target_markers}")
        if "{text}" not in self.data.target_prompt or "{target}" not in self.data.target_prompt:
            raise ConfigError(f"data.target_prompt: needs a {{text}} and a {{target}} slot, got "
                              f"{self.data.target_prompt!r}")
        if (self.data.target_start_column is None) != (self.data.target_end_column is None):
            raise ConfigError("data.target_start_column and data.target_end_column: give both or neither")
        if self.data.target_start_column and not self.data.target_column:
            raise ConfigError("data.target_start_column: needs data.target_column")
        _positive("data.max_length", self.data.max_length, minimum=8)
        if self.data.train_size is not None:  # 0: no labelled training review (a self-trained student's choice)
            _positive("data.train_size", self.data.train_size, minimum=0 if self.self_train.teacher else 2)
        if self.data.eval_size is not None:
            _positive("data.eval_size", self.data.eval_size, minimum=2)
        if not self.data.val_size >= 0:
            raise ConfigError(f"data.val_size: must be >= 0, got {self.data.val_size}")
        if self.data.val_size >= 1 and self.data.val_size != int(self.data.val_size):
            raise ConfigError(f"data.val_size: a fraction (< 1) or a whole count (>= 1), got {self.data.val_size}")
        self._validate_head_tokens()
        _positive("data.max_chars", self.data.max_chars, minimum=1)
        self._validate_windows()

    def _validate_training(self) -> None:
        """The training loop's settings: precisions, phases, epochs, rates, sizes, seeds, dropouts."""
        _check_choice("train.precision", self.train.precision, PRECISIONS)
        _check_choice("train.eval_precision", self.train.eval_precision, PRECISIONS)
        for tracker in self.train.report_to:
            _check_choice("train.report_to", tracker, TRACKERS)
        if self.method.name == "two-phase" and not self.method.phases:
            raise ConfigError("method.phases: two-phase needs at least one phase")
        for i, p in enumerate(self.method.phases):
            _check_choice(f"method.phases[{i}].method", p.method, PHASE_METHODS)
            _positive(f"method.phases[{i}].epochs", p.epochs)
            _check_choice(f"method.phases[{i}].loss", p.loss, ("cross-entropy", "contrastive"))
            _positive(f"method.phases[{i}].temperature", p.temperature)
            if p.loss == "contrastive" and p.method == "probe":
                raise ConfigError(f"method.phases[{i}]: a contrastive loss tunes the encoder; probe trains the head")
        losses = [p.loss for p in self.phases()] if kind_of(self).trains else []
        if "contrastive" in losses and self.train.batch_size < 4:
            raise ConfigError(f"train.batch_size: a contrastive phase compares the reviews of a batch with each other; "
                              f"{self.train.batch_size} is too few (at least 4)")
        if losses and losses[-1] == "contrastive":
            raise ConfigError("method.phases: the last phase is contrastive, so the head never trains; add a probe "
                              "phase after it (or use method.name=contrastive)")
        _positive("method.contrastive.temperature", self.method.contrastive.temperature)
        _positive("method.contrastive.head_epochs", self.method.contrastive.head_epochs)
        _positive("method.contrastive.head_lr", self.method.contrastive.head_lr)
        _positive("train.epochs", self.train.epochs)
        if not 0 <= self.train.seed < 2**32:  # numpy's seeds; a wider one would fail minutes later, in a traceback
            raise ConfigError(f"train.seed: must be in 0..{2**32 - 1}, got {self.train.seed}")
        _positive("train.lr", self.train.lr)
        _positive("train.batch_size", self.train.batch_size, minimum=1)
        _positive("train.eval_batch_size", self.train.eval_batch_size, minimum=1)
        _positive("train.grad_accum", self.train.grad_accum, minimum=1)
        _positive("train.min_steps", self.train.min_steps, minimum=0)
        optional = (("patience", 1), ("eval_every", 0), ("checkpoint_every", 0), ("log_every", 0), ("threads", 0))
        for name, minimum in optional:
            if getattr(self.train, name) is not None:  # 0 (like None) means "off" / "all cores"
                _positive(f"train.{name}", getattr(self.train, name), minimum=minimum)
        if not 0 <= self.train.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {self.train.warmup_ratio}")
        if not 0 <= self.model.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.model.dropout}")
        if self.model.attention_dropout is not None and not 0 <= self.model.attention_dropout < 1:
            raise ConfigError(f"model.attention_dropout: must be in [0, 1) or null, got {self.model.attention_dropout}")

    def _validate_methods(self) -> None:
        """Each method's section (LoRA, tfidf, the ensemble, partial's freeze depth) and what the kind allows."""
        kind = kind_of(self)
        if not self.train.evaluate_test and not kind.trains:
            raise ConfigError(f"train.evaluate_test: false is for trained methods; {self.method.name} always "
                              "scores test")
        lora = self.method.lora
        _positive("method.lora.r", lora.r, minimum=1)
        _positive("method.lora.alpha", lora.alpha)
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"method.lora.dropout: must be in [0, 1), got {lora.dropout}")
        if lora.top_layers is not None:
            _positive("method.lora.top_layers", lora.top_layers, minimum=1)
        tf = self.method.tfidf
        _check_choice("method.tfidf.variant", tf.variant, ("lr", "nb"))
        _positive("method.tfidf.ngram_max", tf.ngram_max, minimum=1)
        _positive("method.tfidf.min_df", tf.min_df, minimum=1)
        if tf.max_features is not None:
            _positive("method.tfidf.max_features", tf.max_features, minimum=1)
        _positive("method.tfidf.c", tf.c)
        _positive("method.tfidf.nb_alpha", tf.nb_alpha)
        _positive("method.tfidf.target_window", tf.target_window, minimum=0)
        _check_pattern("method.tfidf.token_pattern", tf.token_pattern)
        _check_choice("ensemble.ngram_data", self.ensemble.ngram_data, ("all", "train"))
        if self.ensemble.ngram:
            if not kind.trains:
                raise ConfigError(f"ensemble.ngram: combines a trained transformer with an n-gram model; method "
                                  f"{self.method.name} is not a trained transformer")
            if not self.data.val_size and not (self.self_train.teacher and self.self_train.pseudo_validation):
                raise ConfigError("ensemble.ngram: the weights are fitted on validation; data.val_size is 0")
        if self.method.freeze_layers < 0:
            raise ConfigError(f"method.freeze_layers: must be >= 0, got {self.method.freeze_layers}")

    def _validate_zero_shot(self) -> None:
        """The zero_shot section (read by zero-shot runs; its N-class rules only there)."""
        labels = self.data.labels
        kind = kind_of(self)
        zs = self.zero_shot
        _check_choice("zero_shot.truncation", zs.truncation, TRUNCATIONS)
        _check_choice("zero_shot.decision", zs.decision, ("raw", "contextual", "validation", "label-free"))
        _check_choice("zero_shot.sweep_metric", zs.sweep_metric, ("roc_auc", "accuracy", "calibrated_accuracy"))
        _positive("zero_shot.review_tokens", zs.review_tokens, minimum=1)
        _positive("zero_shot.shot_tokens", zs.shot_tokens, minimum=1)
        _positive("zero_shot.calibration_size", zs.calibration_size, minimum=2)
        _positive("zero_shot.batch_size", zs.batch_size, minimum=1)
        if zs.shots < 0:
            raise ConfigError(f"zero_shot.shots: must be >= 0, got {zs.shots}")
        if kind is ZERO_SHOT and len(labels) > 2:  # the zero_shot section is read by zero-shot runs only
            _binary_only_decisions(zs, len(labels))

    def _validate_head_tokens(self) -> None:
        """data.head_tokens splits one window between head and tail: it must do something, and fit. The exact
        bound (max_length less the tokenizer's special tokens) is checked when the tokenizer is known
        (data.batching.encode)."""
        head = self.data.head_tokens
        if head is None:
            return
        if self.data.truncation != "head+tail":
            raise ConfigError(f"data.head_tokens: only applies to data.truncation=head+tail (got "
                              f"{self.data.truncation}); remove it or set the truncation")
        if not 0 <= head < self.data.max_length:
            raise ConfigError(f"data.head_tokens: must be in 0..{self.data.max_length - 1} (below data.max_length="
                              f"{self.data.max_length}, so some tokens come from the tail), got {head}")

    def _validate_windows(self) -> None:
        """Window settings: a setting that would do nothing, or be silently overruled, is an error."""
        data = self.data
        _positive("data.windows", data.windows, minimum=1)
        _check_choice("model.window_pooling", self.model.window_pooling, WINDOW_POOLINGS)
        if data.window_stride is not None:
            _positive("data.window_stride", data.window_stride, minimum=1)
            if data.window_stride > data.max_length:  # the exact bound (less the special tokens) is encode's
                raise ConfigError(f"data.window_stride: {data.window_stride} is longer than a window "
                                  f"(data.max_length={data.max_length}); tokens between windows would be skipped")
        if data.windows == 1:
            if data.window_stride is not None:
                raise ConfigError("data.window_stride: needs data.windows > 1 (one window has no stride)")
            if self.model.window_pooling != "mean":
                raise ConfigError(f"model.window_pooling: {self.model.window_pooling} pools several windows; "
                                  "data.windows is 1")
            return
        if data.truncation != "head" or data.head_tokens is not None:
            raise ConfigError(f"data.truncation: {data.truncation} (and data.head_tokens) cut one window; with "
                              f"data.windows={data.windows} the first windows come from the head and the last from "
                              "the tail: leave truncation at head")
        if not kind_of(self).trains:
            raise ConfigError(f"data.windows: {self.method.name} does not read windows; windows are for trained "
                              "transformer classifiers")


def _binary_only_decisions(zs: ZeroShotConfig, classes: int) -> None:
    """The label-free threshold (the median margin) assumes two balanced classes; it has no N-class form here."""
    if zs.decision == "label-free":
        raise ConfigError(f"zero_shot.decision: label-free (the median margin) is for two classes; data.labels has "
                          f"{classes}: use contextual, validation or raw")
    if zs.sweep and zs.sweep_metric == "calibrated_accuracy":
        raise ConfigError(f"zero_shot.sweep_metric: calibrated_accuracy (median threshold) is for two classes; "
                          f"data.labels has {classes}: use roc_auc or accuracy")


# ---------------------------------------------------------------- building from dicts and YAML


def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment (or start from defaults) and apply ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; --config takes an experiment YAML file")
        data = read_yaml(path, ConfigError, "config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(ExperimentConfig, data).validate()


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def replace(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, **changes)
