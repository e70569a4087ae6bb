"""Where sentitune keeps converted models and downloaded data ($SENTITUNE_CACHE or ~/.cache/sentitune),
and the up-front check that an output folder can be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sentitune.errors import RunError


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("SENTITUNE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "sentitune")
    path = root.expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_writable_dir(path: Path) -> None:
    """Fail in the first second, not after minutes of loading data and a model, if `path` cannot be written.

    `path` is a folder that files will be written into; it (and its parents) need not exist yet: then
    the nearest existing folder above it, where it will be created, must accept a new file. The check
    creates and deletes a temporary file there (root or ACLs make permission bits unreliable) and
    creates nothing else: a refused start leaves no empty run folder behind.
    Raises RunError "<folder>: not writable (<reason>)".
    """
    folder = Path(path)
    while not os.path.isdir(folder) and folder.parent != folder:
        folder = folder.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".sentitune-write-check.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise RunError(f"{folder}: not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(name)


def ensure_writable_file(path: Path) -> None:
    """`path` will be written as a file: refuse a folder there now (not after the model loaded and the
    reviews were classified), and check that its folder accepts a new file (ensure_writable_dir)."""
    if Path(path).is_dir():
        raise RunError(f"{path}: is a folder; give the name of a file to write")
    ensure_writable_dir(Path(path).parent)
