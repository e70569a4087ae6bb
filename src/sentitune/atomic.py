"""Every file sentitune writes goes to a temporary name in the same folder and is renamed into place.

A crash (or SIGKILL) mid-write therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, fsync it, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
