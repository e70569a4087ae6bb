"""Self-training (sentitune.self_training): the real packaged SmolLM2 labels unlabelled reviews of a small real IMDb
slice (the training pool with its labels hidden), the confident ones train a MiniLM + n-gram student, and the
student is an ordinary run: it predicts, exports and serves; a kill while the teacher scores or the student trains
is resumed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import interrupt_after_steps, run_cli, write_archive
from scipy.special import softmax

from sentitune import self_training
from sentitune.config import ExperimentConfig, load_config
from sentitune.data.records import Example
from sentitune.errors import ConfigError, DataError
from sentitune.recipes import recipe_of
from sentitune.self_training import class_prior, prior_bias, select_confident, stable_draw

UNLABELED = 24


def student_argv(archive: Path, out: Path, *extra: str) -> list[str]:
    """12 labelled reviews (8 train + 4 validation), 24 unlabelled ones for the teacher, 20 test reviews."""
    return ["train", "--model", "minilm", "--method", "partial", "--data", str(archive), "--train-size", "8",
            "--val-size", "4", "--eval-size", "20", "--max-length", "64", "--batch-size", "4", "--min-steps", "6",
            "--lr", "0.001", "--seed", "3", "--feature-cache", "--out", str(out), "--no-progress",
            "--set", "method.freeze_layers=4", "--set", "train.baseline=false", "--set", "train.refuse_one_class=false",
            "--set", "self_train.teacher=smollm2-135m", "--set", "data.unlabeled=pool",
            "--set", f"self_train.unlabeled_size={UNLABELED}", "--set", "self_train.check_size=12",
            "--set", "zero_shot.review_tokens=48", *extra]


ENSEMBLE = ("--ngram-ensemble", "--set", "ensemble.ngram_data=train", "--set", "method.tfidf.min_df=1")


@pytest.fixture
def teacher_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The teacher's cache in this test's folder: each test scores from nothing (models stay in the real cache)."""
    folder = tmp_path / "teacher-cache"
    monkeypatch.setattr(self_training, "cache_dir", lambda *parts: folder.joinpath(*parts))
    (folder / "teacher").mkdir(parents=True)
    return folder / "teacher"


def test_a_student_of_pseudo_labels_is_an_ordinary_run(tmp_path: Path, imdb_slice_archive: Path,
                                                        teacher_cache: Path) -> None:
    run = tmp_path / "student"
    code, stdout, err = run_cli(student_argv(imdb_slice_archive, run))
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    st = metrics["self_training"]
    assert st["teacher"] == "smollm2-135m" and st["scored"] == UNLABELED and st["kept"] == UNLABELED // 2
    # 4 labelled validation reviews (< 100): a fifth of the pseudo-labels joins them
    assert st["pseudo_train"] + st["pseudo_validation"] == st["kept"] and st["pseudo_validation"] >= 1
    assert st["teacher_checked"] == 12 and 0 <= st["teacher_accuracy"] <= 1
    assert 0 <= st["pseudo_accuracy"] <= 1 and 0 <= st["teacher_accuracy_unlabeled"] <= 1  # the pool's hidden labels
    assert st["teacher_cost_seconds"] > 0 and sum(st["prior"]) == pytest.approx(1, abs=1e-3)
    data = metrics["data"]
    assert data["train"]["n"] == 8 + st["pseudo_train"] and data["train"]["pseudo"] == st["pseudo_train"]
    assert data["validation"]["pseudo"] == st["pseudo_validation"]
    cfg = load_config(run / "config.yaml")
    assert recipe_of(cfg).labels(cfg, data) == 12  # a bench counts the user's labels, not the teacher's
    assert "self-training: kept 12 pseudo-labels" in stdout

    from sentitune.inference import Predictor
    from sentitune.serve import create_app, running

    predictor = Predictor(run)
    texts = ["A wonderful, moving film with superb acting.", "Dull, badly written and far too long."]
    predictions = predictor.predict(texts)
    assert [p.label for p in predictions] and all(0 <= p.prob_positive <= 1 for p in predictions)
    code, _, err = run_cli(["evaluate", str(run), "--no-progress"])  # its teacher's reviews are not read again
    assert code == 0, err
    code, _, err = run_cli(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert code == 0 and (tmp_path / "hf" / "config.json").is_file(), err
    with running(create_app(run, predictor=predictor)) as url:
        served = httpx.post(f"{url}/predict", json={"texts": texts}, timeout=120).json()
    assert [p["label"] for p in served["predictions"]] == [p.label for p in predictions]


def test_a_kill_while_the_teacher_scores_costs_one_chunk_at_most(tmp_path: Path, imdb_slice_archive: Path,
                                                                 teacher_cache: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sentitune.zero_shot.scoring import CausalScorer

    monkeypatch.setattr(self_training, "CHUNK", 8)
    real, scored = CausalScorer.scores, []

    def killed_on_third(self: CausalScorer, encoder: object, texts: list[str], *args: object) -> np.ndarray:
        if len(scored) == 2:
            raise KeyboardInterrupt
        scored.append(len(texts))
        return real(self, encoder, texts, *args)

    monkeypatch.setattr(CausalScorer, "scores", killed_on_third)
    run = tmp_path / "student"
    code, _, err = run_cli(student_argv(imdb_slice_archive, run, "--set", "self_train.check_size=0"))
    assert code == 130, err
    (cache,) = teacher_cache.glob("*.json")
    assert len(json.loads(cache.read_text())["scores"]) == 16  # two chunks of 8 were written before the kill

    def counted(self: CausalScorer, encoder: object, texts: list[str], *args: object) -> np.ndarray:
        scored.append(len(texts))
        return real(self, encoder, texts, *args)

    monkeypatch.setattr(CausalScorer, "scores", counted)
    code, _, err = run_cli(student_argv(imdb_slice_archive, run, "--set", "self_train.check_size=0"))
    assert code == 0, err
    assert scored == [8, 8, 8]  # the rerun scored the third chunk only
    assert json.loads((run / "metrics.json").read_text())["self_training"]["kept"] == UNLABELED // 2


def test_a_killed_student_resumes_to_the_uninterrupted_result(tmp_path: Path, imdb_slice_archive: Path,
                                                              teacher_cache: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    extra = ("--set", "train.checkpoint_every=1", "--set", "self_train.check_size=0", *ENSEMBLE)
    assert run_cli(student_argv(imdb_slice_archive, whole, *extra))[0] == 0
    step = interrupt_after_steps(monkeypatch, 3)
    code, _, err = run_cli(student_argv(imdb_slice_archive, killed, *extra))
    assert code == 130 and (killed / "checkpoint.pt").is_file(), err
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    code, stdout, err = run_cli(student_argv(imdb_slice_archive, killed, *extra, "--resume"))
    assert code == 0, err
    assert (killed / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["ensemble"]["ngram_train"] == 8 + metrics["self_training"]["pseudo_train"]  # the n-gram half too


# ---------------------------------------------------------------------------------------- the pieces


def examples(n: int, label: int = -1) -> list[Example]:
    return [Example(id=f"train/unsup/{i}_0", text=f"review {i}", label=label) for i in range(n)]


def test_the_unlabelled_draw_is_stable_and_nested() -> None:
    pool = examples(200)
    small, large = stable_draw(pool, 20), stable_draw(pool, 60)
    assert {e.id for e in small} <= {e.id for e in large}  # a larger draw holds a smaller one
    assert stable_draw(list(reversed(pool)), 20) == small  # order (a seed's pool) does not change it
    gone = {e.id for e in pool[150:160]}
    kept = [e for e in small if e.id not in gone]  # reviews leaving the pool leave the draw, the rest stay
    assert stable_draw([e for e in pool if e.id not in gone], 20)[:len(kept)] == kept


def test_prior_bias_moves_a_leaning_teacher_to_the_labelled_shares() -> None:
    rng = np.random.default_rng(0)
    margins = rng.normal(2.0, 1.5, 1000)  # a prompt that calls most reviews positive
    scores = np.stack([np.zeros_like(margins), margins], axis=1)
    for prior in (np.array([0.5, 0.5]), np.array([0.7, 0.3])):
        bias = prior_bias(scores, prior)
        assert softmax(scores - bias, axis=1).mean(axis=0) == pytest.approx(prior, abs=1e-4)
    three = rng.normal(0, 1, (500, 3)) + np.array([0.0, 1.0, 2.0])
    prior = np.array([0.2, 0.3, 0.5])
    assert softmax(three - prior_bias(three, prior), axis=1).mean(axis=0) == pytest.approx(prior, abs=1e-4)


def test_each_class_keeps_its_share_of_the_most_confident() -> None:
    margins = np.array([3.0, 2.0, 1.0, 0.5, -0.2, -1.0, -4.0, -5.0, 6.0, -0.1])
    scores = np.stack([np.zeros_like(margins), margins], axis=1)
    index, labels = select_confident(scores, np.zeros(2), np.array([0.5, 0.5]), keep=0.4)
    assert sorted(zip(index.tolist(), labels.tolist(), strict=True)) == [(0, 1), (6, 0), (7, 0), (8, 1)]
    assert class_prior(examples(3, 1) + examples(1, 0), 2) == pytest.approx([2 / 6, 4 / 6])
    assert class_prior([], 3) == pytest.approx([1 / 3] * 3)  # no labels: equal shares


def test_settings_that_cannot_self_train_are_refused(tmp_path: Path) -> None:
    def cfg(**data: object) -> ExperimentConfig:
        c = ExperimentConfig()
        for key, value in data.items():
            section, name = key.split("__")
            setattr(getattr(c, section), name, value)
        return c

    for half in ({"data__unlabeled": "pool"}, {"self_train__teacher": "smollm2-135m"}):
        with pytest.raises(ConfigError, match="self_train.teacher and data.unlabeled: self-training needs both"):
            cfg(**half).validate()
    with pytest.raises(ConfigError, match="self_train.teacher: trains a student; tfidf trains no transformer"):
        cfg(self_train__teacher="smollm2-135m", data__unlabeled="pool", method__name="tfidf").validate()
    with pytest.raises(ConfigError, match=r"self_train.keep must be in \(0, 1\]"):
        cfg(self_train__teacher="x", data__unlabeled="pool", self_train__keep=0.0).validate()
    with pytest.raises(ConfigError, match="data.train_size: must be >= 2"):
        cfg(data__train_size=0).validate()
    cfg(self_train__teacher="x", data__unlabeled="pool", data__train_size=0, data__val_size=0.0).validate()


def test_unlabelled_reviews_from_a_file_the_pool_and_unsup(tmp_path: Path, imdb_slice_archive: Path,
                                                           imdb_slice: dict[str, list[Example]]) -> None:
    from sentitune.config import DataConfig
    from sentitune.data.sources import load_splits

    reviews = tmp_path / "unlabelled.txt"
    reviews.write_text("First unlabelled review.\n\nSecond one <br />here.\n")
    splits = load_splits(DataConfig(path=str(imdb_slice_archive), unlabeled=str(reviews), train_size=10), 1)
    assert [(e.text, e.label) for e in splits.unlabeled] == [("First unlabelled review.", -1),
                                                             ("Second one here.", -1)]
    assert splits.unlabeled[1].id == f"{reviews}:3"
    pool = load_splits(DataConfig(path=str(imdb_slice_archive), unlabeled="pool", train_size=10), 1)
    assert not {e.id for e in pool.unlabeled} & {e.id for e in pool.train + pool.validation}
    assert len(pool.unlabeled) == len(pool.pool) - 10
    with pytest.raises(DataError, match="no train/unsup reviews"):
        load_splits(DataConfig(path=str(imdb_slice_archive), unlabeled="unsup"), 1)
    official = write_archive(tmp_path / "official.tar.gz", imdb_slice, {
        "aclImdb/train/unsup/7_0.txt": b"An unlabelled review.", "aclImdb/train/unsup/8_0.txt": b"Another<br />one."})
    unsup = load_splits(DataConfig(path=str(official), unlabeled="unsup"), 1).unlabeled
    assert sorted((e.id, e.text, e.label) for e in unsup) == [("train/unsup/7_0", "An unlabelled review.", -1),
                                                              ("train/unsup/8_0", "Another one.", -1)]
