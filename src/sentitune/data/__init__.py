"""Data: sources -> examples -> splits -> token batches."""

from sentitune.data.records import Example, Splits
from sentitune.data.sources import load_splits

__all__ = ["Example", "Splits", "load_splits"]
