"""Markdown tables of text we do not control (class names, row names, a published source, search choices).

Why: a `|` in a cell starts a new column and shifts every later one; `<script>` or `<img onerror=...>` is
raw HTML that many Markdown viewers render. Every cell goes through `cell`, so neither can happen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    """One table cell: `<` and `>` as entities (no tag can open; `&` stays readable, as in "Wang & Manning"),
    `\\` and `|` escaped, line breaks as spaces."""
    text = str(value).replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def table(head: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table; every cell, head included, through `cell`."""
    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def duration(seconds: float | None) -> str:
    """Wall-clock time as people read it: 38 s, 7.5 min, 1.2 h."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def number(value: Any, digits: int = 4, style: str = "f") -> str:
    """A number in a table: `digits` decimals (style "f") or significant digits ("g"); blank for None or NaN
    (not measured), a list comma-separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}{style}}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
