"""Few labels: a phase is never a handful of steps, an ensemble's weights do not follow a dozen reviews, a
tiny validation set is named as such, and a kept model that answers one class is a failure, not a result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentitune.config import load_config
from sentitune.data.sources import load_splits
from sentitune.ensemble import fit_weights
from sentitune.training import OneClassModel, train


def tiny_cfg(archive: Path, *extra: str) -> object:
    return load_config(None, [
        f"data.path={archive}", "data.train_size=24", "data.val_size=8", "data.eval_size=16", "data.max_length=48",
        "model.spec=gpt2-tiny-random", "method.name=probe", "train.epochs=1", "train.batch_size=8",
        "train.lr=0.005", "train.threads=1", "train.warmup_ratio=0", "train.checkpoint_every=null",
        "train.baseline=false", *extra])


def test_min_steps_scales_the_epochs_of_a_tiny_training_set(imdb_slice_archive: Path, tmp_path: Path) -> None:
    """24 reviews in batches of 8 are 3 steps an epoch: min_steps=12 trains 12 steps (4 epochs, 4 validations),
    and a phase under 50 steps says so."""
    lines: list[str] = []
    metrics = train(tiny_cfg(imdb_slice_archive, "train.min_steps=12", "train.log_every=1"), tmp_path / "run",
                    report=lines.append)
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in steps if r.get("event") == "train") == 12
    assert [r["epoch"] for r in metrics["validation"]] == [1.0, 2.0, 3.0, 4.0]
    assert any("trains 12 optimizer steps" in line and "train.min_steps" in line for line in lines), lines


def test_without_min_steps_the_epochs_decide(imdb_slice_archive: Path, tmp_path: Path) -> None:
    metrics = train(tiny_cfg(imdb_slice_archive, "train.epochs=2"), tmp_path / "run")
    assert [r["epoch"] for r in metrics["validation"]] == [1.0, 2.0]


def test_a_tiny_validation_set_is_named_in_a_warning(imdb_slice_archive: Path) -> None:
    cfg = tiny_cfg(imdb_slice_archive)
    warnings = load_splits(cfg.data, cfg.train.seed).warnings
    assert any("validation has 8 reviews" in w and "data.val_size" in w for w in warnings), warnings
    big = load_config(None, [f"data.path={imdb_slice_archive}", "data.val_size=100"])
    assert not any("validation has" in w for w in load_splits(big.data, 0).warnings)


def test_ensemble_weights_on_a_dozen_reviews_stay_near_equal() -> None:
    """13 validation reviews that happen to favour the n-gram model: unpulled, the fit trusts them (weights 0.2
    and 13); with the pull toward equal weights they stay near 1. On 2,000 reviews the data decide."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 13)
    transformer = np.clip(rng.random(13), 0.01, 0.99)  # uninformative
    ngram = np.where(labels == 1, 0.7, 0.3)  # right on every one of these 13
    loose = fit_weights(labels, transformer, ngram, prior=0)
    pulled = fit_weights(labels, transformer, ngram)
    assert loose["ngram"] > 5 and loose["transformer"] < 0.5
    assert all(0.5 < w < 2 for w in pulled.values()), pulled
    many = rng.integers(0, 2, 2000)
    good = np.clip(np.where(many == 1, 0.8, 0.2) + rng.normal(0, 0.25, 2000), 0.01, 0.99)
    noise = np.clip(rng.random(2000), 0.01, 0.99)
    decided = fit_weights(many, good, noise)
    assert decided["transformer"] > 1.2 and decided["ngram"] < 0.3, decided


def test_a_model_that_answers_one_class_is_a_failure(tmp_path: Path) -> None:
    """Every review the same text, half of them positive: no model can tell them apart, so the kept one answers
    one class for every validation review; the run says so instead of reporting accuracy 0.5 as a result."""
    rows = ["text,label"] + [f"The film.,{i % 2}" for i in range(80)]
    (tmp_path / "same.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = load_config(None, [
        f"data.source={tmp_path / 'same.csv'}", "data.val_size=16", "data.max_length=16",
        "model.spec=gpt2-tiny-random", "method.name=probe", "train.batch_size=8", "train.threads=1",
        "train.checkpoint_every=null", "train.baseline=false"])
    with pytest.raises(OneClassModel, match="answers '(negative|positive)' for every validation review"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_stretched_phase_validates_about_ten_times(imdb_slice_archive: Path, tmp_path: Path) -> None:
    """min_steps=60 on 3 steps an epoch is 20 short epochs: validation (and its checkpoint) every 2nd epoch, not
    after each one (twenty checkpoints of a few reviews' worth of training each)."""
    metrics = train(tiny_cfg(imdb_slice_archive, "train.min_steps=60"), tmp_path / "run")
    assert [r["epoch"] for r in metrics["validation"]] == [float(e) for e in range(2, 21, 2)]
    assert len(metrics["epoch_seconds"]) == 20
