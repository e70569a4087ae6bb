"""Data from a config to splits and token batches (sentitune.data: sources, text, batching, splits): cleaning, token
truncation, a table source through load_splits, seeded stratified splits, empty reviews, one class refused and
sizes larger than the data reported; on real IMDb files. The readers have their own files: tests/test_imdb.py,
tests/test_tabular.py, tests/test_targets.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_LORA as MODEL
from conftest import TINY_SETTINGS as T
from conftest import assert_one_line_error, run_cli, write_archive

from sentitune.config import DataConfig
from sentitune.data.batching import encode
from sentitune.data.records import Example
from sentitune.data.sources import TABLE_TEST_FRACTION, load_splits
from sentitune.data.splits import sample, split_off
from sentitune.data.text import clean_text, truncate_ids
from sentitune.errors import DataError
from sentitune.models.registry import load_tokenizer, resolve

# ------------------------------------------------------------------------------- cleaning and truncation


def test_clean_text_turns_br_tags_into_spaces() -> None:
    assert clean_text("Great.<br /><br />Really great.") == "Great. Really great."
    assert clean_text("a<br/>b<BR>c<br  />d") == "a b c d"
    assert clean_text("  no tags  ") == "no tags"


def test_real_reviews_lose_their_br_tags(imdb_slice_archive: Path, imdb_slice: dict[str, list[Example]]) -> None:
    raw = [e for e in imdb_slice["train"] + imdb_slice["test"] if "<br />" in e.text]
    assert raw, "the slice should contain reviews with <br /> tags"
    cleaned = load_splits(DataConfig(path=str(imdb_slice_archive), val_size=0), seed=0)
    by_id = {e.id: e for e in cleaned.train + cleaned.test}
    for e in raw:
        assert "<br" not in by_id[e.id].text
        assert by_id[e.id].text == clean_text(e.text)
    kept = load_splits(DataConfig(path=str(imdb_slice_archive), val_size=0, clean_html=False), seed=0)
    originals = imdb_slice["train"] + imdb_slice["test"]
    assert {e.id: e.text for e in kept.train + kept.test} == {e.id: e.text for e in originals}


def test_truncate_ids_sides() -> None:
    ids = list(range(20))
    assert truncate_ids(ids, 8, "head") == list(range(8))
    assert truncate_ids(ids, 8, "tail") == list(range(12, 20))
    assert truncate_ids(ids, 8, "head+tail") == [0, 1] + list(range(14, 20))  # a quarter from the head
    assert truncate_ids(ids, 8, "head+tail", head_tokens=5) == [0, 1, 2, 3, 4, 17, 18, 19]
    assert truncate_ids(ids, 30, "tail") == ids
    assert truncate_ids(ids, 0, "head") == []
    with pytest.raises(ValueError, match="middle"):
        truncate_ids(ids, 8, "middle")


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    return load_tokenizer(resolve("minilm").source)


@pytest.mark.parametrize(("side", "head_tokens"), [("head", None), ("tail", None), ("head+tail", None),
                                                  ("head+tail", 10)])
def test_token_truncation_keeps_special_tokens(
    minilm_tokenizer: Any, imdb_full: dict[str, list[Example]], side: str, head_tokens: int | None
) -> None:
    tok = minilm_tokenizer
    long_reviews = [e for e in imdb_full["test"][:200] if len(e.text) > 2000][:3]
    enc = encode(long_reviews, tok, max_length=32, side=side, head_tokens=head_tokens)
    for e, ids in zip(long_reviews, enc.input_ids, strict=True):
        body = tok(e.text, add_special_tokens=False)["input_ids"]
        assert len(body) > 100
        assert len(ids) == 32
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert ids[1:-1] == truncate_ids(body, 30, side, head_tokens)
    assert enc.ids == [e.id for e in long_reviews] and enc.labels == [e.label for e in long_reviews]


def test_short_review_is_not_padded_or_cut(minilm_tokenizer: Any) -> None:
    enc = encode([Example("x", "A fine film.", 1)], minilm_tokenizer, max_length=64, side="tail")
    assert enc.input_ids[0] == minilm_tokenizer("A fine film.")["input_ids"]


def test_gpt2_tokenizer_truncates_without_special_tokens() -> None:
    tok = load_tokenizer(resolve("gpt2-tiny-random").source)
    text = " ".join(f"word{i}" for i in range(100))
    body = tok(text)["input_ids"]
    enc = encode([Example("x", text, 0)], tok, max_length=16, side="tail")
    assert enc.input_ids[0] == body[-16:]


def test_12_head_tokens_must_leave_room_for_the_tail_after_special_tokens(imdb_slice_archive: Path,
                                                                           tmp_path: Path) -> None:
    """MiniLM adds [CLS] and [SEP]: of 64 tokens a review gets 62, so head_tokens 62 leaves no tail."""
    code, _, err = run_cli(["train", "--model", "minilm", "--method", "probe", "--data", str(imdb_slice_archive), *T,
                            "--truncation", "head+tail", "--set", "data.head_tokens=62", "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, ["data.head_tokens: 62 leaves no tokens for the tail", "at most 61"])
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------- a table as the source


def test_csv_source_through_load_splits(tmp_path: Path, imdb_slice: dict[str, list[Example]]) -> None:
    """A CSV pair of files goes through the same cleaning/splitting as IMDb; one file gets a held-out test."""
    import csv

    def write(path: Path, examples: list[Example]) -> Path:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "review", "stars"])
            w.writerows([e.id, e.text, "pos" if e.label else "neg"] for e in examples)
        return path

    train = write(tmp_path / "train.csv", imdb_slice["train"])
    test = write(tmp_path / "test.csv", imdb_slice["test"])
    cfg = DataConfig(source=str(train), test_path=str(test), text_column="review", label_column="stars",
                     id_column="id", val_size=10)
    splits = load_splits(cfg, seed=3)
    assert {e.id for e in splits.test} == {e.id for e in imdb_slice["test"]}
    assert {e.id for e in splits.train + splits.validation} == {e.id for e in imdb_slice["train"]}
    assert not any("<br" in e.text for e in splits.train + splits.validation + splits.test)

    single = load_splits(DataConfig(source=str(train), text_column="review", label_column="stars", id_column="id",
                                    val_size=10), seed=3)
    n = len(imdb_slice["train"])
    assert len(single.test) == round(TABLE_TEST_FRACTION * n)
    assert Counter(e.label for e in single.test) == {0: len(single.test) // 2, 1: len(single.test) // 2}
    assert len(single.train) + len(single.validation) + len(single.test) == n
    assert not {e.id for e in single.test} & {e.id for e in single.train + single.validation}


# ------------------------------------------------------------------------------- splits


def test_validation_comes_from_train_never_test(imdb_slice_archive: Path, imdb_slice: dict[str, list[Example]]) -> None:
    splits = load_splits(DataConfig(path=str(imdb_slice_archive), val_size=20), seed=42)
    train_ids = {e.id for e in imdb_slice["train"]}
    assert len(splits.validation) == 20 and len(splits.train) == len(train_ids) - 20
    assert all(e.id.startswith("train/") for e in splits.validation + splits.train)
    assert {e.id for e in splits.validation} <= train_ids
    assert not {e.id for e in splits.validation} & {e.id for e in splits.train}
    assert {e.id for e in splits.test} == {e.id for e in imdb_slice["test"]}  # test untouched
    assert Counter(e.label for e in splits.validation) == {0: 10, 1: 10}
    fraction = load_splits(DataConfig(path=str(imdb_slice_archive), val_size=0.25), seed=42)
    assert len(fraction.validation) == round(0.25 * len(train_ids))


def test_same_seed_same_split_other_seed_other_split(imdb_slice_archive: Path) -> None:
    cfg = DataConfig(path=str(imdb_slice_archive), val_size=20, train_size=40, eval_size=20)
    a, b, c = load_splits(cfg, seed=1), load_splits(cfg, seed=1), load_splits(cfg, seed=2)
    assert a == b
    for name in ("train", "validation", "test"):
        assert {e.id for e in getattr(a, name)} != {e.id for e in getattr(c, name)}, name


def test_subsampling_is_stratified_and_sized(imdb_slice_archive: Path) -> None:
    cfg = DataConfig(path=str(imdb_slice_archive), val_size=20, train_size=40, eval_size=20)
    splits = load_splits(cfg, seed=5)
    assert splits.summary() == {
        "train": {"n": 40, "label_0": 20, "label_1": 20},
        "validation": {"n": 20, "label_0": 10, "label_1": 10},
        "test": {"n": 20, "label_0": 10, "label_1": 10},
    }
    # The validation set is carved before subsampling, so it does not move when train_size changes.
    bigger = load_splits(DataConfig(path=str(imdb_slice_archive), val_size=20, train_size=80), seed=5)
    assert bigger.validation == splits.validation
    everything = load_splits(DataConfig(path=str(imdb_slice_archive), val_size=20, train_size=10_000), seed=5)
    assert len(everything.train) == 100


def test_split_edge_cases() -> None:
    examples = [Example(str(i), "t", i % 2) for i in range(10)]
    assert split_off(examples, 0, 0) == (examples, [])
    assert split_off(examples, 10, 0) == ([], examples)
    rest, one = split_off(examples, 1, 0)  # too small to stratify over two classes: still works
    assert len(one) == 1 and len(rest) == 9
    rest, nine = split_off(examples, 9, 0)
    assert len(nine) == 9 and len(rest) == 1
    assert sample(examples, None, 0) == examples
    assert Counter(e.label for e in sample(examples, 4, 0)) == {0: 2, 1: 2}


def test_empty_reviews_error_or_counted_skip(tmp_path: Path, imdb_slice: dict[str, list[Example]]) -> None:
    archive = write_archive(tmp_path / "e.tar.gz", imdb_slice, extra={"aclImdb/train/pos/99999_8.txt": b"<br /> "})
    with pytest.raises(DataError, match=r"train/pos/99999_8: empty or whitespace-only review"):
        load_splits(DataConfig(path=str(archive)), seed=0)
    splits = load_splits(DataConfig(path=str(archive), empty="skip", val_size=0), seed=0)
    assert splits.skipped == {"empty": 1}
    assert len(splits.train) == len(imdb_slice["train"])


# --------------------------------------------------------------------------- one class


def _rows(n: int, labels: list[int]) -> list[dict[str, object]]:
    return [{"text": f"Review {i}: a {'fine' if labels[i % len(labels)] else 'dull'} film.",
             "label": labels[i % len(labels)]} for i in range(n)]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text("text,label\n" + "".join(f"\"{r['text']}\",{r['label']}\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["train-csv-one-class", "train-jsonl-one-class", "test-file-one-class"])
def test_one_class_is_refused(case: str, tmp_path: Path) -> None:
    """Before: trained, and reported accuracy 1.0 with ROC AUC nan."""
    extra: list[str] = []
    if case == "train-csv-one-class":
        source = _write(tmp_path / "reviews.csv", _rows(20, [1]))
        expect = [f"{source}: ", "one class", "label 1", "20 examples"]
    elif case == "train-jsonl-one-class":
        source = _write(tmp_path / "reviews.jsonl", _rows(20, [0]))
        expect = [f"{source}: ", "one class", "label 0", "20 examples"]
    else:
        source = _write(tmp_path / "train.csv", _rows(20, [0, 1]))
        test = _write(tmp_path / "test.csv", _rows(10, [1]))
        extra = ["--set", f"data.test_path={test}"]
        expect = [f"{test}: ", "one class", "label 1", "ROC AUC is undefined"]
    code, _, err = run_cli(["train", *MODEL, "--source", str(source), "--out", str(tmp_path / "run"),
                            "--epochs", "1", "--val-size", "0", "--set", "train.baseline=false", *extra])
    assert_one_line_error(code, err, expect)


# --------------------------------------------------------------------------- sizes larger than the data


@pytest.mark.parametrize("case", ["train-size-too-large", "eval-size-too-large", "sizes-fit"])
def test_sizes_larger_than_the_data_are_reported(case: str, tmp_path: Path) -> None:
    """Before: --train-size 5000 on 40 rows silently trained on 29 (and said nothing in metrics.json)."""
    source = _write(tmp_path / "reviews.csv", _rows(40, [0, 1]))  # 32 train (3 validation), 8 held-out test
    sizes = {"train-size-too-large": ["--train-size", "5000"], "eval-size-too-large": ["--eval-size", "5000"],
             "sizes-fit": ["--train-size", "20", "--eval-size", "8"]}[case]
    code, out, err = run_cli(["train", *MODEL, "--source", str(source), "--out", str(tmp_path / "run"),
                              "--epochs", "1", "--set", "train.baseline=false", *sizes])
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    want = {
        "train-size-too-large": ["data.train_size=5000 but only 29 training examples after the validation "
                                 "carve-out; using 29"],
        "eval-size-too-large": ["data.eval_size=5000 but only 8 test examples; using 8"],
        "sizes-fit": [],
    }[case]
    small = [w for w in metrics["data"]["warnings"] if w.startswith("validation has 3 reviews")]
    assert len(small) == 1  # 3 validation reviews are named as too few to choose on (tests/test_small_data.py)
    assert [w for w in metrics["data"]["warnings"] if w not in small] == want
    printed = [line for line in out.splitlines() if line.startswith("warning: ") and line[9:] not in small
               and "optimizer steps" not in line]  # the data's warnings; a 2-step phase is warned about too
    assert printed == [f"warning: {w}" for w in want]
    assert metrics["data"]["train"]["n"] == (20 if case == "sizes-fit" else 29)
