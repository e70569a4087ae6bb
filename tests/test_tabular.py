"""CSV, TSV and JSONL files of text + label (sentitune.data.tabular): configurable columns and label words, a BOM,
and every malformed table an error naming the file, line and field (through `read_table`, and through the real
CLI: exit 2, one stderr line, no run folder left); strict reading refuses broken quoting only, never what CSV
allows. Tables are synthetic: their content does not matter, their shape does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import THREE_CLASSES as THREE
from conftest import assert_one_line_error, class_rows, run_cli, tfidf_argv, write_csv

from sentitune.data.records import Example
from sentitune.data.tabular import read_table
from sentitune.errors import DataError


def test_csv_with_configurable_columns_and_label_words(tmp_path: Path) -> None:
    f = tmp_path / "reviews.csv"
    f.write_text('review,sentiment,rid\n"Loved it, truly.",positive,r1\nMeh.,neg,r2\n'
                 '"Line one\nline two",POS,r3\nBad.,0,r4\nGood.,true,r5\n', encoding="utf-8")
    out = read_table(f, text_column="review", label_column="sentiment", id_column="rid")
    assert out == [Example("r1", "Loved it, truly.", 1), Example("r2", "Meh.", 0),
                   Example("r3", "Line one\nline two", 1), Example("r4", "Bad.", 0), Example("r5", "Good.", 1)]
    default_ids = read_table(f, text_column="review", label_column="sentiment")
    assert default_ids[0].id == "reviews.csv:2"


def test_tsv_and_excel_bom(tmp_path: Path) -> None:
    tsv = tmp_path / "r.tsv"
    tsv.write_text("text\tlabel\nGood, really.\t1\nBad.\tnegative\n", encoding="utf-8")
    assert [(e.text, e.label) for e in read_table(tsv)] == [("Good, really.", 1), ("Bad.", 0)]
    bom = tmp_path / "excel.csv"
    bom.write_text("text,label\nFine.,pos\n", encoding="utf-8-sig")  # spreadsheet exports start with a BOM
    assert [(e.text, e.label) for e in read_table(bom)] == [("Fine.", 1)]


def test_jsonl_with_configurable_columns(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    rows = [{"body": "Superb.", "y": 1, "n": 10}, {"body": "Dire.", "y": "negative", "n": 11},
            {"body": "Ok", "y": False}]
    f.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    out = read_table(f, text_column="body", label_column="y")
    assert [(e.id, e.text, e.label) for e in out] == [("r.jsonl:1", "Superb.", 1), ("r.jsonl:2", "Dire.", 0),
                                                       ("r.jsonl:4", "Ok", 0)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "text,label\nGood.,1\nBad.,maybe\n", r"a.csv:3: field 'label': label 'maybe' is not one of"),
        ("b.csv", "body,label\nGood.,1\n", r"b.csv:2: missing field 'text' \(fields: body, label\)"),
        ("c.csv", "text,label\nGood.\n", r"c.csv:2: missing field 'label'"),
        ("d.jsonl", '{"text": "x", "label": 1}\n{"text": "y", \n', r"d.jsonl:2: not valid JSON"),
        ("e.jsonl", '["x", 1]\n', r"e.jsonl:1: expected a JSON object, got list"),
        ("f.jsonl", '{"text": 5, "label": 1}\n', r"f.jsonl:1: field 'text' is not text"),
        ("g.csv", "text,label\n", r"g.csv: no rows"),
        ("h.xml", "<x/>", r"h.xml: unknown file type '.xml'"),
    ],
)
def test_table_errors_name_file_line_and_field(tmp_path: Path, name: str, content: str, message: str) -> None:
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(DataError, match=message):
        read_table(f)


def test_table_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin.csv"
    f.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(DataError, match=r"latin.csv:2: not UTF-8"):
        read_table(f)


# ------------------------------------------------------------------------------- hostile tables


@pytest.mark.parametrize("cell", ["nan", "inf", "-inf", "1e400"])
def test_1_a_non_finite_label_of_three_classes_is_one_line(cell: str, tmp_path: Path) -> None:
    rows = class_rows(6, ["0", "1", "2"])
    rows[4][1] = cell  # the data line 6
    source = write_csv(tmp_path / "three.csv", ["text", "label"], rows)
    code, _, err = run_cli(tfidf_argv(source, tmp_path / "run", THREE))
    assert_one_line_error(code, err, [f"{source}:6", f"label {cell!r}", "negative, neutral, positive"])
    assert not (tmp_path / "run").exists()


def test_8_a_duplicate_column_is_an_error_not_the_second_column(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "dup.csv", ["text", "text", "label"],
                       [[f"first {i}", f"second {i}", i % 2] for i in range(20)])
    code, _, err = run_cli(tfidf_argv(source, tmp_path / "run", ["negative", "positive"]))
    assert_one_line_error(code, err, [f"{source}:1", "column 'text' appears twice"])
    assert not (tmp_path / "run").exists()


def test_a_duplicate_key_of_a_jsonl_row_is_an_error(tmp_path: Path) -> None:
    from sentitune.data.tabular import read_table
    from sentitune.errors import DataError

    source = tmp_path / "dup.jsonl"
    source.write_text('{"text": "a", "label": 1}\n{"text": "b", "text": "c", "label": 0}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dup.jsonl:2: field 'text' appears twice"):
        read_table(source)


def test_a_csv_row_with_extra_fields_is_an_error(tmp_path: Path) -> None:
    rows = class_rows(10, ["0", "1"])
    source = write_csv(tmp_path / "extra.csv", ["text", "label"], rows)
    lines = source.read_text().splitlines()
    lines[3] = "a,1,extra,more"  # the third data row
    source.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(tfidf_argv(source, tmp_path / "run", ["negative", "positive"]))
    assert_one_line_error(code, err, [f"{source}:4", "4 fields, the header has 2"])


@pytest.mark.parametrize("closed", [True, False], ids=["closed-on-the-next-line", "never-closed"])
def test_an_unterminated_quote_does_not_merge_rows(closed: bool, tmp_path: Path) -> None:
    """201 data lines must not become 200 rows: a quote opened mid-file is an error naming its row's line."""
    lines = ["text,label"] + [f"review number {i} of the file,{i % 2}" for i in range(201)]
    lines[100] = '"an opened quote,1'
    if closed:
        lines[101] = 'the next line",0'  # what turned 201 lines into 200 rows
    source = tmp_path / "quote.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run_cli(tfidf_argv(source, tmp_path / "run", ["negative", "positive"]))
    assert_one_line_error(code, err, [f"{source}:101", "malformed CSV"])


def test_quotes_that_csv_allows_still_read(tmp_path: Path) -> None:
    """Strict parsing refuses broken quoting only: a quoted review over two lines, doubled quotes and a bare
    quote inside an unquoted field read as before."""
    from sentitune.data.tabular import read_table

    source = tmp_path / "ok.csv"
    source.write_text('text,label\n"two\nlines",1\n"said ""hi""",0\nhe said "hi" loudly,1\n', encoding="utf-8")
    assert [(e.text, e.label) for e in read_table(source)] == [("two\nlines", 1), ('said "hi"', 0),
                                                                ('he said "hi" loudly', 1)]
