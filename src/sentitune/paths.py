"""Where sentitune keeps converted models and downloaded data: $SENTITUNE_CACHE or ~/.cache/sentitune."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("SENTITUNE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "sentitune")
    path = root.expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
