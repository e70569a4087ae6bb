"""CSV and JSONL files of text + label, with errors that name the file, line and field."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sentitune.config import BINARY_LABELS
from sentitune.data.records import Example
from sentitune.data.targets import check_span, locate
from sentitune.errors import DataError

_LABEL_WORDS = {"pos": 1, "positive": 1, "neg": 0, "negative": 0, "1": 1, "0": 0, "true": 1, "false": 0}


def parse_label(value: Any, where: str, labels: list[str] | None = None) -> int:
    """Binary (the default labels): 0/1, true/false, pos/neg/positive/negative. Other label sets: a
    class name (any case) or its index. Anything else is an error naming the accepted values."""
    if labels is not None and [x.lower() for x in labels] != BINARY_LABELS:
        lowered = [x.lower() for x in labels]
        if isinstance(value, str) and value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        if not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = None
            if number is not None and number == int(number) and 0 <= number < len(labels):
                return int(number)
        raise DataError(f"{where}: label {value!r} is not one of {', '.join(labels)} (data.labels) or "
                        f"0..{len(labels) - 1}")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _LABEL_WORDS:
        return _LABEL_WORDS[value.strip().lower()]
    raise DataError(f"{where}: label {value!r} is not one of 0, 1, pos, neg, positive, negative, true, false")


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs from a .csv/.tsv or .jsonl/.json file."""
    suffix = path.suffix.lower()
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark that would rename the first column.
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with handle:
        try:
            if suffix in (".jsonl", ".json", ".ndjson"):
                for line_no, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
                    yield line_no, row
            elif suffix in (".csv", ".tsv"):
                # No 128 KiB cap per field: data.max_chars is the limit, with a message naming the review.
                csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
                reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                _ = reader.fieldnames  # read the header, so line_num is where the first row starts
                start = reader.line_num + 1
                for row in reader:
                    yield start, row  # the row's first line: a quoted review may run over several
                    start = reader.line_num + 1
            else:
                raise DataError(f"{path}: unknown file type {suffix!r} (expected .csv, .tsv or .jsonl)")
        except UnicodeDecodeError:
            raise DataError(not_utf8(path)) from None
        except csv.Error as e:
            raise DataError(f"{path}: malformed CSV ({e})") from None


def not_utf8(path: Path) -> str:
    """Where the first invalid byte is: the decoder's own offset counts from the start of a chunk."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return f"{path}:{line}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})"
    return f"{path}: not UTF-8 text"


def read_table(
    path: Path,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    labels: list[str] | None = None,
    target_column: str | None = None,
    offset_columns: tuple[str, str] | None = None,
) -> list[Example]:
    """Examples of a CSV/JSONL file; with `target_column`, target-dependent ones (the target located in
    the text at `offset_columns` when given, else at its first occurrence)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    examples = []
    needed = [text_column, label_column, *([id_column] if id_column else []), *([target_column] if target_column
                                                                                  else []), *(offset_columns or ())]
    for line_no, row in iter_rows(path):
        where = f"{path}:{line_no}"
        for column in needed:
            if column not in row or row[column] is None:
                raise DataError(f"{where}: missing field {column!r} (fields: {', '.join(map(str, row))})")
        text = row[text_column]
        if not isinstance(text, str):
            raise DataError(f"{where}: field {text_column!r} is not text: {text!r}")
        label = parse_label(row[label_column], f"{where}: field {label_column!r}", labels)
        rid = str(row[id_column]) if id_column else f"{path.name}:{line_no}"
        target, span = None, None
        if target_column:
            target = str(row[target_column]).strip()
            if not target:
                raise DataError(f"{where}: field {target_column!r} is empty")
            if offset_columns:
                span = check_span(text, target, row[offset_columns[0]], row[offset_columns[1]], where)
            else:
                span = locate(text, target, f"{where}: field {target_column!r}")
            target = text[span[0]:span[1]]
        examples.append(Example(id=rid, text=text, label=label, target=target, span=span))
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples
