"""sentitune: fine-tune and benchmark pretrained transformers for sentiment classification.

The Python API (api.py): `sentitune.train`, `sentitune.bench`, `sentitune.load`, `sentitune.experiment`. They are
loaded on first use, so `import sentitune` (and the CLI's start) stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["BenchResult", "Run", "bench", "experiment", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sentitune import api

        return getattr(api, name)
    raise AttributeError(f"module 'sentitune' has no attribute {name!r}")
