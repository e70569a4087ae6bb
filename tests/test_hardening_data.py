"""Data-integrity regression tests of the hardening issue: each case failed before its fix (but the
`matches*` sidecar cases, kept to show a good checksum still reads).

- A damaged IMDb archive (a flipped byte, overwritten bytes, a changed gzip header) is refused as
  "corrupt or truncated archive" or "checksum mismatch", never read as fewer or different reviews,
  and never reported as an "unexpected layout".
- A CSV/TSV/JSONL given as the IMDb archive says so and points to --source.
- A CSV/JSONL training or test file with one class is refused (ROC AUC would be undefined).
- data.train_size / data.eval_size larger than the data is reported, on stdout and in metrics.json.

Damaged copies of the real archive are written to tmp_path; review text never enters the repo.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, write_archive

from sentitune.data.imdb import read_archive
from sentitune.data.records import Example
from sentitune.errors import DataError

MODEL = ["--model", "gpt2-tiny-random", "--method", "lora", "--max-length", "32", "--no-progress"]
# Small enough that a run the old code wrongly accepted finishes in seconds instead of training on 50,000 reviews.
SMALL_RUN = ["--train-size", "16", "--eval-size", "16", "--val-size", "8", "--epochs", "1",
             "--set", "train.baseline=false"]
CORRUPT = "corrupt or truncated archive ("






def synthetic(per_class: int = 3) -> dict[str, list[Example]]:
    """Official-layout examples with made-up text, test split first as in the real archive."""
    return {
        split: [Example(f"{split}/{folder}/{i}_{rating}", f"Review {i}: {'fine' if label else 'dull'} film ✓.",
                        label, rating)
                for label, folder, rating in ((0, "neg", 2), (1, "pos", 9)) for i in range(per_class)]
        for split in ("test", "train")
    }


def sidecar(archive: Path, digest: str | None = None, star: bool = False) -> Path:
    """`<archive>.sha256` as `sha256sum` writes it (`*name` is its binary mode)."""
    digest = digest or hashlib.sha256(archive.read_bytes()).hexdigest()
    path = archive.with_name(archive.name + ".sha256")
    path.write_text(f"{digest} {'*' if star else ' '}{archive.name}\n")
    return path


# --------------------------------------------------------------------------- damaged real archive


REAL_DAMAGE = {  # id -> (position as a fraction of the archive, bytes XORed in)
    "flip-1-byte-at-60pct": (0.60, b"\xff"),
    "flip-1-byte-at-80pct": (0.80, b"\xff"),
    "flip-1-byte-at-99pct": (0.99, b"\xff"),
    "overwrite-4-bytes-at-50pct": (0.50, b"\x5a\xa5\x5a\xa5"),
}


@pytest.mark.parametrize("damage", list(REAL_DAMAGE), ids=list(REAL_DAMAGE))
def test_damaged_real_archive_is_corrupt(damage: str, imdb_archive: Path, tmp_path: Path) -> None:
    """Before: the flips exited 0 (50,000 reviews, some text changed: only the gzip CRC knew), and the
    overwrite at 50% said "unexpected layout" (the tar ended early, before train/)."""
    frac, mask = REAL_DAMAGE[damage]
    raw = bytearray(imdb_archive.read_bytes())
    at = int(len(raw) * frac)
    raw[at:at + len(mask)] = bytes(b ^ m for b, m in zip(raw[at:at + len(mask)], mask, strict=True))
    bad = tmp_path / "aclImdb_v1.tar.gz"  # no .sha256 beside it: the gzip CRC alone must catch it
    bad.write_bytes(bytes(raw))
    code, _, err = run_cli(["train", *MODEL, "--data", str(bad), "--out", str(tmp_path / "run"), *SMALL_RUN])
    line = assert_one_line_error(code, err, [f"{bad}: {CORRUPT}"])
    assert "unexpected layout" not in line
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_every_flipped_byte_is_an_error_or_harmless(tmp_path: Path) -> None:
    """Flip each byte of a small archive in turn: the read fails as corrupt, or (gzip header fields
    such as the timestamp, which carry no data) returns exactly the original reviews."""
    expected = synthetic()
    archive = write_archive(tmp_path / "good.tar.gz", expected)
    for split in expected:
        expected[split].sort(key=lambda e: e.id)
    assert read_archive(archive) == expected
    raw = archive.read_bytes()
    bad = tmp_path / "aclImdb_v1.tar.gz"
    wrong = []
    for at in range(len(raw)):
        bad.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
        try:
            got = read_archive(bad)
        except DataError as e:
            if not str(e).startswith(f"{bad}: {CORRUPT}"):
                wrong.append(f"byte {at}: {e}")
        else:
            if got != expected:
                wrong.append(f"byte {at}: read {sum(map(len, got.values()))} reviews, not the original")
    assert not wrong, f"{len(wrong)} of {len(raw)} flips misreported, e.g. {wrong[:3]}"


# --------------------------------------------------------------------------- the .sha256 sidecar


@pytest.mark.parametrize("case", ["matches", "matches-binary-mode", "mismatch", "gzip-header-changed",
                                  "malformed-sidecar"])
def test_sha256_sidecar(case: str, tmp_path: Path) -> None:
    """A `<archive>.sha256` beside the archive is verified; a changed gzip header passes the CRC but
    not the checksum."""
    archive = write_archive(tmp_path / "aclImdb_v1.tar.gz", synthetic())
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    side = sidecar(archive, star=case == "matches-binary-mode")
    if case.startswith("matches"):
        assert sum(map(len, read_archive(archive).values())) == 12
        return
    if case == "mismatch":
        side.write_text(f"{'0' * 64}  {archive.name}\n")
        expect = [f"{archive}: checksum mismatch", f"sha256 {good}", f"expected {'0' * 64}", side.name]
    elif case == "gzip-header-changed":
        raw = bytearray(archive.read_bytes())
        raw[4] ^= 0x01  # the gzip MTIME field: no CRC covers it, the data is unchanged
        archive.write_bytes(bytes(raw))
        side.rename(tmp_path / "kept.sha256")
        assert sum(map(len, read_archive(archive).values())) == 12  # without the sidecar: reads fine
        (tmp_path / "kept.sha256").rename(side)
        changed = hashlib.sha256(bytes(raw)).hexdigest()
        expect = [f"{archive}: checksum mismatch", f"sha256 {changed}", f"expected {good}"]
    else:
        side.write_text("not a checksum\n")
        expect = [f"{side}: ", "sha256sum"]
    with pytest.raises(DataError) as info:
        read_archive(archive)
    for part in expect:
        assert part in str(info.value), f"{part!r} not in {info.value}"


def test_sha256_mismatch_through_cli(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "aclImdb_v1.tar.gz", synthetic())
    sidecar(archive, "ab" * 32)
    code, _, err = run_cli(["train", *MODEL, "--data", str(archive), "--out", str(tmp_path / "run"),
                            "--epochs", "1", "--val-size", "0", "--set", "train.baseline=false"])
    assert_one_line_error(code, err, [f"{archive}: checksum mismatch", f"expected {'ab' * 32}"])


# --------------------------------------------------------------------------- a table given as the archive


TABLES = {  # id -> (file name, content, kind named in the message)
    "csv-by-suffix": ("reviews.csv", "text,label\nGreat film.,pos\nDull film.,neg\n", "CSV"),
    "tsv-by-suffix": ("reviews.tsv", "text\tlabel\nGreat film.\tpos\nDull film.\tneg\n", "TSV"),
    "jsonl-by-suffix": ("reviews.jsonl", '{"text": "Great film.", "label": 1}\n{"text": "Dull.", "label": 0}\n',
                        "JSONL"),
    "csv-content-named-tar-gz": ("aclImdb_v1.tar.gz", "text,label\nGreat film.,pos\nDull film.,neg\n", "CSV"),
}


@pytest.mark.parametrize("table", list(TABLES), ids=list(TABLES))
def test_table_given_as_imdb_archive(table: str, tmp_path: Path) -> None:
    """Before: "corrupt or truncated archive (ReadError: file could not be opened successfully ...)"."""
    name, content, kind = TABLES[table]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    code, _, err = run_cli(["train", *MODEL, "--data", str(path), "--out", str(tmp_path / "run")])
    line = assert_one_line_error(code, err, [f"{path}: not an IMDb archive (looks like a {kind} file)",
                                             f"use --source {path}"])
    assert "corrupt" not in line


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
    assert metrics["data"]["warnings"] == want
    assert [line for line in out.splitlines() if line.startswith("warning: ")] == [f"warning: {w}" for w in want]
    assert metrics["data"]["train"]["n"] == (20 if case == "sizes-fit" else 29)
