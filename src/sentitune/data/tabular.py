"""CSV and JSONL files of text + label, with errors that name the file, line and field."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sentitune.config import BINARY_LABELS
from sentitune.data.records import Example
from sentitune.data.targets import check_span, locate
from sentitune.errors import DataError

CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}  # a table file's suffix -> its field delimiter
TABLE_SUFFIXES = (*CSV_DELIMITERS, ".jsonl", ".json", ".ndjson")  # every table file the readers take

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
            # a finite whole number only: int() of nan or inf raises (a "nan" cell of a spreadsheet export)
            if number is not None and math.isfinite(number) and number == int(number) and 0 <= number < len(labels):
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
    """(line number, row) pairs from a .csv/.tsv or .jsonl/.json file.

    Strict: a row is never silently reshaped. A duplicate column (which one would be read?), a row with more
    fields than the header, and a quote that is not closed where a field ends (it would swallow the next
    rows into one review) are errors naming the line where the row starts.
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unknown file type {suffix!r} (expected .csv, .tsv or .jsonl)")
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark that would rename the first column.
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with handle:
        try:
            if suffix in CSV_DELIMITERS:
                yield from _csv_rows(path, handle, CSV_DELIMITERS[suffix])
            else:
                yield from _json_rows(path, handle)
        except UnicodeDecodeError:
            raise DataError(not_utf8(path)) from None


def _json_rows(path: Path, handle: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
        except _DuplicateKey as e:
            raise DataError(f"{path}:{line_no}: field {e.args[0]!r} appears twice in the object") from None
        except RecursionError:
            raise DataError(f"{path}:{line_no}: not valid JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        yield line_no, row


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys without a word; which text was meant is the user's call."""
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise _DuplicateKey(key)
        row[key] = value
    return row


def _csv_rows(path: Path, handle: Any, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # No 128 KiB cap per field: data.max_chars is the limit, with a message naming the review.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
    start = 1
    try:
        header = reader.fieldnames or []  # reads the header, so line_num is where the first row starts
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise DataError(f"{path}:1: column {name!r} appears twice in the header (which one to read?)")
            seen.add(name)
        start = reader.line_num + 1
        for row in reader:
            if None in row:  # DictReader's restkey: fields beyond the header's
                raise DataError(f"{path}:{start}: {len(header) + len(row[None])} fields, the header has "
                                f"{len(header)} ({', '.join(header)}); quote a field that contains {delimiter!r}")
            yield start, row  # the row's first line: a quoted review may run over several
            start = reader.line_num + 1
    except csv.Error as e:
        why = ("a quoted field opened here is never closed" if "unexpected end of data" in str(e)
               else f"{e}: a quote inside a quoted field is written twice (\"\")")
        raise DataError(f"{path}:{start}: malformed CSV ({why})") from None


def _merged_rows(text: str, columns: list[str], text_column: str, label_column: str, labels: list[str] | None,
                 delimiter: str) -> bool:
    """Whether a quoted review over several lines is two rows glued by an unclosed quote (`"good film,1` then
    `next review",0`): its first line holds the rest of a row, the fields after the text ending in a label.
    A review over several lines is valid CSV; one whose first line ends in `,<label>` is taken for a merge."""
    if "\n" not in text or text_column not in columns:
        return False
    after = columns[columns.index(text_column):]
    if label_column not in after:
        return False
    parts = next(csv.reader([text.split("\n", 1)[0].rstrip("\r")], delimiter=delimiter))
    if len(parts) != len(after):
        return False
    try:
        parse_label(parts[after.index(label_column)], "", labels)
    except DataError:
        return False
    return True


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
    delimiter = CSV_DELIMITERS.get(path.suffix.lower())  # None: JSON lines, where no quote can merge rows
    for line_no, row in iter_rows(path):
        where = f"{path}:{line_no}"
        for column in needed:
            if column not in row or row[column] is None:
                raise DataError(f"{where}: missing field {column!r} (fields: {', '.join(map(str, row))})")
        text = row[text_column]
        if not isinstance(text, str):
            raise DataError(f"{where}: field {text_column!r} is not text: {text!r}")
        label = parse_label(row[label_column], f"{where}: field {label_column!r}", labels)
        if delimiter and _merged_rows(text, list(row), text_column, label_column, labels, delimiter):
            first = text.split("\n", 1)[0]
            raise DataError(f"{where}: malformed CSV (field {text_column!r} runs over {text.count(chr(10)) + 1} lines "
                            f"and its first line reads as a whole row, {first[:60]!r}: a quote opened there closes "
                            "only on a later line, merging rows into one review)")
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
