"""From a DataConfig to Splits: pick the source, clean, check, carve validation, subsample."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sentitune.config import BINARY_LABELS, DataConfig, ExperimentConfig, load_config
from sentitune.data.hf_datasets import class_names, is_dataset_source, read_dataset
from sentitune.data.imdb import locate_imdb, read_imdb
from sentitune.data.records import Example, Splits
from sentitune.data.reviews import iter_reviews
from sentitune.data.splits import sample, split_off
from sentitune.data.tabular import read_table
from sentitune.data.targets import moved_span, read_target_lines
from sentitune.data.text import clean_text
from sentitune.errors import DataError

TARGET_SUFFIXES = (".raw", ".seg")
TABLE_TEST_FRACTION = 0.2  # test share held out of a CSV/JSONL source given without data.test_path
SMALL_VALIDATION = 100  # fewer validation reviews than this: a warning that choosing on them is noisy


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """A config from the user (`load_config`), its data.labels read from a Hugging Face dataset's ClassLabel when
    left at the binary default: a run's config.yaml then records the names, so a saved config is read as is."""
    cfg = load_config(path, overrides)
    if is_dataset_source(cfg.data.source) and cfg.data.labels == BINARY_LABELS:
        names = class_names(cfg.data)
        if names and names != cfg.data.labels:
            cfg.data.labels = names
            cfg.validate()  # the checks that depend on the number of classes
    return cfg


def is_target_lines(cfg: DataConfig, path: str) -> bool:
    """The three-line `$T$` format: asked for, or by suffix (.raw as acl-14, .seg as SemEval-2014 ship)."""
    return cfg.format == "target-lines" or (cfg.format == "auto" and Path(path).suffix.lower() in TARGET_SUFFIXES)


def is_file_source(cfg: DataConfig) -> bool:
    """A CSV/JSONL or `$T$` file: not the (binary) IMDb archive, nor a Hugging Face dataset (data/hf_datasets.py)."""
    return cfg.source != "imdb" and not is_dataset_source(cfg.source)


def has_targets(cfg: DataConfig) -> bool:
    """Whether these data settings give target-dependent examples (a target column, or `$T$` files)."""
    return cfg.target_column is not None or (is_file_source(cfg) and is_target_lines(cfg, cfg.source))


def read_file(cfg: DataConfig, path: str) -> list[Example]:
    if is_target_lines(cfg, path):
        return read_target_lines(Path(path), cfg.labels)
    offsets = (cfg.target_start_column, cfg.target_end_column) if cfg.target_start_column else None
    return read_table(Path(path), cfg.text_column, cfg.label_column, cfg.id_column, cfg.labels, cfg.target_column,
                      offsets)  # type: ignore[arg-type]


def read_source(cfg: DataConfig, progress: Callable[[int, int | None], None] | None = None,
                notes: list[str] | None = None) -> dict[str, list[Example]]:
    """Role -> examples: train and test (empty: held out of train), and validation or unsup when the source has
    them; what a dataset's split mapping chose is added to `notes`."""
    if cfg.source == "imdb":
        if [x.lower() for x in cfg.labels] != BINARY_LABELS:
            raise DataError(f"data.source=imdb is binary (negative, positive); data.labels is {cfg.labels}")
        unsup = ("unsup",) if cfg.unlabeled == "unsup" else ()
        return read_imdb(locate_imdb(cfg.path, progress=progress), ("train", "test", *unsup))
    if is_dataset_source(cfg.source):
        found, chosen = read_dataset(cfg)
        (notes if notes is not None else []).extend(chosen)
        return found
    return {"train": read_file(cfg, cfg.source), "test": read_file(cfg, cfg.test_path) if cfg.test_path else []}


def prepare(examples: list[Example], cfg: DataConfig, skipped: dict[str, int]) -> list[Example]:
    """Clean text and enforce the empty/oversize rules: an error, or a counted skip, never silent."""
    out = []
    for e in examples:
        text = clean_text(e.text) if cfg.clean_html else e.text
        if e.span is not None and text != e.text:
            span = moved_span(e.text, text, e.span, clean_text)
            if span is None:
                raise DataError(f"{e.id}: cleaning the text changed the target {e.target!r} (data.clean_html=false)")
            e = dataclasses.replace(e, span=span, target=text[span[0]:span[1]])
        if len(text) > cfg.max_chars:
            raise DataError(f"{e.id}: review is {len(text):,} characters, over data.max_chars={cfg.max_chars:,}")
        if not text.strip():
            if cfg.empty == "skip":
                skipped["empty"] = skipped.get("empty", 0) + 1
                continue
            raise DataError(f"{e.id}: empty or whitespace-only review (use data.empty=skip to skip and count)")
        out.append(e if text == e.text else dataclasses.replace(e, text=text))
    return out


def load_splits(
    cfg: DataConfig, seed: int, progress: Callable[[int, int | None], None] | None = None
) -> Splits:
    warnings: list[str] = []
    raw = read_source(cfg, progress, warnings)
    skipped: dict[str, int] = {}
    train = prepare(raw["train"], cfg, skipped)
    test = prepare(raw.get("test", []), cfg, skipped)
    table = cfg.source != "imdb"  # a file or a dataset: its own classes, and maybe no test split
    _require_two_classes(train, cfg.source if table else cfg.path or cfg.source, "training",
                         "a classifier needs examples of {} classes", cfg.labels)
    if table and cfg.test_path:
        _require_two_classes(test, cfg.test_path, "test", "ROC AUC is undefined without {} classes", cfg.labels)
    targets = {e.target is not None for e in train + test}
    if len(targets) > 1:
        raise DataError(f"{cfg.source}: some examples have a target and some do not (train and test must agree)")
    if not test:
        # A single CSV/JSONL file: hold out a stratified, seeded test split rather than fail at the end.
        train, test = split_off(train, TABLE_TEST_FRACTION, seed)
    if "validation" in raw:  # a dataset's own validation split (data.validation_split)
        pool, validation = train, prepare(raw["validation"], cfg, skipped)
    else:  # carved from the whole training split first, so it does not change with train_size
        pool, validation = split_off(train, cfg.val_size, seed)
    if cfg.train_size is not None and cfg.train_size > len(pool):
        warnings.append(f"data.train_size={cfg.train_size} but only {len(pool)} training examples after the "
                        f"validation carve-out; using {len(pool)}")
    if 0 < len(validation) < SMALL_VALIDATION:
        warnings.append(f"validation has {len(validation)} reviews: the kept checkpoint (and an ensemble's weights) "
                        f"are chosen on so few that the choice is mostly noise; {SMALL_VALIDATION} or more choose "
                        "reliably (data.val_size)")
    if cfg.eval_size is not None and cfg.eval_size > len(test):
        warnings.append(f"data.eval_size={cfg.eval_size} but only {len(test)} test examples; using {len(test)}")
    train = sample(pool, cfg.train_size, seed)
    return Splits(
        train=train,
        validation=validation,
        test=sample(test, cfg.eval_size, seed),
        skipped=skipped,
        warnings=warnings,
        pool=pool,
        unlabeled=_unlabeled(cfg, raw, pool, train, skipped),
    )


def _unlabeled(cfg: DataConfig, raw: dict[str, list[Example]], pool: list[Example], train: list[Example],
               skipped: dict[str, int]) -> list[Example]:
    """data.unlabeled's reviews, cleaned and checked as the labelled ones are. "pool": the training reviews that
    neither train nor validation drew (they keep their labels only to measure pseudo-labels afterwards; the teacher
    never reads them); "unsup" and a file: label -1."""
    if cfg.unlabeled is None:
        return []
    if cfg.unlabeled == "pool":
        drawn = {e.id for e in train}
        return [e for e in pool if e.id not in drawn]
    if cfg.unlabeled == "unsup":
        if "unsup" not in raw:
            raise DataError(f"data.unlabeled=unsup: the IMDb archive's train/unsup; data.source={cfg.source} has "
                            "none (use pool or a file of reviews)")
        if not raw["unsup"]:
            raise DataError(f"{cfg.path or cfg.source}: no train/unsup reviews (the official archive has 50,000); "
                            "use data.unlabeled=pool or a file of reviews")
        return prepare(raw["unsup"], cfg, skipped)
    reviews = iter_reviews(Path(cfg.unlabeled), cfg.text_column)
    found = [Example(id=r.where or f"{cfg.unlabeled}:{i}", text=r.text, label=-1) for i, r in enumerate(reviews)]
    if not found:
        raise DataError(f"{cfg.unlabeled}: no reviews (data.unlabeled)")
    return prepare(found, cfg, skipped)


def _require_two_classes(examples: list[Example], where: str, role: str, why: str, names: list[str]) -> None:
    """One class trains a constant and scores accuracy 1.0 with ROC AUC nan: refuse it, as the IMDb
    reader refuses an archive without pos or neg."""
    labels = Counter(e.label for e in examples)
    if len(labels) == 1:
        ((label, n),) = labels.items()
        name = f" ({names[label]})" if 0 <= label < len(names) else ""
        raise DataError(f"{where}: only one class in the {role} data: all {n} examples have label {label}{name}; "
                        + why.format("both" if len(names) == 2 else "two or more"))
