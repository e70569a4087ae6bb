"""Optional dependencies. Training needs torch, transformers, peft and scikit-learn; serving, ONNX, PostgreSQL,
Hugging Face datasets, experiment tracking and GGUF files each come with an extra, so a user who only trains
installs none of them, and a feature whose extra is missing says in one line what to install."""

from __future__ import annotations

import importlib.util

from sentitune.errors import SentituneError

# extra -> the import names it provides (pyproject.toml's [project.optional-dependencies] install them)
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "postgres": ("psycopg",),
    "hub": ("datasets",),
    "tracking": ("mlflow", "tensorboard"),
    "gguf": ("gguf",),
}


class MissingExtra(SentituneError):
    """A feature's optional dependencies are not installed."""


def missing(extra: str, only: tuple[str, ...] | None = None) -> list[str]:
    """The import names of `extra` (or of `only`, a part of it) that are not installed."""
    return [m for m in (only or EXTRAS[extra]) if importlib.util.find_spec(m) is None]


def require(extra: str, feature: str, only: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtra naming `feature` and the pip command, when any module `extra` provides is missing."""
    gone = missing(extra, only)
    if gone:
        raise MissingExtra(f"{feature} needs {', '.join(gone)}: pip install 'sentitune[{extra}]'")
