"""Property-based tests of the data readers: whatever a valid file holds comes back exactly.

Hypothesis generates official-layout IMDb archives (random ids, ratings, Unicode text, extra
members the real download has, any member order) and CSV/TSV/JSONL files (text with commas,
quotes, tabs, newlines, a byte-order mark, every accepted label spelling).
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentitune.data.imdb import read_archive, read_folder
from sentitune.data.records import Example
from sentitune.data.tabular import read_table
from sentitune.errors import DataError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode text a file can hold (no lone surrogates), weighted toward what breaks parsers.
TEXT = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(list(',"\'\n\r\t <>/\\;'))),
    max_size=40,
)
REVIEWS = st.dictionaries(st.integers(0, 99_999), st.tuples(st.integers(1, 10), TEXT), min_size=1, max_size=3)
EXTRAS = {  # what the official download holds besides the labelled reviews
    "aclImdb/README": b"Large Movie Review Dataset v1.0\n",
    "aclImdb/imdb.vocab": b"the\nand\n",
    "aclImdb/train/labeledBow.feat": b"0 0:9 1:1\n",
    "aclImdb/train/urls_pos.txt": b"http://www.imdb.com/title/tt0453418/usercomments\n",
    "aclImdb/train/unsup/0_0.txt": b"an unlabelled review",
    "aclImdb/test/urls_neg.txt": b"http://www.imdb.com/title/tt0064354/usercomments\n",
}


@st.composite
def imdb_layouts(draw: st.DrawFn) -> tuple[dict[str, bytes], dict[str, list[Example]]]:
    """(members, expected examples per split): both labels in both splits, as the readers require."""
    members: dict[str, bytes] = {}
    expected: dict[str, list[Example]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for label, folder in ((0, "neg"), (1, "pos")):
            for rid, (rating, text) in draw(REVIEWS).items():
                members[f"aclImdb/{split}/{folder}/{rid}_{rating}.txt"] = text.encode("utf-8")
                expected[split].append(Example(f"{split}/{folder}/{rid}_{rating}", text, label, rating))
    extras = draw(st.lists(st.sampled_from(sorted(EXTRAS)), unique=True))
    members |= {name: EXTRAS[name] for name in extras}
    order = draw(st.permutations(sorted(members)))
    for split in expected:
        expected[split].sort(key=lambda e: e.id)
    return {name: members[name] for name in order}, expected


def write_tar(path: Path, members: dict[str, bytes], with_dirs: bool) -> None:
    with tarfile.open(path, "w:gz") as tar:
        if with_dirs:  # `tar czf` stores the folders too; the reader must skip them
            for folder in sorted({str(Path(n).parent) for n in members}):
                info = tarfile.TarInfo(folder)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@SETTINGS
@given(layout=imdb_layouts(), with_dirs=st.booleans())
def test_archive_and_folder_round_trip(layout: tuple[dict[str, bytes], dict[str, list[Example]]],
                                       with_dirs: bool) -> None:
    members, expected = layout
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "aclImdb_v1.tar.gz"
        write_tar(archive, members, with_dirs)
        assert read_archive(archive) == expected
        for name, data in members.items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_bytes(data)
        assert read_folder(Path(tmp)) == expected  # the folder that holds aclImdb/
        assert read_folder(Path(tmp) / "aclImdb") == expected


@SETTINGS
@given(layout=imdb_layouts(), cut=st.floats(0.05, 0.95))
def test_truncated_archive_is_an_error_or_complete(layout: tuple[dict[str, bytes], dict[str, list[Example]]],
                                                   cut: float) -> None:
    """A download cut anywhere is reported, never read as a smaller dataset. (A cut that only loses
    the tar's zero padding and the gzip trailer still holds every review, and may be read whole.)"""
    members, expected = layout
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "aclImdb_v1.tar.gz"
        write_tar(archive, members, with_dirs=False)
        raw = archive.read_bytes()
        archive.write_bytes(raw[: int(len(raw) * cut)])
        try:
            got = read_archive(archive)
        except DataError as e:
            assert "corrupt or truncated archive" in str(e)
        else:
            assert got == expected


# Every accepted spelling of a label, and what it means.
LABELS = {0: 0, 1: 1, "0": 0, "1": 1, "pos": 1, "neg": 0, "positive": 1, "negative": 0, "true": 1, "false": 0,
          "POS": 1, "Negative": 0, " pos ": 1}
JSON_LABELS = {**LABELS, True: 1, False: 0}
ROWS = st.lists(st.tuples(TEXT, st.integers(0, 10**6)), min_size=1, max_size=8)


@SETTINGS
@given(rows=ROWS, labels=st.data(), suffix=st.sampled_from([".csv", ".tsv"]), bom=st.booleans())
def test_csv_round_trip(rows: list[tuple[str, int]], labels: st.DataObject, suffix: str, bom: bool) -> None:
    spelled = [labels.draw(st.sampled_from(sorted(LABELS, key=str))) for _ in rows]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t" if suffix == ".tsv" else ",")
    writer.writerow(["id", "label", "text"])  # columns in any order: they are found by name
    for (text, rid), label in zip(rows, spelled, strict=True):
        writer.writerow([rid, label, text])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"reviews{suffix}"
        path.write_bytes(buf.getvalue().encode("utf-8-sig" if bom else "utf-8"))
        got = read_table(path, id_column="id")
    want = [Example(str(rid), text, LABELS[label]) for (text, rid), label in zip(rows, spelled, strict=True)]
    assert got == want


@SETTINGS
@given(rows=ROWS, labels=st.data(), ascii_only=st.booleans(), blank_lines=st.booleans())
def test_jsonl_round_trip(rows: list[tuple[str, int]], labels: st.DataObject, ascii_only: bool,
                          blank_lines: bool) -> None:
    spelled = [labels.draw(st.sampled_from(sorted(JSON_LABELS, key=repr))) for _ in rows]
    lines = [json.dumps({"review": text, "y": label, "id": rid, "extra": [1, 2]}, ensure_ascii=ascii_only)
             for (text, rid), label in zip(rows, spelled, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reviews.jsonl"
        path.write_text(("\n\n" if blank_lines else "\n").join(lines) + "\n", encoding="utf-8")
        got = read_table(path, text_column="review", label_column="y", id_column="id")
    want = [Example(str(rid), text, JSON_LABELS[label]) for (text, rid), label in zip(rows, spelled, strict=True)]
    assert got == want


@SETTINGS
@given(rows=ROWS, bad_row=st.integers(0, 7), bad_label=st.one_of(TEXT, st.integers(2, 99)))
def test_csv_bad_label_names_its_line(rows: list[tuple[str, int]], bad_row: int, bad_label: str | int) -> None:
    """A label outside the accepted set is an error naming the file and the line it is on, never a skip."""
    if str(bad_label).strip().lower() in {str(k).strip().lower() for k in LABELS}:
        bad_label = f"{bad_label}?"
    bad_row %= len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reviews.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i, (text, _) in enumerate(rows):
                writer.writerow([text.replace("\r", "").replace("\n", " "), bad_label if i == bad_row else "pos"])
        with pytest.raises(DataError, match=rf"reviews\.csv:{bad_row + 2}: field 'label'"):
            read_table(path)


# An ONNX export's sentitune_scorer.py (export/portable.py) carries its own copies of the clean-up and the cut, so
# that it imports nothing of sentitune's: each copy must answer as sentitune's own does.
@given(text=st.text(alphabet=st.sampled_from(list("ab <>/brBR\t\n")), max_size=60))
def test_the_exported_scorers_clean_up_is_sentitunes(text: str) -> None:
    from sentitune.data.text import clean_text
    from sentitune.export import portable

    assert portable.clean_text(text) == clean_text(text)


@given(ids=st.lists(st.integers(0, 9), max_size=40), budget=st.integers(-2, 45),
       side=st.sampled_from(["head", "tail", "head+tail"]), head=st.one_of(st.none(), st.integers(0, 50)))
def test_the_exported_scorers_cut_is_sentitunes(ids: list[int], budget: int, side: str, head: int | None) -> None:
    from sentitune.data.text import truncate_ids
    from sentitune.export import portable

    assert portable.truncate_ids(ids, budget, side, head) == truncate_ids(ids, budget, side, head)
