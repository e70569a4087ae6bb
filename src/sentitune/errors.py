"""Errors a user can act on. The CLI prints their message on one line and exits non-zero.

An OS failure while writing (a full disk, a folder turned read-only) becomes a `DiskError` naming the file
where `writing(path)` wraps the work: the error carries its own path, so no caller keeps one aside for it.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Callable, Iterator
from pathlib import Path

# OS errors a user can act on (free space, fix permissions) -> what they read.
OS_ERRORS = {errno.ENOSPC: "no space left on device (disk full)", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted"}


class SentituneError(Exception):
    """Base class: the message names the problem and where (file, line, member, field)."""


class ConfigError(SentituneError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class DataError(SentituneError):
    """Input data is missing, unreadable or malformed."""


class ModelError(SentituneError):
    """A model spec cannot be resolved or does not fit the requested method."""


class RunError(SentituneError):
    """A run directory is missing, from another config, or would be overwritten."""


class DiskError(SentituneError):
    """Writing failed on the machine's side (disk full, quota, read-only, permission); the message names the file."""


def os_failure(error: BaseException) -> tuple[int, str | None] | None:
    """(errno, file) of an OS failure behind `error`, from its chain; None when it is something else.

    Besides OSError: the tokenizers and safetensors writers raise a bare Exception whose message ends in
    "(os error 28)" when the disk fills while a model is saved.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in OS_ERRORS:
            return current.errno, None if current.filename is None else str(current.filename)
        found = re.search(r"\(os error (\d+)\)", str(current))
        if found and int(found.group(1)) in OS_ERRORS:
            return int(found.group(1)), None
        current = current.__cause__ or current.__context__
    return None


def disk_message(code: int, filename: str | None, where: Path | str | None = None, resumable: bool = False) -> str:
    """One line naming the file (the real name, not the temporary `.NAME.XXXXXXXX.tmp` of an atomic write; the
    output being written when the error names none) and what to do."""
    if filename:
        where = Path(*[m.group(1) if (m := re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]+\.tmp", part)) else part
                       for part in Path(filename).parts])
    text = f"{where}: {OS_ERRORS[code]}" if where else OS_ERRORS[code]
    if code in (errno.ENOSPC, errno.EDQUOT):
        text += ("; the run can continue with --resume once space is freed" if resumable
                 else "; free some space and run the command again")
    return text


@contextlib.contextmanager
def writing(where: Path | str, resumable: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Work that writes `where`: an OS failure inside becomes a DiskError naming the file (or `where`), saying
    whether `--resume` continues (`resumable()`, asked when it fails) or the command must run again."""
    try:
        yield
    except SentituneError:
        raise
    except Exception as e:
        found = os_failure(e)
        if found is None:
            raise
        code, filename = found
        raise DiskError(disk_message(code, filename, where, resumable())) from e
