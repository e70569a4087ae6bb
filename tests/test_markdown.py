"""Markdown tables of text we do not control (sentitune.markdown): a `|` in a class name, a row name, a published
source or a search choice is escaped, never a new column, and HTML is written as text. Read back from a bench's
results.md (conftest `hostile_bench`: class names and a published source that hold `|`, HTML and a formula) and from
a search's summary.
"""

from __future__ import annotations

from pathlib import Path


def test_13_results_md_tables_escape_pipes_and_html(hostile_bench: Path) -> None:
    text = (hostile_bench / "results.md").read_text(encoding="utf-8")
    assert "<script>" not in text and "<img" not in text and "&lt;script&gt;" in text
    for line in text.splitlines():
        if line.startswith("|"):  # every table row has as many cells as its table's head
            cells = [c for c in _split_row(line)]
            assert len(cells) in _widths(text), line
    assert "neg\\|ative" in text


def _split_row(line: str) -> list[str]:
    """Cells of a Markdown table row: `|` splits, `\\|` does not."""
    cells, current, i = [], "", 1
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            current += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += line[i]
        i += 1
    return cells


def _widths(text: str) -> set[int]:
    return {len(_split_row(line)) for line in text.splitlines() if line.startswith("|---")}


def test_13_search_md_escapes_its_choices() -> None:
    from sentitune.search import markdown

    result = {"search": "s", "metric": "loss", "direction": "minimize", "storage": "sqlite:///x",
              "trials": [{"number": 0, "state": "COMPLETE", "value": 0.5, "run": "trials/t0",
                          "params": {"method.tfidf.token_pattern": r"(?u)\b\w+\b|[!?]"}}], "best": None}
    row = markdown(result).splitlines()[-1]
    assert len(_split_row(row)) == 5, row
