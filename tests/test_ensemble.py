"""The transformer + n-gram ensemble (sentitune.ensemble) and NBSVM as published (method.tfidf.binary)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
from scipy.special import expit, logit

from sentitune.classical import TfidfClassifier
from sentitune.config import ConfigError, TfidfSettings, load_config
from sentitune.data.records import Example
from sentitune.ensemble import NGRAM_FOLDER, combine, fit_weights
from sentitune.errors import RunError

NBSVM = ["method.tfidf.variant=nb", "method.tfidf.binary=true", "method.tfidf.ngram_max=3",
         r"method.tfidf.token_pattern=(?u)\b\w+\b|[!?]"]


# ------------------------------------------------------------------------------------------- the math


def test_combine_binary_is_the_weighted_sum_of_logits() -> None:
    t, n = np.array([0.9, 0.2, 0.5]), np.array([0.6, 0.7, 0.01])
    w = {"transformer": 1.5, "ngram": 0.5}
    expected = expit(1.5 * logit(t) + 0.5 * logit(n))
    np.testing.assert_allclose(combine(w, t, n), expected, rtol=1e-9)


def test_combine_many_classes_normalises_rows() -> None:
    t = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    n = np.array([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    out = combine({"transformer": 1.0, "ngram": 1.0}, t, n)
    expected = t * n / (t * n).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-9)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_fit_weights_ignores_noise_and_beats_each_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    signal = expit(2.0 * (2 * y - 1) + rng.normal(0, 1.5, len(y)))  # informative, but noisy
    other = expit(1.0 * (2 * y - 1) + rng.normal(0, 1.5, len(y)))  # weaker, independent errors
    noise = rng.uniform(0.05, 0.95, len(y))
    w = fit_weights(y, signal, noise)
    assert w["ngram"] < 0.05 * w["transformer"], w  # pure noise gets (almost) no weight
    w = fit_weights(y, signal, other)
    both = _log_loss(y, combine(w, signal, other))
    assert both < _log_loss(y, signal) and both < _log_loss(y, other)
    assert w["transformer"] > w["ngram"] > 0


# --------------------------------------------------------------------------------- NBSVM (binary)


def test_nbsvm_binary_features_save_and_load(tmp_path: Path, imdb_slice: dict[str, list[Example]]) -> None:
    train, test = imdb_slice["train"], imdb_slice["test"]
    settings = TfidfSettings(variant="nb", binary=True, ngram_max=3, c=1.0, token_pattern=r"(?u)\b\w+\b|[!?]")
    model = TfidfClassifier.fit([e.text for e in train], [e.label for e in train], settings, seed=1)
    features = model.vectorizer.transform([e.text for e in test])
    assert set(np.unique(features.data)) == {1.0}  # presence, not TF-IDF weights
    assert "!" in model.vectorizer.vocabulary_  # the token pattern keeps punctuation
    model.save(tmp_path / "m")
    loaded = TfidfClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.proba_examples(test), model.proba_examples(test))
    accuracy = np.mean((model.proba_examples(test) > 0.5) == np.array([e.label for e in test]))
    assert accuracy > 0.6  # 120 short reviews are enough to beat chance clearly


def test_config_checks() -> None:
    def check(*overrides: str) -> None:
        load_config(None, list(overrides))

    with pytest.raises(ConfigError, match="ensemble.ngram: .*tfidf"):
        check("ensemble.ngram=true", "method.name=tfidf")
    with pytest.raises(ConfigError, match="data.val_size is 0"):
        check("ensemble.ngram=true", "data.val_size=0")
    with pytest.raises(ConfigError, match="ensemble.ngram_data"):
        check("ensemble.ngram_data=everything")
    with pytest.raises(ConfigError, match="method.tfidf.token_pattern: not a valid regular expression"):
        check("method.tfidf.token_pattern=(unclosed")


# ------------------------------------------------------------------------------ an ensemble run, end to end


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory, imdb_slice_archive: Path) -> Path:
    """A partial fine-tune of the packaged MiniLM (top block) with an NBSVM half, through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "ensemble"
    sets = ["method.freeze_layers=5", "ensemble.ngram_data=train", "train.baseline=false",
            *NBSVM]
    code, out, err = run_cli(["train", "--model", "minilm", "--method", "partial", "--data", str(imdb_slice_archive),
                              "--train-size", "80", "--val-size", "30", "--eval-size", "40", "--max-length", "48",
                              "--truncation", "head+tail", "--epochs", "1", "--lr", "0.0005", "--out", str(run),
                              "--no-progress", "--ngram-ensemble",
                              *[x for s in sets for x in ("--set", s)]])
    assert code == 0, err
    assert "partial + n-gram" in out and "n-gram alone" in out
    return run


def _predictions(run: Path) -> dict[str, float]:
    with (run / "predictions.csv").open() as f:
        return {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}


def test_ensemble_run_scores_are_the_combination_of_its_members(ensemble_run: Path) -> None:
    """predictions.csv = combine(weights, the saved transformer alone, the saved n-gram model alone)."""
    from sentitune.data.batching import encode, encoding_args
    from sentitune.data.sources import load_splits
    from sentitune.evaluation import score
    from sentitune.models.saving import load_model
    from sentitune.runs import RunDir

    cfg = RunDir(ensemble_run).config()
    meta = json.loads((ensemble_run / "model" / "sentitune.json").read_text())
    weights = meta["ensemble"]["weights"]
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    assert metrics["ensemble"]["weights"] == weights and metrics["ensemble"]["ngram_train"] == 80
    test = load_splits(cfg.data, cfg.train.seed).test
    model, tokenizer = load_model(ensemble_run / "model")  # the transformer alone: load_model ignores the rest
    transformer, _ = score(model, encode(test, tokenizer, **encoding_args(cfg.data, False)), 16,
                           tokenizer.pad_token_id)
    ngram = TfidfClassifier.load(ensemble_run / "model" / NGRAM_FOLDER).proba_examples(test)
    expected = combine(weights, transformer, ngram)
    saved = _predictions(ensemble_run)
    np.testing.assert_allclose([saved[e.id] for e in test], expected, atol=2e-6)  # the CSV keeps 6 decimals
    members = metrics["ensemble"]["test"]
    labels = np.array([e.label for e in test])
    assert members["ngram"]["accuracy"] == pytest.approx(np.mean((ngram > 0.5) == labels))
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean((expected > 0.5) == labels))


def test_ensemble_predict_evaluate_and_export(ensemble_run: Path, tmp_path: Path) -> None:
    from sentitune.data.sources import load_splits
    from sentitune.inference import Predictor, evaluate_run
    from sentitune.runs import RunDir

    cfg = RunDir(ensemble_run).config()
    test = load_splits(cfg.data, cfg.train.seed).test
    saved = _predictions(ensemble_run)
    got = Predictor(ensemble_run).predict([e.text for e in test[:12]])
    np.testing.assert_allclose([p.prob_positive for p in got], [saved[e.id] for e in test[:12]], atol=2e-6)
    result = evaluate_run(ensemble_run, baseline=False)
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    assert result["model"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert result["transformer"]["accuracy"] == pytest.approx(metrics["ensemble"]["test"]["transformer"]["accuracy"])
    card = (ensemble_run / "model" / "README.md").read_text()
    assert "**ensemble**" in card and f"{NGRAM_FOLDER}/" in card
    code, _, err = run_cli(["export", str(ensemble_run), "--out", str(tmp_path / "x")])
    assert_one_line_error(code, err, ["ensemble", "n-gram"])
    assert not (tmp_path / "x").exists()


# Runs in a Python where torch, transformers and sentitune cannot be imported: the export's scorer alone.
WITHOUT_SENTITUNE = ("import runpy, sys\n"
                     "for name in ('torch', 'transformers', 'sentitune'):\n"
                     "    sys.modules[name] = None\n"
                     "sys.argv = ['sentitune_scorer.py', sys.argv[1]]\n"
                     "runpy.run_path(sys.argv[1] + '/sentitune_scorer.py', run_name='__main__')\n")


def test_an_ensemble_exports_to_onnx_and_scores_without_torch_or_sentitune(
        ensemble_run: Path, tmp_path: Path, imdb_full: dict[str, list]) -> None:
    """The head+tail MiniLM + NBSVM run exported with --format onnx: its folder's sentitune_scorer.py, in a process
    that cannot import torch or sentitune, gives predict's probabilities on real raw test reviews (long ones cut
    head+tail, <br /> tags and all)."""
    import subprocess
    import sys

    from sentitune.inference import Predictor

    out = tmp_path / "onnx"
    code, stdout, err = run_cli(["export", str(ensemble_run), "--format", "onnx", "--out", str(out)])
    assert code == 0, err
    record = json.loads((out / "sentitune.json").read_text())
    meta = json.loads((ensemble_run / "model" / "sentitune.json").read_text())
    assert record["ensemble"]["weights"] == meta["ensemble"]["weights"] and (out / "ngram" / "tfidf.npz").is_file()
    assert record["scorer"] == "sentitune_scorer.py" and record["check"]["scorer_max_probability_difference"] <= 1e-5
    card = (out / "README.md").read_text()
    assert "first quarter of its token budget and its last tokens" in card and "python sentitune_scorer.py" in card
    reviews = [e.text for e in imdb_full["test"][::500]]  # 50 raw reviews, both classes, most cut at 48 tokens
    assert any("<br />" in r for r in reviews)
    done = subprocess.run([sys.executable, "-c", WITHOUT_SENTITUNE, str(out)], input="\n".join(reviews),
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    expected = Predictor(ensemble_run).predict(reviews)
    assert [g["label"] for g in got] == [p.label for p in expected]
    np.testing.assert_allclose([g["probs"]["positive"] for g in got], [p.prob_positive for p in expected], atol=1e-5)


def test_ensemble_model_folder_without_its_ngram_half_is_refused(ensemble_run: Path, tmp_path: Path) -> None:
    import shutil

    from sentitune.inference import Predictor

    copy = tmp_path / "model"
    shutil.copytree(ensemble_run / "model", copy)
    shutil.rmtree(copy / NGRAM_FOLDER)
    with pytest.raises(RunError, match=f"{NGRAM_FOLDER}: missing"):
        Predictor(copy)
