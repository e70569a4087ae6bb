"""Hugging Face datasets as sources (data/hf_datasets.py), built locally from real IMDb reviews (no hub): a
`save_to_disk` folder shaped like GLUE's sst2 (column `sentence`, a test split whose labels are hidden), a
hub-style dataset folder with a named config (`hf:FOLDER:CONFIG`) of four star-rating classes in Parquet, and
single Parquet files; through `train` and `bench` as a user runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from conftest import LEARNS_NOTHING_OK, assert_one_line_error, run_cli, take, write_bench

from sentitune.config import BINARY_LABELS
from sentitune.data.records import Example
from sentitune.data.sources import load_experiment, load_splits
from sentitune.data.text import clean_text
from sentitune.errors import DataError

STARS = ["1-2 stars", "3-4 stars", "7-8 stars", "9-10 stars"]  # IMDb's ratings, as a 4-class ClassLabel
TINY = ["--model", "gpt2-tiny-random", "--method", "full", "--max-length", "32", "--epochs", "1",
        "--set", "train.baseline=false", "--set", LEARNS_NOTHING_OK, "--no-progress"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub, and the datasets cache in this test's folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def sst2_like(examples: list[Example], hidden: bool = False) -> Any:
    """GLUE sst2's columns: sentence, label (ClassLabel negative/positive; -1 where hidden), idx."""
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})
    return datasets.Dataset.from_dict({"sentence": [e.text for e in examples],
                                       "label": [-1 if hidden else e.label for e in examples],
                                       "idx": list(range(len(examples)))}, features=features)


def stars(examples: list[Example]) -> Any:
    """Four classes from IMDb's star ratings, as a ClassLabel: yelp_review_full's shape."""
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=STARS)})
    label = {1: 0, 2: 0, 3: 1, 4: 1, 7: 2, 8: 2, 9: 3, 10: 3}
    return datasets.Dataset.from_dict({"text": [e.text for e in examples],
                                       "label": [label[e.rating] for e in examples]}, features=features)


@pytest.fixture(scope="module")
def reviews(imdb_full: dict[str, list[Example]]) -> dict[str, list[Example]]:
    return {"train": take(imdb_full["train"], 40, shortest=True), "validation": take(imdb_full["train"][::-1], 10,
                                                                                      shortest=True),
            "test": take(imdb_full["test"], 12, shortest=True)}


@pytest.fixture()
def saved(tmp_path: Path, reviews: dict[str, list[Example]]) -> Path:
    """A save_to_disk folder like sst2: train, validation, and a test split with hidden labels."""
    folder = tmp_path / "sst2-like"
    datasets.DatasetDict({"train": sst2_like(reviews["train"]), "validation": sst2_like(reviews["validation"]),
                          "test": sst2_like(reviews["test"], hidden=True)}).save_to_disk(str(folder))
    return folder


@pytest.fixture()
def hub_folder(tmp_path: Path, imdb_full: dict[str, list[Example]]) -> Path:
    """A dataset folder laid out as on the hub: README.md's `configs:` naming a `stars` config of Parquet files."""
    folder = tmp_path / "imdb-stars"
    (folder / "stars").mkdir(parents=True)
    by_rating = lambda split, n: [e for r in (1, 3, 4, 7, 8, 10) for e in  # noqa: E731
                                  sorted((e for e in imdb_full[split] if e.rating == r), key=lambda e: len(e.text))[:n]]
    stars(by_rating("train", 12)).to_parquet(str(folder / "stars" / "train.parquet"))
    stars(by_rating("test", 4)).to_parquet(str(folder / "stars" / "test.parquet"))
    card = {"configs": [{"config_name": "stars", "data_files": [{"split": "train", "path": "stars/train.parquet"},
                                                                {"split": "test", "path": "stars/test.parquet"}]}]}
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n# IMDb by stars\n", encoding="utf-8")
    return folder


def test_an_sst2_like_folder_scores_on_validation_when_test_labels_are_hidden(saved: Path,
                                                                             reviews: dict[str, list]) -> None:
    cfg = load_experiment(None, [f"data.source={saved}", "data.text_column=sentence", "data.val_size=8"])
    assert cfg.data.labels == BINARY_LABELS  # from the ClassLabel
    splits = load_splits(cfg.data, seed=1)
    assert [e.text for e in splits.test] == [clean_text(e.text) for e in reviews["validation"]]
    assert len(splits.validation) == 8 and len(splits.train) == len(reviews["train"]) - 8
    assert {e.text for e in splits.train + splits.validation} == {clean_text(e.text) for e in reviews["train"]}
    assert any("'test' split has no labels" in w for w in splits.warnings)
    # naming the hidden split as the test is an error that says why
    with pytest.raises(DataError, match="split 'test' .* has no labels in column 'label'"):
        load_splits(load_experiment(None, [f"data.source={saved}", "data.text_column=sentence",
                                       "data.test_split=test"]).data, seed=1)
    # a labelled test split and the dataset's own validation split
    cfg = load_experiment(None, [f"data.source={saved}", "data.text_column=sentence", "data.test_split=train",
                             "data.train_split=validation", "data.validation_split=null", "data.val_size=4"])
    splits = load_splits(cfg.data, seed=1)
    assert len(splits.test) == len(reviews["train"]) and len(splits.validation) == 4


def test_train_reads_a_save_to_disk_folder_and_records_class_names(saved: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--source", str(saved), "--text-column", "sentence", "--val-size", "8",
                              *TINY, "--out", str(run)])
    assert code == 0, err
    assert "test: the dataset's 'validation' split" in out + err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 20 and len(metrics["test"]["confusion_matrix"]) == 2
    saved_cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert saved_cfg["data"]["labels"] == BINARY_LABELS and saved_cfg["data"]["text_column"] == "sentence"
    code, out, err = run_cli(["predict", str(run), "A wonderful, moving film.", "--json"])
    assert code == 0, err
    assert set(json.loads(out)["probs"]) == set(BINARY_LABELS)


def test_a_hub_style_config_of_four_classes_runs_in_a_bench(hub_folder: Path, tmp_path: Path) -> None:
    source = f"hf:{hub_folder}:stars"
    cfg = load_experiment(None, [f"data.source={source}"])
    assert cfg.data.labels == STARS
    bench = write_bench(tmp_path / "bench", {
        "name": "stars", "set": [f"data.source={source}", "data.val_size=8", "data.max_length=32",
                                 "model.spec=gpt2-tiny-random", "train.epochs=1", "train.baseline=false",
                                 "method.tfidf.min_df=1", LEARNS_NOTHING_OK],
        "rows": [{"name": "tfidf", "set": ["method.name=tfidf"]}, {"name": "full", "set": ["method.name=full"]}]})
    out = tmp_path / "bench" / "out"
    code, stdout, err = run_cli(["bench", str(bench), "--out", str(out), "--no-progress"])
    assert code == 0, stdout + err
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for name in ("tfidf", "full"):
        test = json.loads((out / name / "metrics.json").read_text())["test"]
        assert test["labels"] == STARS and len(test["confusion_matrix"]) == 4 and test["n"] == 24, name
        assert rows[name]["accuracy"] == pytest.approx(test["accuracy"]), name


def test_parquet_files_and_a_test_path(hub_folder: Path) -> None:
    train, test = hub_folder / "stars" / "train.parquet", hub_folder / "stars" / "test.parquet"
    cfg = load_experiment(None, [f"data.source={train}", f"data.test_path={test}", "data.val_size=6"])
    assert cfg.data.labels == STARS  # the ClassLabel travels in the Parquet schema
    splits = load_splits(cfg.data, seed=2)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (66, 6, 24)
    alone = load_splits(load_experiment(None, [f"data.source={train}"]).data, seed=2)  # no test: 20% held out
    assert len(alone.test) == round(0.2 * 72) and any("test: held out of 'train'" in w for w in alone.warnings)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.text_column=review"], "split 'train' has no column 'review' (columns: sentence, label, idx); "
                                  "set data.text_column"),
    (["data.text_column=sentence", "data.train_split=training"], "no split 'training' (data.train_split); "
                                                                 "splits: train, validation, test"),
    (["data.text_column=sentence", "data.validation_split=dev"], "no split 'dev' (data.validation_split)"),
    (["data.text_column=sentence", "data.validation_split=train"], "is also the training split"),
    (["data.text_column=sentence", "data.labels=[bad,ok,good]"], "data.labels has 3 classes (bad, ok, good); the "
                                                                 "dataset's column 'label' has 2 (negative, positive)"),
])
def test_mapping_errors_are_one_line(saved: Path, overrides: list[str], message: str) -> None:
    args = ["train", "--source", str(saved), *TINY, "--out", str(saved.parent / "run")]
    for item in overrides:
        args += ["--set", item]
    code, _, err = run_cli(args)
    assert_one_line_error(code, err, [message])


def test_without_the_datasets_library_the_error_names_the_extra(saved: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # what an uninstalled module looks like to imports
    code, _, err = run_cli(["train", "--source", str(saved), *TINY, "--out", str(saved.parent / "run")])
    assert_one_line_error(code, err, ["needs datasets: pip install 'sentitune[hub]'"])


def test_an_unsupervised_split_feeds_self_training_as_unsup(tmp_path: Path, reviews: dict[str, list]) -> None:
    folder = tmp_path / "imdb-like"
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    split = lambda exs, hide=False: datasets.Dataset.from_dict(  # noqa: E731
        {"text": [e.text for e in exs], "label": [-1 if hide else e.label for e in exs]}, features=features)
    datasets.DatasetDict({"train": split(reviews["train"]), "test": split(reviews["test"]),
                          "unsupervised": split(reviews["validation"], hide=True)}).save_to_disk(str(folder))
    cfg = load_experiment(None, [f"data.source={folder}", "data.unlabeled=unsup", "self_train.teacher=smollm2-135m"])
    assert cfg.data.labels == BINARY_LABELS  # neg/pos are sentitune's negative/positive
    splits = load_splits(cfg.data, seed=1)
    assert [e.text for e in splits.unlabeled] == [clean_text(e.text) for e in reviews["validation"]]
    assert {e.label for e in splits.unlabeled} == {-1}
