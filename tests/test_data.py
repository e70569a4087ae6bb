"""Data reading (archive, folder, CSV/TSV/JSONL), cleaning, token truncation and splits, on real IMDb files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import take, write_archive, write_folder

from sentitune.config import DataConfig
from sentitune.data.batching import encode
from sentitune.data.imdb import read_archive, read_imdb
from sentitune.data.records import Example
from sentitune.data.sources import TABLE_TEST_FRACTION, load_splits
from sentitune.data.splits import sample, split_off
from sentitune.data.tabular import read_table
from sentitune.data.text import clean_text, truncate_ids
from sentitune.errors import DataError
from sentitune.models.registry import load_tokenizer, resolve

# Members of the official Stanford archive that are not labelled reviews.
OFFICIAL_EXTRAS = {
    "aclImdb/README": b"Large Movie Review Dataset v1.0\n",
    "aclImdb/imdb.vocab": b"the\nand\na\n",
    "aclImdb/imdbEr.txt": b"0.0490972013402\n",
    "aclImdb/train/labeledBow.feat": b"9 0:9 1:1 2:4\n",
    "aclImdb/train/unsupBow.feat": b"0 0:8 1:6\n",
    "aclImdb/train/urls_unsup.txt": b"http://www.imdb.com/title/tt0018515/usercomments\n",
    "aclImdb/train/urls_pos.txt": b"http://www.imdb.com/title/tt0453418/usercomments\n",
    "aclImdb/train/unsup/0_0.txt": b"An unlabelled review that must never reach training.",
    "aclImdb/train/unsup/12_0.txt": b"Another unlabelled review.",
    "aclImdb/test/labeledBow.feat": b"10 0:7 1:2\n",
    "aclImdb/test/urls_neg.txt": b"http://www.imdb.com/title/tt0064354/usercomments\n",
}


def as_set(splits: dict[str, list[Example]]) -> dict[str, set[Example]]:
    return {k: set(v) for k, v in splits.items()}


# ------------------------------------------------------------------------------- IMDb archive / folder


def test_real_archive_has_12500_reviews_per_class_and_split(imdb_full: dict[str, list[Example]]) -> None:
    assert set(imdb_full) == {"train", "test"}
    for split, examples in imdb_full.items():
        assert Counter(e.label for e in examples) == {0: 12_500, 1: 12_500}, split
        assert len({e.id for e in examples}) == 25_000  # the 50,000 train/unsup reviews are not among them
        assert all(e.id.startswith(f"{split}/") for e in examples)
    # Ratings come from the file names: negatives are rated 1-4, positives 7-10 (Maas et al. 2011).
    ratings = {label: {e.rating for e in imdb_full["train"] if e.label == label} for label in (0, 1)}
    assert ratings == {0: {1, 2, 3, 4}, 1: {7, 8, 9, 10}}


def test_ids_labels_and_ratings_come_from_member_names(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "a.tar.gz", {}, extra={
        "aclImdb/train/pos/123_9.txt": b"Loved it.",
        "aclImdb/train/neg/7_2.txt": "Hated it \u2014 truly.".encode(),
        "aclImdb/test/pos/0_10.txt": b"Great.",
        "aclImdb/test/neg/45_1.txt": b"Awful.",
    })
    out = read_imdb(archive)
    assert out["train"] == [
        Example("train/neg/7_2", "Hated it \u2014 truly.", 0, rating=2),
        Example("train/pos/123_9", "Loved it.", 1, rating=9),
    ]
    assert out["test"] == [Example("test/neg/45_1", "Awful.", 0, rating=1), Example("test/pos/0_10", "Great.", 1, 10)]


def test_archive_ignores_unsup_urls_and_feat_members(tmp_path: Path, imdb_slice: dict[str, list[Example]]) -> None:
    archive = write_archive(tmp_path / "aclImdb_v1.tar.gz", imdb_slice, extra=OFFICIAL_EXTRAS)
    out = read_archive(archive)
    assert as_set(out) == as_set(imdb_slice)
    assert not any("unlabelled" in e.text for exs in out.values() for e in exs)


def test_archive_order_does_not_depend_on_packing(tmp_path: Path, imdb_slice: dict[str, list[Example]]) -> None:
    reversed_slice = {k: v[::-1] for k, v in imdb_slice.items()}
    a = read_archive(write_archive(tmp_path / "a.tar.gz", imdb_slice))
    b = read_archive(write_archive(tmp_path / "b.tar.gz", reversed_slice))
    assert a == b


def test_folder_reads_like_the_archive_from_aclimdb_or_its_parent(
    tmp_path: Path, imdb_slice: dict[str, list[Example]], imdb_slice_archive: Path
) -> None:
    folder = write_folder(tmp_path, imdb_slice)
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    (folder / "train" / "labeledBow.feat").write_text("9 0:9\n")
    (folder / "train" / "urls_pos.txt").write_text("http://example.org\n")
    from_archive = read_imdb(imdb_slice_archive)
    assert read_imdb(folder) == from_archive
    assert read_imdb(tmp_path) == from_archive  # the folder that contains aclImdb/
    assert as_set(from_archive) == as_set(imdb_slice)


def test_imdb_errors_name_the_file(tmp_path: Path, imdb_slice: dict[str, list[Example]]) -> None:
    with pytest.raises(DataError, match="nope.tar.gz: no such file"):
        read_imdb(tmp_path / "nope.tar.gz")
    only_pos = {"train": take(imdb_slice["train"], 2)[2:], "test": take(imdb_slice["test"], 2)}
    with pytest.raises(DataError, match=r"unexpected layout: no reviews under aclImdb/train/neg/"):
        read_imdb(write_archive(tmp_path / "pos.tar.gz", only_pos))
    good = write_archive(tmp_path / "good.tar.gz", imdb_slice)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.tar.gz: corrupt or truncated archive"):
        read_imdb(truncated)
    latin = write_archive(tmp_path / "latin.tar.gz", imdb_slice, extra={"aclImdb/test/pos/99_9.txt": b"caf\xe9"})
    with pytest.raises(DataError, match="latin.tar.gz: member aclImdb/test/pos/99_9.txt: not UTF-8"):
        read_imdb(latin)


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


# ------------------------------------------------------------------------------- CSV / TSV / JSONL


def test_csv_with_configurable_columns_and_label_words(tmp_path: Path) -> None:
    f = tmp_path / "reviews.csv"
    f.write_text('review,sentiment,rid\n"Loved it, truly.",positive,r1\nMeh.,neg,r2\n'
                 '"Line one\nline two",POS,r3\nBad.,0,r4\nGood.,true,r5\n', encoding="utf-8")
    out = read_table(f, text_column="review", label_column="sentiment", id_column="rid")
    assert out == [Example("r1", "Loved it, truly.", 1), Example("r2", "Meh.", 0),
                   Example("r3", "Line one\nline two", 1), Example("r4", "Bad.", 0), Example("r5", "Good.", 1)]
    default_ids = read_table(f, text_column="review", label_column="sentiment")
    assert default_ids[0].id == "reviews.csv:2"


def test_tsv_and_excel_bom(tmp_path: Path) -> None:
    tsv = tmp_path / "r.tsv"
    tsv.write_text("text\tlabel\nGood, really.\t1\nBad.\tnegative\n", encoding="utf-8")
    assert [(e.text, e.label) for e in read_table(tsv)] == [("Good, really.", 1), ("Bad.", 0)]
    bom = tmp_path / "excel.csv"
    bom.write_text("text,label\nFine.,pos\n", encoding="utf-8-sig")  # spreadsheet exports start with a BOM
    assert [(e.text, e.label) for e in read_table(bom)] == [("Fine.", 1)]


def test_jsonl_with_configurable_columns(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    rows = [{"body": "Superb.", "y": 1, "n": 10}, {"body": "Dire.", "y": "negative", "n": 11},
            {"body": "Ok", "y": False}]
    f.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    out = read_table(f, text_column="body", label_column="y")
    assert [(e.id, e.text, e.label) for e in out] == [("r.jsonl:1", "Superb.", 1), ("r.jsonl:2", "Dire.", 0),
                                                       ("r.jsonl:4", "Ok", 0)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "text,label\nGood.,1\nBad.,maybe\n", r"a.csv:3: field 'label': label 'maybe' is not one of"),
        ("b.csv", "body,label\nGood.,1\n", r"b.csv:2: missing field 'text' \(fields: body, label\)"),
        ("c.csv", "text,label\nGood.\n", r"c.csv:2: missing field 'label'"),
        ("d.jsonl", '{"text": "x", "label": 1}\n{"text": "y", \n', r"d.jsonl:2: not valid JSON"),
        ("e.jsonl", '["x", 1]\n', r"e.jsonl:1: expected a JSON object, got list"),
        ("f.jsonl", '{"text": 5, "label": 1}\n', r"f.jsonl:1: field 'text' is not text"),
        ("g.csv", "text,label\n", r"g.csv: no rows"),
        ("h.xml", "<x/>", r"h.xml: unknown file type '.xml'"),
    ],
)
def test_table_errors_name_file_line_and_field(tmp_path: Path, name: str, content: str, message: str) -> None:
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(DataError, match=message):
        read_table(f)


def test_table_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin.csv"
    f.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(DataError, match=r"latin.csv:2: not UTF-8"):
        read_table(f)


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
