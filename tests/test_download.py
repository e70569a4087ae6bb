"""Finding IMDb: explicit path > $SENTITUNE_IMDB > cache > download (MD5-checked, never a half file)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import take, write_archive

from sentitune.data import imdb
from sentitune.data.imdb import ARCHIVE_NAME, ENV_PATH, download_file, locate_imdb, read_imdb
from sentitune.data.records import Example
from sentitune.errors import DataError


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
