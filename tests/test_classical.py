"""The TF-IDF reference (sentitune.classical): a run directory like any, saved without pickles, predicted back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from sentitune.classical import ARRAYS_FILE, TfidfClassifier
from sentitune.config import TfidfSettings
from sentitune.errors import RunError
from sentitune.inference import Predictor


def tfidf_args(archive: Path, out: Path, variant: str) -> list[str]:
    return ["train", "--method", "tfidf", "--data", str(archive), "--val-size", "20", "--eval-size", "60",
            "--set", f"method.tfidf.variant={variant}", "--set", "method.tfidf.min_df=1", "--out", str(out),
            "--no-progress"]


@pytest.fixture(scope="module", params=["lr", "nb"])
def tfidf_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              imdb_slice_archive: Path) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("tfidf") / request.param
    code, out, err = run_cli(tfidf_args(imdb_slice_archive, run, request.param))
    assert code == 0, err
    return run, out


def test_a_tfidf_run_is_a_run_directory(tfidf_run: tuple[Path, str]) -> None:
    run, out = tfidf_run
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"config.yaml", "log.jsonl", "metrics.json", "predictions.csv", "model/tfidf.json",
            "model/tfidf.npz"} <= files
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "tfidf" and metrics["test"]["n"] == 60 and len(metrics["validation"]) == 1
    assert metrics["test"]["roc_auc"] > 0.6  # short real reviews, 100 to train on: better than chance
    assert f"{metrics['test']['accuracy']:.4f}" in out and "n-grams" in out
    with (run / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    correct = sum(int(r["pred"]) == int(r["label"]) for r in rows)
    assert correct / len(rows) == pytest.approx(metrics["test"]["accuracy"])


def test_predict_and_evaluate_reproduce_the_run(tfidf_run: tuple[Path, str], imdb_slice: dict) -> None:
    run, _ = tfidf_run
    with (run / "predictions.csv").open(newline="") as f:
        saved = {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}
    text = {e.id: e.text for e in imdb_slice["test"]}
    ids = sorted(saved)[:10]
    got = Predictor(run).predict([text[i] for i in ids])
    assert [p.prob_positive for p in got] == pytest.approx([saved[i] for i in ids], abs=2e-6)
    code, out, err = run_cli(["evaluate", str(run), "--no-progress"])
    assert code == 0, err
    again = json.loads((run / "eval-test.json").read_text())["model"]
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    assert again["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-9)


def test_the_saved_model_holds_arrays_only(tfidf_run: tuple[Path, str], tmp_path: Path) -> None:
    """An object array (a pickle inside the .npz) is refused, not unpickled."""
    run, _ = tfidf_run
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tfidf.json").write_text((run / "model" / "tfidf.json").read_text())
    np.savez(folder / ARRAYS_FILE, idf=np.array([{"not": "an array"}], dtype=object), coef=np.zeros((1, 1)),
             intercept=np.zeros(1))
    with pytest.raises(RunError, match="not a readable tfidf model"):
        TfidfClassifier.load(folder)


def test_nb_ratios_favour_the_words_of_their_class() -> None:
    texts = ["great film, great cast", "a great and moving story", "dull film, dull plot", "a dull and empty story"]
    model = TfidfClassifier.fit(texts, [1, 1, 0, 0], TfidfSettings(variant="nb", min_df=1, ngram_max=1), seed=0)
    vocabulary = model.vectorizer.vocabulary_
    assert model.ratios is not None
    assert model.ratios[vocabulary["great"]] > 0 > model.ratios[vocabulary["dull"]]
    assert abs(model.ratios[vocabulary["story"]]) < model.ratios[vocabulary["great"]]
    probs = model.positive_proba(["great", "dull"])
    assert probs[0] > 0.5 > probs[1]


def test_bad_tfidf_settings_are_one_line(imdb_slice_archive: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(tfidf_args(imdb_slice_archive, tmp_path / "run", "svm"))
    assert code == 2 and "method.tfidf.variant" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
