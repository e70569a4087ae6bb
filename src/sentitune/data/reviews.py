"""A file of reviews to classify, read lazily: one per non-blank line (.txt), or a column of a CSV/TSV/JSONL
file. Kept apart from inference.py (which loads a run) so a reader of review files needs no model, and any floor
above data can stream a file's reviews with the line each came from."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sentitune.data.tabular import CSV_DELIMITERS, TABLE_SUFFIXES, iter_rows, not_utf8
from sentitune.errors import DataError


@dataclass(frozen=True)
class Review:
    """One text to classify, its target (target-dependent runs), and where it came from, for errors."""

    text: str
    target: str | None = None
    where: str | None = None  # "reviews.csv:7"; None: "review N", its position in the stream
    line: int | None = None  # 7: the line in its file, written beside its prediction so rows match lines


def iter_reviews(path: Path, text_column: str = "text", target_column: str | None = None) -> ReviewFile:
    """The reviews of a file, read lazily: one per non-blank line (.txt), or a column of a CSV/TSV/JSONL file
    (with each row's target from `target_column`). A missing or unreadable file fails here, at the call; a
    bad row fails when the reader reaches it, naming its line, so a huge file never has to fit in memory."""
    return ReviewFile(path, text_column, target_column)


class ReviewFile(Iterator[Review]):
    """A file's reviews, each with its line; `skipped` counts the blank lines passed over (a .txt file), so
    the caller can say how many, and every prediction carries the line it came from."""

    def __init__(self, path: Path, text_column: str = "text", target_column: str | None = None) -> None:
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: is a folder; give a file of reviews")
        self.path, self.skipped = path, 0
        if path.suffix.lower() in TABLE_SUFFIXES:
            self._reviews = _table_reviews(path, text_column, target_column)
        elif target_column:
            raise DataError(f"{path}: --target-column needs a CSV/TSV/JSONL file, not one review per line")
        else:
            self._reviews = self._line_reviews()

    def __next__(self) -> Review:
        return next(self._reviews)

    def _line_reviews(self) -> Iterator[Review]:
        path = self.path
        try:
            # newline="\n": a line ends at LF (or CRLF) only, as count_reviews counts them; a bare CR (or another
            # Unicode line break) inside a review stays part of it instead of splitting it in two
            handle = path.open(encoding="utf-8-sig", newline="\n")  # a byte-order mark is not part of the review
        except OSError as e:
            raise DataError(f"{path}: cannot open ({e.strerror})") from None
        with handle:
            try:
                for line_no, line in enumerate(handle, start=1):
                    text = line.removesuffix("\n").removesuffix("\r")
                    if text.strip():
                        yield Review(text, where=f"{path}:{line_no}", line=line_no)
                    else:
                        self.skipped += 1
            except UnicodeDecodeError:
                raise DataError(not_utf8(path)) from None


def _table_reviews(path: Path, text_column: str, target_column: str | None) -> Iterator[Review]:
    for line, row in iter_rows(path):
        for column in (text_column, *([target_column] if target_column else [])):
            if row.get(column) is None:  # absent, or a short CSV row: never classify the text "None"
                raise DataError(f"{path}:{line}: missing field {column!r}")
        yield Review(str(row[text_column]), str(row[target_column]) if target_column else None, f"{path}:{line}",
                     line)


def count_reviews(path: Path) -> int | None:
    """How many reviews `iter_reviews` will yield, for a progress bar's total: one quick pass that parses
    nothing but lines (CSV: rows); None when the file cannot be counted (its reading will say why)."""
    try:
        if delimiter := CSV_DELIMITERS.get(path.suffix.lower()):
            with path.open(encoding="utf-8-sig", newline="") as f:
                csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
                rows = sum(1 for row in csv.reader(f, delimiter=delimiter) if row)
                return max(0, rows - 1)  # the header
        with path.open("rb") as g:
            return sum(1 for raw in g if raw.decode("utf-8-sig").strip())
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def read_reviews(path: Path, text_column: str = "text") -> list[str]:
    """One review per line (.txt) or a column of a CSV/JSONL file, as a list (iter_reviews streams them)."""
    return [r.text for r in iter_reviews(path, text_column)]
