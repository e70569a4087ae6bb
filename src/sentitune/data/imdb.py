"""The IMDb Large Movie Review Dataset (Maas et al. 2011) from its official archive.

The archive is streamed: 50,000 small files are read straight from the gzip stream, never
extracted. The official download also holds `train/unsup/` (50,000 unlabelled reviews, read only when the
split "unsup" is asked for: a self-training teacher labels them) and `*.feat` files (always skipped).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sentitune.atomic import write_atomic
from sentitune.data.records import Example
from sentitune.errors import DataError
from sentitune.paths import cache_dir

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
ENV_PATH = "SENTITUNE_IMDB"

UNSUP = "unsup"  # the split of train/unsup/'s unlabelled reviews
UNLABELLED = -1  # their label: none (the rating in their names is 0)
_MEMBER = re.compile(r"(?:^|/)aclImdb/(?:(train|test)/(pos|neg)|train/(unsup))/(\d+)_(\d+)\.txt$")


def _parse_member(name: str) -> tuple[str, str, int, int | None] | None:
    """'aclImdb/train/pos/123_9.txt' -> ('train', 'train/pos/123_9', 1, 9): the split it belongs to, its id,
    label and rating; 'aclImdb/train/unsup/5_0.txt' -> ('unsup', 'train/unsup/5_0', -1, None); None for files
    that are not reviews."""
    m = _MEMBER.search(name.replace("\\", "/"))
    if not m:
        return None
    split, polarity, unsup, rid, rating = m.groups()
    if unsup:
        return UNSUP, f"train/unsup/{rid}_{rating}", UNLABELLED, None
    return split, f"{split}/{polarity}/{rid}_{rating}", int(polarity == "pos"), int(rating)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None


def read_archive(path: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, list[Example]]:
    """Stream reviews out of aclImdb_v1.tar.gz; errors name the archive and the member. "unsup" in `splits`:
    train/unsup/'s unlabelled reviews too, on the same pass ([] when the archive has none: the caller decides).

    The whole compressed stream is read, so the gzip CRC and length are checked: tar stops at its
    end-of-archive marker, and a damaged byte can fake one early (fewer reviews) or change a review.
    A `<archive>.sha256` beside it (as `sha256sum` writes it) is checked on the same pass.
    """
    out: dict[str, list[Example]] = {s: [] for s in splits}
    expected = _expected_sha256(path)
    try:
        raw = path.open("rb")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with raw:
        source = _HashingReader(raw) if expected else raw
        opened = False
        try:
            # "r:*", not the "r|*" stream mode: only the gzip reader notices an archive that ends early
            # (a cut download); the stream mode can take a cut at a member boundary for the end.
            with tarfile.open(fileobj=source, mode="r:*") as tar:
                opened = True
                try:
                    for member in tar:
                        parsed = _parse_member(member.name)
                        if parsed is None or not member.isfile() or parsed[0] not in out:
                            continue
                        split, rid, label, rating = parsed
                        handle = tar.extractfile(member)
                        data = handle.read() if handle is not None else b""
                        text = _decode(data, f"{path}: member {member.name}")
                        out[split].append(Example(id=rid, text=text, label=label, rating=rating))
                except DataError:
                    _drain(tar.fileobj)  # a member that is not UTF-8 may be a damaged stream: the CRC says which
                    raise
                _drain(tar.fileobj)
        except _DAMAGED as e:
            kind = None if opened else _table_kind(path)
            if kind:
                raise DataError(f"{path}: not an IMDb archive (looks like a {kind} file); "
                                f"for a CSV/JSONL of text,label use --source {path}") from None
            detail = " ".join(str(e).split())  # tarfile lists every method it tried, one per line
            raise DataError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {detail})") from None
        if expected and isinstance(source, _HashingReader):
            actual = source.hexdigest()
            if actual != expected[0]:
                raise DataError(f"{path}: checksum mismatch (sha256 {actual}, expected {expected[0]} "
                                f"from {expected[1].name})")
    _check_layout(out, str(path))  # only now: a damaged archive would look like a missing folder
    return out


# Everything a damaged compressed tar can raise while it is read.
_DAMAGED = (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, OSError)
_TABLES = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSONL", ".ndjson": "JSONL", ".json": "JSON"}


def _drain(fileobj: IO[bytes] | None) -> None:
    """Read the (decompressed) stream to its end: gzip checks its CRC32 and length only there."""
    while fileobj is not None and fileobj.read(1 << 20):
        pass


def _table_kind(path: Path) -> str | None:
    """'CSV', 'TSV' or 'JSONL' for a text table given where the archive goes (a common mix-up), else None."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not text (a damaged archive); a cut multi-byte character is fine
            return None
        text = head[: e.start].decode("utf-8")
    if not text.strip() or "\x00" in text:
        return None
    if path.suffix.lower() in _TABLES:
        return _TABLES[path.suffix.lower()]
    first = text.lstrip("\ufeff \r\n").split("\n", 1)[0]
    if first.startswith("{"):
        return "JSONL"
    if first.startswith("<"):  # an HTML error page saved by a failed download
        return None
    return "TSV" if "\t" in first else "CSV" if "," in first else None


def _expected_sha256(path: Path) -> tuple[str, Path] | None:
    """(hex digest, sidecar) from `<archive>.sha256` (`<hex>  <name>` or `<hex> *<name>`), if there is one."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    try:
        lines = [line.split(maxsplit=1) for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{sidecar}: cannot read the checksum file ({e})") from None
    # One line, or the line for this file when the sidecar lists several.
    mine = [f for f in lines if len(f) == 2 and f[1].lstrip("*") == path.name]
    fields = mine[0] if mine else lines[0] if len(lines) == 1 else []
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise DataError(f"{sidecar}: not a sha256sum line for {path.name} (expected '<64 hex digits>  {path.name}')")
    return fields[0].lower(), sidecar


class _HashingReader:
    """A read-only file that hashes what it reads, so the checksum costs no second pass.

    Re-reads (tarfile rewinds while it detects the compression) are hashed once; a forward seek that
    skips bytes (a plain .tar) falls back to hashing the file again at the end.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.name, self.mode = raw, raw.name, "rb"
        self.digest = hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in the digest
        self.gap = False

    def read(self, size: int = -1) -> bytes:
        pos = self.raw.tell()
        data = self.raw.read(size)
        if pos > self.hashed:
            self.gap = True
        elif pos + len(data) > self.hashed:
            self.digest.update(memoryview(data)[self.hashed - pos:])
            self.hashed = pos + len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readable(self) -> bool:  # asked by the bz2 and lzma readers
        return True

    def seekable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        """The sha256 of the whole file: the bytes after the compressed stream (if any) are read now."""
        if self.gap:
            self.digest, self.hashed = hashlib.sha256(), 0
        self.raw.seek(self.hashed)
        while chunk := self.raw.read(1 << 20):
            self.digest.update(chunk)
        return self.digest.hexdigest()


def read_folder(path: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, list[Example]]:
    """Read an extracted `aclImdb/` folder (or the folder that contains it); "unsup" as `read_archive` reads it."""
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    out: dict[str, list[Example]] = {s: [] for s in splits}
    for split in splits:
        for folder in ["train/unsup"] if split == UNSUP else [f"{split}/neg", f"{split}/pos"]:
            if not (root / folder).is_dir():
                continue
            for file in sorted((root / folder).glob("*.txt")):
                parsed = _parse_member(f"aclImdb/{folder}/{file.name}")
                if parsed is None:
                    continue
                _, rid, label, rating = parsed
                try:
                    raw = file.read_bytes()
                except OSError as e:
                    raise DataError(f"{file}: cannot read ({e.strerror})") from None
                out[split].append(Example(id=rid, text=_decode(raw, str(file)), label=label, rating=rating))
    _check_layout(out, str(root))
    return out


def _check_layout(out: dict[str, list[Example]], where: str) -> None:
    """Each labelled split has both classes (an empty "unsup" is the caller's to judge); every split sorted."""
    for split, examples in out.items():
        labels = {e.label for e in examples}
        if split != UNSUP and labels != {0, 1}:
            missing = [p for p, v in (("neg", 0), ("pos", 1)) if v not in labels]
            raise DataError(
                f"{where}: unexpected layout: no reviews under aclImdb/{split}/{'|'.join(missing)}/ "
                "(expected aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt)"
            )
        # Sort so the order never depends on how the archive was packed.
        examples.sort(key=lambda e: e.id)


def read_imdb(path: Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, list[Example]]:
    """The archive or the extracted folder at `path`: `splits` of "train", "test" and "unsup" (unlabelled)."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_folder(path, splits)
    return read_archive(path, splits)


# ------------------------------------------------------------------------ locating the archive


def locate_imdb(
    explicit: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Find IMDb: explicit path, else $SENTITUNE_IMDB, else the cache, else download it there."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder (from --data / data.path)")
        return path
    env = os.environ.get(ENV_PATH)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder (from ${ENV_PATH})")
        return path
    for candidate in (cache_dir("datasets") / ARCHIVE_NAME, cache_dir("datasets") / "aclImdb"):
        if candidate.exists():
            return candidate
    if not download:
        raise DataError(f"IMDb not found: pass --data PATH, set ${ENV_PATH}, or allow the download")
    url = os.environ.get("SENTITUNE_IMDB_URL", IMDB_URL)
    return download_file(url, cache_dir("datasets") / ARCHIVE_NAME, md5=IMDB_MD5, progress=progress)


def download_file(
    url: str, dest: Path, md5: str | None = None, progress: Callable[[int, int | None], None] | None = None
) -> Path:
    """Download to a temporary file beside `dest`, verify the MD5, then rename (write_atomic): never a half file."""

    def fetch(tmp: Path) -> None:
        digest = hashlib.md5()
        with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            size = resp.headers.get("Content-Length")  # file:// responses have no .length
            total = int(size) if size and size.isdigit() else None
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                if progress:
                    progress(len(chunk), total)
        if md5 and digest.hexdigest() != md5:
            raise DataError(f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}); not saved")

    try:
        write_atomic(dest, fetch)
    except ValueError as e:  # a malformed URL in $SENTITUNE_IMDB_URL
        raise DataError(f"{url}: not a usable URL ({e}); check $SENTITUNE_IMDB_URL") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(
            f"{url}: download failed ({getattr(e, 'reason', e)}). Offline? Pass --data PATH to a local "
            f"{ARCHIVE_NAME} or extracted aclImdb/ folder, or set ${ENV_PATH}"
        ) from None
    return dest
