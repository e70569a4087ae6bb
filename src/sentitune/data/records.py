"""The record every source produces, so nothing downstream knows where a review came from."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    id: str  # IMDb: "train/pos/123_9"; CSV: the id column or "file:line"
    text: str
    label: int  # index into data.labels (binary default: 0 negative, 1 positive)
    rating: int | None = None  # IMDb star rating from the file name
    target: str | None = None  # target-dependent sentiment: the words the label is about
    span: tuple[int, int] | None = None  # the target's character offsets in `text` (text[start:end] == target)


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, never silent
    warnings: list[str] = field(default_factory=list)  # settings the data could not honour, e.g. a train_size too big
    # every training example after the validation carve-out, before data.train_size subsampled it: what a
    # cheap model (an ensemble's n-gram half) may train on while the transformer trains on `train`
    pool: list[Example] = field(default_factory=list)
    unlabeled: list[Example] = field(default_factory=list)  # data.unlabeled: what a self-training teacher labels
    pseudo: dict[str, int] = field(default_factory=dict)  # split -> how many of its examples a teacher labelled

    def summary(self) -> dict[str, dict[str, int]]:
        out = {}
        for name in ("train", "validation", "test"):
            counts = Counter(e.label for e in getattr(self, name))
            out[name] = {"n": len(getattr(self, name)), **{f"label_{k}": v for k, v in sorted(counts.items())}}
            if self.pseudo.get(name):  # self-training: the teacher's labels are counted apart from the user's
                out[name]["pseudo"] = self.pseudo[name]
        return out
