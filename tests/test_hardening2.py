"""The second hostile pass: each case it found, through the real CLI, as the user met it.

Numbered cases are the issue's table; the others are its "smaller ones". Every test here failed on the code
before its fix. The tiny settings `T` of the issue: 48 training reviews, 32 test reviews, 64 tokens, no baseline,
16 validation reviews. Tables are synthetic (their content does not matter, their shape does); IMDb reviews come
from the real archive's slice; models are the packaged `gpt2-tiny-random` (real GPT-2 tokenizer) and real folders
saved from it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, assert_one_line_error, run_cli

T = ["--train-size", "48", "--eval-size", "32", "--max-length", "64", "--no-progress", "--set", "train.baseline=false",
     "--set", "data.val_size=16"]
FORMULA = "=cmd|' /C calc'!A0"
THREE = ["negative", "neutral", "positive"]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def class_rows(n: int, labels: list[str]) -> list[list[object]]:
    """n rows per class, each class with its own words, so an n-gram model separates them."""
    words = ["dull clumsy boring", "plain ordinary average", "moving superb wonderful", "odd strange weird"]
    return [[f"review {i} {words[k]} film {i % 7}", label] for i in range(n) for k, label in enumerate(labels)]


def tfidf_argv(source: Path, out: Path, labels: list[str]) -> list[str]:
    return ["train", "--method", "tfidf", "--source", str(source), "--out", str(out), "--no-progress",
            "--set", f"data.labels={json.dumps(labels)}", "--set", "method.tfidf.min_df=1", "--set", "data.val_size=0"]


# ------------------------------------------------------------------------------------------ 1, 8: tables


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


# ------------------------------------------------------------------------------------------ 2, 12: settings


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_2_a_seed_out_of_range_is_one_line(seed: str, tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--model", "gpt2-tiny-random", *T, "--seed", seed, "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, ["train.seed", "0..4294967295", seed])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("sets", "expect"), [
    (["--truncation", "head+tail", "--set", "data.head_tokens=500"], ["data.head_tokens", "0..63", "500"]),
    (["--truncation", "head", "--set", "data.head_tokens=16"], ["data.head_tokens", "head+tail"]),
], ids=["longer-than-max-length", "without-head+tail"])
def test_12_head_tokens_that_do_nothing_are_refused(sets: list[str], expect: list[str], tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--model", "gpt2-tiny-random", *T, *sets, "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, expect)
    assert not (tmp_path / "r").exists()


def test_12_head_tokens_must_leave_room_for_the_tail_after_special_tokens(imdb_slice_archive: Path,
                                                                           tmp_path: Path) -> None:
    """MiniLM adds [CLS] and [SEP]: of 64 tokens a review gets 62, so head_tokens 62 leaves no tail."""
    code, _, err = run_cli(["train", "--model", "minilm", "--method", "probe", "--data", str(imdb_slice_archive), *T,
                            "--truncation", "head+tail", "--set", "data.head_tokens=62", "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, ["data.head_tokens: 62 leaves no tokens for the tail", "at most 61"])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["..", "../escaped", "/tmp/elsewhere", "a/b", " padded "])
def test_a_run_name_is_one_folder_under_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": name, "method": {"name": "tfidf"}}))
    code, _, err = run_cli(["train", "--config", str(config), "--print-config"])
    assert_one_line_error(code, err, ["name:", "not a plain folder name"])


def test_config_given_a_folder_says_so(tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--config", str(tmp_path), "--print-config"])
    assert_one_line_error(code, err, [f"{tmp_path}: is a folder", "YAML file"])


# ------------------------------------------------------------------------------------------ 3, 4: models


def test_3_a_model_folder_without_tokenizer_files_is_one_line_before_the_run(imdb_slice_archive: Path,
                                                                              tmp_path: Path) -> None:
    from sentitune.models.registry import resolve

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    packaged = Path(resolve("gpt2-tiny-random").source)
    for name in ("config.json", "model.safetensors"):  # a transformers model folder, saved without its tokenizer
        shutil.copy(packaged / name, folder / name)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--model", str(folder), "--data", str(imdb_slice_archive), *T, "--out", str(run)])
    assert_one_line_error(code, err, [str(folder), "tokenizer is empty"])
    assert not run.exists()


def test_4_tfidf_on_texts_without_ngrams_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "ab.csv", ["text", "label"], [["a" if i % 2 else "b", i % 2] for i in range(40)])
    run = tmp_path / "run"
    code, _, err = run_cli(tfidf_argv(source, run, ["negative", "positive"]))
    assert_one_line_error(code, err, ["tfidf", "no n-gram", "token_pattern"])
    assert not run.exists()


# ------------------------------------------------------------------------------------------ 5, 6, 9, 10: predict


@pytest.fixture(scope="module")
def formula_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class tfidf run whose class names hold a formula and a `|`: predicts in milliseconds."""
    folder = tmp_path_factory.mktemp("formula")
    source = write_csv(folder / "three.csv", ["text", "label"], class_rows(10, ["0", "1", "2"]))
    run = folder / "run"
    code, _, err = run_cli(tfidf_argv(source, run, ["neg|ative", "<b>neutral</b>", FORMULA]))
    assert code == 0, err
    return run


def test_5_predict_output_that_is_a_folder_is_refused_before_loading(tmp_path: Path) -> None:
    """Before loading: the run given does not even exist, and the error is about --output."""
    folder = tmp_path / "existing"
    folder.mkdir()
    code, _, err = run_cli(["predict", str(tmp_path / "no-such-run"), "A film.", "--output", str(folder)])
    assert_one_line_error(code, err, [f"{folder}: is a folder"])


def test_6_class_names_in_predict_output_are_neutralised(formula_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    texts = ["review moving superb wonderful film", "review odd strange weird film"]
    code, _, err = run_cli(["predict", str(formula_run), *texts, "--output", str(out)])
    assert code == 0, err
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["text", "label", "prob_neg|ative", "prob_<b>neutral</b>", f"prob_{FORMULA}", "line"]
    assert rows[1][1] == "'" + FORMULA  # the class the model gives the third class's words
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes("\n".join(lines).encode() + b"\n")
    return path


def test_9_blank_lines_are_counted_and_rows_name_their_line(formula_run: Path, tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "r.txt", ["moving superb film", "", "   ", "dull clumsy film"])
    out = tmp_path / "p.csv"
    code, stdout, err = run_cli(["predict", str(formula_run), "--file", str(reviews), "--output", str(out)])
    assert code == 0, err
    assert "wrote 2 predictions" in stdout and "2 blank lines skipped" in stdout, stdout
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["text"], r["line"]) for r in rows] == [("moving superb film", "1"), ("dull clumsy film", "4")]
    code, stdout, err = run_cli(["predict", str(formula_run), "--file", str(reviews), "--json"])
    assert code == 0 and "2 blank lines skipped" in err, err
    assert [json.loads(line)["line"] for line in stdout.splitlines()] == [1, 4]


def test_10_a_bare_carriage_return_stays_inside_its_line(formula_run: Path, tmp_path: Path) -> None:
    lines = ["one", "two", "three", "four", "five", "six", "eleven\rtwelve"]
    reviews = write_lines(tmp_path / "cr.txt", lines)
    out = tmp_path / "p.csv"
    code, stdout, err = run_cli(["predict", str(formula_run), "--file", str(reviews), "--output", str(out)])
    assert code == 0, err
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and [r["text"] for r in rows] == lines and rows[6]["line"] == "7"
    from sentitune.inference import count_reviews

    assert count_reviews(reviews) == 7  # the progress bar's total agrees with the reader


def test_predict_takes_texts_after_its_flags(formula_run: Path) -> None:
    code, stdout, err = run_cli(["predict", str(formula_run), "--json", "moving superb film", "--batch-size", "4",
                                 "odd strange film", "--", "-5 stars: dull clumsy"])
    assert code == 0, err
    assert [json.loads(line)["text"] for line in stdout.splitlines()] == [
        "moving superb film", "odd strange film", "-5 stars: dull clumsy"]
    code, _, err = run_cli(["predict", str(formula_run), "a film", "--no-such-flag"])
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err


# ------------------------------------------------------------------------------------------ 7, 13: bench results


@pytest.fixture(scope="module")
def hostile_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class tfidf bench whose class names and published source hold `|`, HTML and a formula."""
    folder = tmp_path_factory.mktemp("hostile-bench")
    source = write_csv(folder / "three.csv", ["text", "label"], class_rows(10, ["0", "1", "2"]))
    bench = folder / "bench.yaml"
    bench.write_text(yaml.safe_dump({
        "name": "hostile",
        "set": [f"data.source={source}", "method.name=tfidf", "method.tfidf.min_df=1", "data.val_size=0",
                f"data.labels={json.dumps(['neg|ative', '<script>alert(1)</script>', FORMULA])}"],
        "rows": [{"name": "tfidf",
                  "published": {"accuracy": 0.5, "source": f"{FORMULA} <img src=x onerror=alert(1)>"}}],
    }))
    out = folder / "out"
    code, _, err = run_cli(["bench", str(bench), "--out", str(out), "--no-progress"])
    assert code == 0, err
    return out


def test_7_published_source_in_results_csv_is_neutralised(hostile_bench: Path) -> None:
    with (hostile_bench / "results.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["published_source"].startswith("'" + FORMULA)
    assert not any(v.startswith(("=", "+", "@")) for row in rows for v in [*row.values(), *row.keys()])


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


# ------------------------------------------------------------------------------------------ 11: LoRA folders


def _hash_seeds_with_different_set_orders(names: list[str]) -> tuple[str, str]:
    """Two PYTHONHASHSEEDs under which list(set(names)) comes out in different orders (what PEFT writes)."""
    seen: dict[str, str] = {}
    for seed in range(1, 40):
        order = subprocess.run([sys.executable, "-c", f"print(list(set({names!r})))"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout
        if seen and order not in seen:
            return next(iter(seen.values())), str(seed)
        seen.setdefault(order, str(seed))
    pytest.fail(f"no two hash seeds order {names} differently")


def test_11_two_runs_of_one_lora_config_write_the_same_adapter_config(imdb_slice_archive: Path,
                                                                       tmp_path: Path) -> None:
    """Two processes (string hashing differs between them, as between any two runs) write identical folders."""
    targets = ["c_attn", "c_proj", "c_fc"]
    seeds = _hash_seeds_with_different_set_orders(targets)
    configs = []
    for i, seed in enumerate(seeds):
        run = tmp_path / f"run{i}"
        argv = [sys.executable, "-m", "sentitune", "train", "--model", "gpt2-tiny-random", "--method", "lora",
                "--data", str(imdb_slice_archive), "--train-size", "16", "--eval-size", "8", "--max-length", "32",
                "--no-progress", "--set", "train.baseline=false", "--set", "data.val_size=8",
                "--set", f"method.lora.target_modules=[{','.join(targets)}]", "--out", str(run)]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr[-2000:]
        configs.append((run / "model" / "adapter" / "adapter_config.json").read_bytes())
    assert configs[0] == configs[1]
    assert json.loads(configs[0])["target_modules"] == sorted(targets)
