"""The TF-IDF reference (sentitune.classical): a run directory like any, saved without pickles, predicted back;
for two classes on IMDb and for three on real restaurant sentences with their aspects."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import THREE_CLASSES, assert_one_line_error, restaurant_config, run_cli, tfidf_argv, write_csv

from sentitune.classical import ARRAYS_FILE, TfidfClassifier
from sentitune.config import TfidfSettings
from sentitune.errors import DataError, RunError
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


# ------------------------------------------------------------------- three classes, target-dependent


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module", params=["lr", "nb"])
def target_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               restaurants: tuple[Path, Path]) -> Path:
    """TF-IDF on 400 real restaurant sentences with their aspects, three classes, 200 to test."""
    folder = tmp_path_factory.mktemp("tfidf3")
    run = folder / request.param
    config = restaurant_config(folder, restaurants)
    code, _, err = run_cli(["train", "--config", str(config), "--method", "tfidf", "--train-size", "400",
                            "--eval-size", "200", "--set", f"method.tfidf.variant={request.param}", "--out", str(run),
                            "--no-progress"])
    assert code == 0, err
    return run


def test_a_three_class_target_run_scores_its_predictions(target_run: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    header, rows = read_csv(target_run / "predictions.csv")
    assert header == ["id", "target", "label", *(f"prob_{n}" for n in THREE_CLASSES), "pred", "words"]
    probs = np.array([[float(r[f"prob_{n}"]) for n in THREE_CLASSES] for r in rows])
    y, pred = [int(r["label"]) for r in rows], [int(r["pred"]) for r in rows]
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and pred == probs.argmax(axis=1).tolist()
    test = json.loads((target_run / "metrics.json").read_text())["test"]
    assert test["labels"] == THREE_CLASSES and test["n"] == len(rows) == 200
    assert test["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert test["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert test["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-4)
    assert test["roc_auc"] > 0.6  # real sentences: better than chance
    assert all(r["target"] for r in rows)


def test_a_saved_target_model_predicts_and_evaluates_the_same(target_run: Path,
                                                              restaurants: tuple[Path, Path]) -> None:
    from sentitune.config import load_config
    from sentitune.data.sources import load_splits

    cfg = load_config(target_run / "config.yaml")
    test = {e.id: e for e in load_splits(cfg.data, cfg.train.seed).test}
    _, rows = read_csv(target_run / "predictions.csv")
    model = TfidfClassifier.load(target_run / "model")
    again = model.proba_examples([test[r["id"]] for r in rows])
    assert model.labels == THREE_CLASSES and again.shape == (len(rows), 3)
    saved = np.array([[float(r[f"prob_{n}"]) for n in THREE_CLASSES] for r in rows])
    assert again == pytest.approx(saved, abs=2e-6)
    some = [test[r["id"]] for r in rows[:10]]
    predicted = Predictor(target_run).predict([e.text for e in some], targets=[e.target or "" for e in some])
    assert [list(p.probs.values()) for p in predicted] == pytest.approx(saved[:10], abs=2e-6)
    assert [p.label for p in predicted] == [THREE_CLASSES[int(r["pred"])] for r in rows[:10]]
    code, _, err = run_cli(["evaluate", str(target_run), "--no-progress"])
    assert code == 0, err
    evaluated = json.loads((target_run / "eval-test.json").read_text())["model"]
    metrics = json.loads((target_run / "metrics.json").read_text())["test"]
    assert evaluated["confusion_matrix"] == metrics["confusion_matrix"] and evaluated["labels"] == THREE_CLASSES
    assert evaluated["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-9)
    assert read_csv(target_run / "predictions-test.csv")[0] == read_csv(target_run / "predictions.csv")[0]
    with pytest.raises(DataError, match="trained with targets"):
        model.proba(["The food was great."])


@pytest.fixture(scope="module")
def restaurant_sample(restaurants: tuple[Path, Path]) -> list:
    from sentitune.config import load_config
    from sentitune.data.sources import load_splits

    cfg = load_config(None, [f"data.source={restaurants[0]}", f"data.test_path={restaurants[1]}",
                             f"data.labels={json.dumps(THREE_CLASSES)}", "data.train_size=300", "data.val_size=0"])
    splits = load_splits(cfg.data, 0)
    return splits.train + splits.test


def test_lr_is_scikit_learns_multinomial_regression_on_text_and_target_context(restaurant_sample: list) -> None:
    """The saved-array arithmetic gives what scikit-learn's own pipeline gives on the same features."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from sentitune.classical import target_contexts

    train, test = restaurant_sample[:300], restaurant_sample[300:400]
    settings = TfidfSettings(min_df=1, c=2.0, target_window=2)
    model = TfidfClassifier.fit([e.text for e in train], [e.label for e in train], settings, 0, THREE_CLASSES,
                                [e.target for e in train], [e.span for e in train])
    ours = model.proba_examples(test)

    def vectorizer() -> TfidfVectorizer:
        return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, strip_accents="unicode",
                               dtype=np.float32)

    text, context = vectorizer(), vectorizer()

    def contexts(examples: list) -> list[str]:
        return target_contexts([e.text for e in examples], [e.target for e in examples], [e.span for e in examples], 2)

    x = sparse.hstack([text.fit_transform([e.text for e in train]), context.fit_transform(contexts(train))]).tocsr()
    reference = LogisticRegression(C=2.0, max_iter=2000, random_state=0).fit(x, [e.label for e in train])
    x_test = sparse.hstack([text.transform([e.text for e in test]), context.transform(contexts(test))]).tocsr()
    assert ours == pytest.approx(reference.predict_proba(x_test), abs=1e-5)


def test_a_target_context_is_the_target_and_its_neighbours() -> None:
    from sentitune.classical import target_contexts

    text = "The service was slow but the service at the bar was quick ."
    second = text.index("service", 10)
    assert target_contexts([text], ["service"], None, 2) == ["The service was slow"]  # no span: first occurrence
    assert target_contexts([text], ["service"], [(second, second + 7)], 2) == ["but the service at the"]
    assert target_contexts([text, text], ["SERVICE", "pizza"], [None, None], 0) == ["service", "pizza"]


def test_target_context_tells_two_targets_of_one_sentence_apart(restaurant_sample: list) -> None:
    """Sentences with several aspects: without target features every aspect gets the sentence's answer; with
    them, each aspect whose context has known n-grams gets its own."""
    from collections import defaultdict

    from sentitune.classical import target_contexts

    train, rest = restaurant_sample[:300], restaurant_sample[300:]
    by_text = defaultdict(list)
    for e in rest:
        by_text[e.text].append(e)
    groups = [exs for exs in by_text.values() if len({e.target for e in exs}) > 1]
    assert groups, "the restaurant test set has sentences with several aspects"
    settings = TfidfSettings(min_df=1)
    with_targets = TfidfClassifier.fit([e.text for e in train], [e.label for e in train], settings, 0, THREE_CLASSES,
                                       [e.target for e in train], [e.span for e in train])
    plain = TfidfClassifier.fit([e.text for e in train], [e.label for e in train], settings, 0, THREE_CLASSES)
    told_apart = 0
    for exs in groups:
        assert np.ptp(plain.proba([e.text for e in exs]), axis=0).max() == 0
        contexts = target_contexts([e.text for e in exs], [e.target for e in exs], [e.span for e in exs], 3)
        seen = with_targets.target_vectorizer.transform(contexts).toarray()
        differ = np.ptp(with_targets.proba_examples(exs), axis=0).max() > 1e-9
        assert differ == (np.ptp(seen, axis=0).max() > 0), [e.target for e in exs]
        told_apart += differ
    assert told_apart > len(groups) / 2


def test_nb_with_three_classes_is_one_vs_rest() -> None:
    texts = ["great food, great staff", "a great and lovely place", "awful food, awful staff",
             "an awful and dirty place", "the food was food", "a place with staff"]
    model = TfidfClassifier.fit(texts, [2, 2, 0, 0, 1, 1], TfidfSettings(variant="nb", min_df=1, ngram_max=1), 0,
                                THREE_CLASSES)
    vocabulary = model.vectorizer.vocabulary_
    assert model.ratios is not None and model.ratios.shape == (3, len(vocabulary))
    assert model.ratios[2, vocabulary["great"]] > 0 > model.ratios[0, vocabulary["great"]]
    assert model.ratios[0, vocabulary["awful"]] > 0 > model.ratios[2, vocabulary["awful"]]
    probs = model.proba(["great", "awful"])
    assert probs.shape == (2, 3) and probs.sum(axis=1) == pytest.approx([1, 1])
    assert probs.argmax(axis=1).tolist() == [2, 0]
    assert model.num_parameters == 3 * (len(vocabulary) + 1)


def test_a_model_saved_before_labels_loads_as_binary(tfidf_run: tuple[Path, str], tmp_path: Path) -> None:
    """tfidf.json without labels (a run from before N classes): read as negative/positive, same scores."""
    run, _ = tfidf_run
    folder = tmp_path / "model"
    shutil.copytree(run / "model", folder)
    saved = json.loads((folder / "tfidf.json").read_text())
    saved.pop("labels")
    (folder / "tfidf.json").write_text(json.dumps(saved))
    old, new = TfidfClassifier.load(folder), TfidfClassifier.load(run / "model")
    texts = ["a fine film", "a dull film"]
    assert old.labels == ["negative", "positive"] and old.proba(texts).tolist() == new.proba(texts).tolist()


def test_4_tfidf_on_texts_without_ngrams_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "ab.csv", ["text", "label"], [["a" if i % 2 else "b", i % 2] for i in range(40)])
    run = tmp_path / "run"
    code, _, err = run_cli(tfidf_argv(source, run, ["negative", "positive"]))
    assert_one_line_error(code, err, ["tfidf", "no n-gram", "token_pattern"])
    assert not run.exists()
