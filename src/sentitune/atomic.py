"""Every file sentitune writes goes to a temporary name in the same folder and is renamed into place.

A crash (or SIGKILL) mid-write therefore leaves either the old file or the new one, never half of one.
Temporary names are `.NAME.XXXXXXXX.tmp` (files and folders alike): `RunDir` clears exactly those.
Modes follow the umask, as a plain `open` would (mkstemp/mkdtemp alone give 0600/0700).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a thread creating a file meanwhile gets 0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """fsync a folder, so that a rename into it survives a power cut (not only the renamed data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, give it the umask's mode, fsync it, rename it to `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _naming(path):
            write(tmp)
            with tmp.open("rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # after the fsync: a umask like 0o277 leaves no write bit
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OS error while `path` is written names `path`: a write() or fsync() that hits a full disk raises an
    OSError with no file name, and torch.save or the Rust writers of tokenizers and safetensors raise a
    RuntimeError with no errno at all; the user should read which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
    except Exception as e:
        if _disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise


def _disk_full(folder: Path, slack: int = 1 << 20) -> bool:
    """Whether the file system holding `folder` is (nearly) out of space, checked while the failed
    temporary file still takes its room."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < slack


@contextlib.contextmanager
def atomic_dir(path: Path, keep_theirs: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; when the block succeeds, rename it to `path`.

    Before the rename every file and folder inside gets the umask's mode and is fsynced; after it the
    parent is fsynced. A folder cannot be renamed over a non-empty one, so an existing `path` moves
    to `NAME.old` first and is removed after: a kill in between leaves `NAME.old` (RunDir clears it).
    If the block raises, the temporary folder is removed and `path` is untouched.

    keep_theirs: for caches that several processes may build at once (same key, same content). It
    names the file a finished folder holds (e.g. "meta.json"): if `path` holds it when ours is done,
    another process got there first, and its folder stays (it may be in use) while ours is dropped.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _naming(path):
            yield tmp
            _settle(tmp)
        if keep_theirs is not None:
            try:
                os.replace(tmp, path)  # fails if theirs is there: a folder is never renamed over a full one
            except OSError:
                if not (path / keep_theirs).exists():
                    raise
            else:
                fsync_dir(path.parent)
            return
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)  # a leftover of an earlier kill
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _settle(root: Path) -> None:
    """Modes from the umask (files 0666, folders 0777, less the mask) and fsync, for a whole tree."""
    mask = current_umask()
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file = os.path.join(folder, name)
            if os.path.islink(file):
                continue
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(file, 0o666 & ~mask)
        fsync_dir(Path(folder))
        os.chmod(folder, 0o777 & ~mask)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _strict(value: Any) -> Any:
    """NaN/inf become null: strict JSON readers reject the bare NaN that json.dumps writes."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(_strict(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append by rewriting atomically: logs are small and must survive a kill mid-append."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    write_text(path, old + line.rstrip("\n") + "\n")


# Characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?")  # -5, -0.25, -1e-05: numbers, not formulas


def spreadsheet_safe(cell: str) -> str:
    """A text cell that Excel, LibreOffice or Google Sheets shows as text instead of running it as a formula.

    Why: CSVs we write carry text we do not control (reviews, ids from the user's CSV, class names, a bench
    row's published source); a cell such as `=HYPERLINK("http://x","click")` would run when the file is opened
    in a spreadsheet (CSV or formula injection). As OWASP recommends, a cell that starts with = + - @, a tab or
    a carriage return gets a leading single quote: spreadsheets show it as text, and a program reading the CSV
    sees the quote, which is the price (strip one leading "'" to get the original back). A plain number such
    as -0.25 is no formula and stays as it is. Quotes and commas inside a cell need nothing more: csv.writer
    quotes such a field, so no new cell can start mid-text.
    """
    return "'" + cell if cell.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell) else cell


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV atomically; every text cell (and header cell) is written spreadsheet-safe, numbers as they are.

    Every CSV sentitune writes goes through here, and no column is exempt, so none can forget the formula
    guard: a new column of user text is safe without anyone naming it.
    """

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:  # csv writes its own \r\n line ends
            writer = csv.writer(f)
            writer.writerow([spreadsheet_safe(str(h)) for h in header])
            for row in rows:
                writer.writerow([spreadsheet_safe(c) if isinstance(c, str) else c for c in row])

    write_atomic(path, write)
