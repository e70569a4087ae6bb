"""The IMDb Large Movie Review Dataset (sentitune.data.imdb): read from its official archive or the extracted folder
(real files), a damaged archive refused as corrupt or truncated (the gzip CRC, a `.sha256` beside it), never read as
fewer or different reviews, a table given as the archive named as such, and finding it: explicit path >
$SENTITUNE_IMDB > cache > download (MD5-checked, never a half file).

Damaged copies of the real archive are written to tmp_path; review text never enters the repo.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import TINY_LORA as MODEL
from conftest import assert_one_line_error, run_cli, take, write_archive, write_folder

from sentitune.data import imdb
from sentitune.data.imdb import ARCHIVE_NAME, ENV_PATH, download_file, locate_imdb, read_archive, read_imdb
from sentitune.data.records import Example
from sentitune.errors import DataError

# Small enough that a run the old code wrongly accepted finishes in seconds instead of training on 50,000 reviews.
SMALL_RUN = ["--train-size", "16", "--eval-size", "16", "--val-size", "8", "--epochs", "1",
             "--set", "train.baseline=false"]


CORRUPT = "corrupt or truncated archive ("


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


UNSUP_EXTRAS = {  # train/unsup as the official archive names it: <id>_0.txt, no label
    "aclImdb/train/unsup/12_0.txt": b"Another unlabelled review.",
    "aclImdb/train/unsup/0_0.txt": "Unlabelled \u2014 but a review, with <br /><br />tags \u2713.".encode(),
}
UNSUP_EXAMPLES = [Example("train/unsup/0_0", "Unlabelled \u2014 but a review, with <br /><br />tags \u2713.", -1),
                  Example("train/unsup/12_0", "Another unlabelled review.", -1)]


def test_archive_reads_unsup_only_when_asked(tmp_path: Path) -> None:
    labelled = synthetic()
    archive = write_archive(tmp_path / "aclImdb_v1.tar.gz", labelled, extra={**OFFICIAL_EXTRAS, **UNSUP_EXTRAS})
    out = read_archive(archive, ("train", "test", "unsup"))
    assert out["unsup"] == UNSUP_EXAMPLES  # label -1, rating None, sorted by id, text decoded as the others
    assert all(e.rating is None for e in out["unsup"])
    plain = read_archive(archive)
    assert "unsup" not in plain and not any(e.label == -1 for exs in plain.values() for e in exs)
    assert {k: out[k] for k in ("train", "test")} == plain
    assert read_imdb(archive, ("unsup",)) == {"unsup": UNSUP_EXAMPLES}  # no labelled split asked: none checked


def test_folder_reads_unsup_like_the_archive(tmp_path: Path) -> None:
    labelled = synthetic()
    extras = {**OFFICIAL_EXTRAS, **UNSUP_EXTRAS}
    archive = write_archive(tmp_path / "aclImdb_v1.tar.gz", labelled, extra=extras)
    folder = write_folder(tmp_path / "extracted", labelled)
    for name, data in extras.items():
        (tmp_path / "extracted" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "extracted" / name).write_bytes(data)
    splits = ("train", "test", "unsup")
    assert read_imdb(folder, splits) == read_imdb(tmp_path / "extracted", splits) == read_archive(archive, splits)
    assert read_imdb(folder, splits)["unsup"] == UNSUP_EXAMPLES
    assert "unsup" not in read_imdb(folder)


def test_no_unsup_reviews_is_an_empty_split_not_an_error(tmp_path: Path) -> None:
    labelled = synthetic()
    splits = ("train", "test", "unsup")
    archive = read_archive(write_archive(tmp_path / "a.tar.gz", labelled), splits)
    folder = read_imdb(write_folder(tmp_path, labelled), splits)
    assert archive["unsup"] == folder["unsup"] == []
    assert archive == folder and len(archive["train"]) == len(archive["test"]) == 6
    latin = write_archive(tmp_path / "latin.tar.gz", labelled, extra={"aclImdb/train/unsup/3_0.txt": b"caf\xe9"})
    with pytest.raises(DataError, match="latin.tar.gz: member aclImdb/train/unsup/3_0.txt: not UTF-8"):
        read_archive(latin, splits)


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


# --------------------------------------------------------------------------- damaged real archive


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


# --------------------------------------------------------------------------- finding and downloading the archive


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SENTITUNE_CACHE, no $SENTITUNE_IMDB, and a download URL that fails if it is used."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SENTITUNE_CACHE", str(root))
    monkeypatch.delenv(ENV_PATH, raising=False)
    monkeypatch.setenv("SENTITUNE_IMDB_URL", (tmp_path / "no-such-server" / ARCHIVE_NAME).as_uri())
    return root / "datasets"


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory, imdb_slice: dict[str, list[Example]]) -> Path:
    small = {split: take(examples, 3) for split, examples in imdb_slice.items()}
    return write_archive(tmp_path_factory.mktemp("served") / ARCHIVE_NAME, small)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_explicit_path_wins(cache: Path, tmp_path: Path, tiny_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.tar.gz"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(ENV_PATH, str(env_file))
    cache.mkdir(parents=True)
    (cache / ARCHIVE_NAME).write_bytes(b"x")
    assert locate_imdb(tiny_archive) == tiny_archive
    with pytest.raises(DataError, match=r"missing.tar.gz: no such file or folder \(from --data / data.path\)"):
        locate_imdb(tmp_path / "missing.tar.gz")


def test_env_beats_cache(cache: Path, tiny_archive: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache.mkdir(parents=True)
    (cache / ARCHIVE_NAME).write_bytes(b"x")
    monkeypatch.setenv(ENV_PATH, str(tiny_archive))
    assert locate_imdb() == tiny_archive
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"gone: no such file or folder \(from \$SENTITUNE_IMDB\)"):
        locate_imdb()


def test_cache_archive_or_folder_beats_download(cache: Path) -> None:
    folder = cache / "aclImdb"
    folder.mkdir(parents=True)
    assert locate_imdb() == folder
    (cache / ARCHIVE_NAME).write_bytes(b"x")
    assert locate_imdb() == cache / ARCHIVE_NAME  # the archive is looked for first


def test_no_download_allowed(cache: Path) -> None:
    with pytest.raises(DataError, match="IMDb not found: pass --data PATH"):
        locate_imdb(download=False)


def test_download_into_cache_with_md5_check(
    cache: Path, tiny_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTITUNE_IMDB_URL", tiny_archive.as_uri())
    monkeypatch.setattr(imdb, "IMDB_MD5", md5(tiny_archive))
    seen: list[tuple[int, int | None]] = []
    umask = os.umask(0o022)
    try:
        path = locate_imdb(progress=lambda n, total: seen.append((n, total)))
    finally:
        os.umask(umask)
    umask = 0o022
    assert path == cache / ARCHIVE_NAME
    assert path.read_bytes() == tiny_archive.read_bytes()
    assert sum(n for n, _ in seen) == tiny_archive.stat().st_size
    assert {total for _, total in seen} == {tiny_archive.stat().st_size}
    assert read_imdb(path) == read_imdb(tiny_archive)
    assert sorted(p.name for p in cache.iterdir()) == [ARCHIVE_NAME]  # no temporary files left
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600
    # The second call finds the cached copy and does not download again.
    monkeypatch.setenv("SENTITUNE_IMDB_URL", "file:///nonexistent/" + ARCHIVE_NAME)
    assert locate_imdb() == path


def test_md5_mismatch_leaves_nothing_behind(cache: Path, tiny_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTITUNE_IMDB_URL", tiny_archive.as_uri())
    assert md5(tiny_archive) != imdb.IMDB_MD5  # IMDB_MD5 is the real archive's checksum
    with pytest.raises(DataError, match=f"checksum mismatch \\(md5 {md5(tiny_archive)}, expected {imdb.IMDB_MD5}\\)"):
        locate_imdb()
    assert list(cache.iterdir()) == []


def test_download_failure_is_one_clear_error(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download failed .* Offline\\? Pass --data PATH"):
        locate_imdb()
    assert list(cache.iterdir()) == []
    with pytest.raises(DataError, match="not a usable URL"):
        download_file("not a url", tmp_path / "x.tar.gz")
