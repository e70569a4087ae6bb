"""Using a saved run (sentitune.inference): `sentitune predict` over files of any size, read lazily in chunks, each
chunk predicted in batches sorted by token length and written in input order before the next is read; the output CSV
appears only when complete. A review file's rows name their line: blank lines are counted, never silently dropped,
and a bare carriage return stays inside its line.

Real components throughout: the MiniLM LoRA run trained through the CLI (`conftest.minilm_lora_run`), 300 real
IMDb test reviews, a TF-IDF run and a zero-shot run (tiny random GPT-2) trained through the CLI too, and a
three-class TF-IDF run (conftest `formula_run`) for the line numbers.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import THREE_CLASSES, assert_one_line_error, restaurant_config, run_cli, take

from sentitune.config import ConfigError
from sentitune.data.batching import encode, encoding_args
from sentitune.data.records import Example
from sentitune.data.targets import read_target_lines
from sentitune.data.text import clean_text
from sentitune.errors import DataError
from sentitune.evaluation import score
from sentitune.inference import Predictor, Review, count_reviews, iter_reviews, read_reviews

FIXED = 2e-6  # fp32 with other batch neighbours (sentitune.precision: "within 1e-5"; measured 9e-8)


@pytest.fixture(scope="module")
def run_dir(minilm_lora_run: tuple[Path, str]) -> Path:
    return minilm_lora_run[0]


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor(run_dir)


@pytest.fixture(scope="module")
def reviews(imdb_full: dict[str, list[Example]]) -> list[str]:
    """300 real IMDb test reviews (the shortest 150 of each class), shuffled: input order is not length order."""
    texts = [e.text for e in take(imdb_full["test"], 150, shortest=True)]
    random.Random(14).shuffle(texts)
    assert all("\n" not in t and t.strip() for t in texts)
    return texts


@pytest.fixture(scope="module")
def expected(predictor: Predictor, reviews: list[str]) -> list[float]:
    """P(positive) the way predict computed it before streaming: every review encoded at once, one score()."""
    examples = [Example(str(i), clean_text(t), 0) for i, t in enumerate(reviews)]
    scorer = predictor.scorer
    data = encode(examples, scorer.tokenizer, **encoding_args(predictor.cfg.data, False))
    return score(scorer.model, data, 32, scorer.tokenizer.pad_token_id, scorer.dtype)[0].tolist()


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def decided(p: float) -> bool:
    """A probability whose label cannot flip within the fp32 tolerance."""
    return abs(p - 0.5) > 1e-5


# ------------------------------------------------------------------------------------------ library


def test_predict_and_stream_give_the_previous_probabilities_in_input_order(
        predictor: Predictor, reviews: list[str], expected: list[float]) -> None:
    predicted = predictor.predict(reviews)
    assert [p.text for p in predicted] == reviews
    assert [p.prob_positive for p in predicted] == expected  # one chunk: the very same computation
    assert [p.label for p in predicted] == [predictor.labels[int(p > 0.5)] for p in expected]
    small = list(predictor.predict_stream(iter(reviews), chunk_size=7))  # 43 chunks, each one batch
    assert [p.text for p in small] == reviews
    assert [p.prob_positive for p in small] == pytest.approx(expected, abs=FIXED)
    assert [p.label for p, e in zip(small, expected, strict=True) if decided(e)] == \
           [predictor.labels[int(e > 0.5)] for e in expected if decided(e)]


def test_each_chunk_is_batched_longest_first_and_padded_per_batch(
        predictor: Predictor, reviews: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 50 in batches of 10: the model sees 6 runs of 5 batches, each run sorted by token length."""
    seen: list[tuple[int, int]] = []  # (padded width, longest real review) of each batch
    forward = predictor.scorer.model.forward

    def spy(input_ids: torch.Tensor, attention_mask: torch.Tensor, *args: object, **kwargs: object) -> object:
        seen.append((input_ids.shape[1], int(attention_mask.sum(1).max())))
        return forward(input_ids, attention_mask, *args, **kwargs)

    monkeypatch.setattr(predictor.scorer.model, "forward", spy)
    assert len(list(predictor.predict_stream(reviews, batch_size=10, chunk_size=50))) == 300
    assert len(seen) == 30
    assert all(width == longest for width, longest in seen)  # padded to the batch's own longest review
    widths = [w for w, _ in seen]
    for chunk in range(6):
        run = widths[chunk * 5:(chunk + 1) * 5]
        assert run == sorted(run, reverse=True), (chunk, run)
    assert len(set(widths)) > 6  # real, varied lengths: the sort had something to do


def test_the_input_is_read_one_chunk_at_a_time(predictor: Predictor, reviews: list[str]) -> None:
    """A reader that breaks after 20 rows: chunks of 7 mean rows 1-14 were predicted and handed over before
    the third chunk was read, and nothing was read ahead of the chunk being predicted."""
    consumed = 0

    def rows() -> Iterator[str]:
        nonlocal consumed
        for text in reviews[:20]:
            consumed += 1
            yield text
        raise DataError("reader: row 21 is damaged")

    stream = predictor.predict_stream(rows(), batch_size=4, chunk_size=7)
    got = [next(stream)]
    assert consumed == 7  # the first prediction needed the first chunk only
    with pytest.raises(DataError, match="row 21 is damaged"):
        for p in stream:
            got.append(p)
            assert consumed <= 7 * ((len(got) + 6) // 7)  # never more than the chunk being handed over
    assert [p.text for p in got] == reviews[:14]


def test_errors_name_the_review_in_the_stream(predictor: Predictor, reviews: list[str], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^review 9: empty review$"):
        list(predictor.predict_stream([*reviews[:8], "  <br /> ", *reviews[8:]], chunk_size=4))
    table = write_table(tmp_path / "r.csv", ["text"], [[t] for t in reviews[:5]] + [[""]])
    with pytest.raises(DataError, match=r"r.csv:7: empty review$"):
        list(predictor.predict_stream(iter_reviews(table)))
    with pytest.raises(DataError, match="this run classifies whole texts"):
        list(predictor.predict_stream([Review("A fine film.", target="film")]))
    with pytest.raises(ConfigError, match="at least 1"):
        next(predictor.predict_stream(reviews, chunk_size=0))


def test_iter_reviews_streams_each_format_and_counts_them(tmp_path: Path, reviews: list[str]) -> None:
    some = reviews[:12]
    txt = tmp_path / "r.txt"
    txt.write_text("\ufeff" + "\n\n".join(some[:6]) + "\r\n" + "\r\n".join(some[6:]) + "\n\n", encoding="utf-8")
    multi = [f"{t}\nsecond line, \"quoted\"" for t in some]  # quoted CSV fields over two lines
    table = write_table(tmp_path / "r.csv", ["id", "body", "aspect"],
                        [[str(i), t, "film"] for i, t in enumerate(multi)])
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n\n" for t in some), encoding="utf-8")
    assert [r.text for r in iter_reviews(txt)] == some == read_reviews(txt)
    assert [r.text for r in iter_reviews(jsonl)] == some
    rows = list(iter_reviews(table, "body", "aspect"))
    assert [r.text for r in rows] == multi and {r.target for r in rows} == {"film"}
    assert [r.where for r in rows] == [f"{table}:{2 + 2 * i}" for i in range(12)]  # each row's first line
    assert [r.where for r in iter_reviews(txt)][:2] == [f"{txt}:1", f"{txt}:3"]
    for path in (txt, table, jsonl):
        assert count_reviews(path) == 12
    assert isinstance(iter_reviews(txt), Iterator)  # a generator, not a list


# ------------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, reviews: list[str]) -> Path:
    folder = tmp_path_factory.mktemp("stream")
    return write_table(folder / "reviews.csv", ["id", "body"], [[f"r{i}", t] for i, t in enumerate(reviews)])


def test_cli_chunks_give_the_same_csv_as_one_pass(run_dir: Path, table: Path, tmp_path: Path, reviews: list[str],
                                                  expected: list[float]) -> None:
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"
    code, out, err = run_cli(["predict", str(run_dir), "--file", str(table), "--text-column", "body",
                              "--output", str(whole)])
    assert code == 0 and err == "" and f"wrote 300 predictions to {whole}" in out
    code, out, err = run_cli(["predict", str(run_dir), "--file", str(table), "--text-column", "body",
                              "--output", str(chunked), "--chunk-size", "7", "--batch-size", "4"])
    assert code == 0 and err == "" and f"wrote 300 predictions to {chunked}" in out
    rows, again = read_output(whole), read_output(chunked)
    assert list(rows[0]) == ["text", "label", "prob_positive", "line"]
    lines = [int(r["line"]) for r in rows]  # where each row starts in the file: after the header, rising
    assert lines[0] == 2 and lines == sorted(set(lines)) and [r["line"] for r in again] == [r["line"] for r in rows]
    assert [r["text"] for r in rows] == [r["text"] for r in again] == reviews
    assert [r["prob_positive"] for r in rows] == [f"{p:.6f}" for p in expected]  # one chunk: predict's numbers
    assert [float(r["prob_positive"]) for r in again] == pytest.approx(expected, abs=FIXED + 1e-6)  # + 6 digits
    assert [r["label"] for r, e in zip(again, expected, strict=True) if decided(e)] == \
           [r["label"] for r, e in zip(rows, expected, strict=True) if decided(e)]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["chunked.csv", "whole.csv"]  # no temporary file left


def test_cli_json_lines_stream_arguments_then_the_file(run_dir: Path, table: Path, reviews: list[str],
                                                       predictor: Predictor, expected: list[float]) -> None:
    code, out, err = run_cli(["predict", str(run_dir), "A wonderful film.", "--file", str(table), "--text-column",
                              "body", "--json", "--chunk-size", "16"])
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in lines] == ["A wonderful film.", *reviews]
    first = predictor.predict(["A wonderful film."])[0].prob_positive
    assert [r["prob_positive"] for r in lines] == pytest.approx([first, *expected], abs=FIXED + 1e-6)


def test_a_bad_row_mid_file_is_one_line_and_leaves_no_output(run_dir: Path, reviews: list[str],
                                                             tmp_path: Path) -> None:
    rows = [[f"r{i}", t] for i, t in enumerate(reviews[:30])]
    rows[18] = ["r18"]  # the 19th row, on line 20: no text field
    bad = write_table(tmp_path / "bad.csv", ["id", "text"], rows)
    out = tmp_path / "out" / "predictions.csv"
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(bad), "--output", str(out), "--chunk-size", "7"])
    assert_one_line_error(code, err, [f"{bad}:20: missing field 'text'"])
    assert list(out.parent.iterdir()) == []  # two chunks were written to the temporary file, then it went
    out.write_text("yesterday's predictions\n")
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(bad), "--output", str(out), "--chunk-size", "7"])
    assert_one_line_error(code, err, [f"{bad}:20: missing field 'text'"])
    assert out.read_text() == "yesterday's predictions\n" and list(out.parent.iterdir()) == [out]
    code, printed, err = run_cli(["predict", str(run_dir), "--file", str(bad), "--json", "--chunk-size", "7"])
    assert_one_line_error(code, err, [f"{bad}:20: missing field 'text'"])
    assert [json.loads(line)["text"] for line in printed.splitlines()] == reviews[:14]  # chunks 1 and 2, in order
    broken = tmp_path / "broken.txt"
    broken.write_bytes("\n".join(reviews[:29]).encode() + b"\nA caf\xe9 review.\n")
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(broken), "--output", str(out)])
    assert_one_line_error(code, err, [f"{broken}:30: not UTF-8 text"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(empty), "--output", str(tmp_path / "e.csv")])
    assert_one_line_error(code, err, [f"{empty}: no reviews"])
    assert not (tmp_path / "e.csv").exists()
    for option in ("--chunk-size", "--batch-size"):
        code, _, err = run_cli(["predict", str(run_dir), "A fine film.", option, "0"])
        assert_one_line_error(code, err, [option, "expected a whole number >= 1, got '0'"])


def test_streamed_csv_stays_spreadsheet_safe(run_dir: Path, tmp_path: Path) -> None:
    texts = ['=HYPERLINK("http://x","click") a film', "+1 for the cast", "-2 stars, dull", "@everyone see it",
             "A plain review."]
    source = write_table(tmp_path / "in.csv", ["text"], [[t] for t in texts])
    out = tmp_path / "out.csv"
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(source), "--output", str(out), "--chunk-size", "2"])
    assert code == 0, err
    assert [r["text"] for r in read_output(out)] == ["'" + t for t in texts[:4]] + [texts[4]]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_counts_the_file_on_a_terminal_only(run_dir: Path, reviews: list[str], tmp_path: Path) -> None:
    from sentitune.cli import main

    source = write_table(tmp_path / "some.csv", ["body"], [[t] for t in reviews[:20]])
    argv = ["predict", str(run_dir), "A fine film.", "--file", str(source), "--text-column", "body",
            "--output", str(tmp_path / "o.csv"), "--chunk-size", "8"]
    terminal = _Terminal()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(terminal):
        assert main(argv) == 0
    assert "21/21" in terminal.getvalue()  # the argument's review and the file's 20, counted first
    for extra, stderr in ((["--no-progress"], _Terminal()), ([], io.StringIO())):  # asked off; not a terminal
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            assert main([*argv, *extra]) == 0
        assert stderr.getvalue() == ""


# ------------------------------------------------------------------------------ tfidf and zero-shot runs


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory: pytest.TempPathFactory, imdb_slice_archive: Path) -> dict[str, Path]:
    """A TF-IDF run and a zero-shot run (tiny random GPT-2) on the IMDb slice, both through the CLI."""
    folder = tmp_path_factory.mktemp("other-runs")
    common = ["--data", str(imdb_slice_archive), "--eval-size", "10", "--out"]
    made = {"tfidf": folder / "tfidf", "zero-shot": folder / "zs"}
    code, _, err = run_cli(["train", "--method", "tfidf", "--val-size", "20", *common, str(made["tfidf"]),
                            "--set", "method.tfidf.min_df=1", "--no-progress"])
    assert code == 0, err
    code, _, err = run_cli(["zero-shot", "--model", "gpt2-tiny-random", "--review-tokens", "24", *common,
                            str(made["zero-shot"]), "--set", "data.val_size=10", "--set",
                            "zero_shot.calibration_size=6", "--no-progress"])
    assert code == 0, err
    return made


@pytest.mark.parametrize("kind", ["tfidf", "zero-shot"])
def test_tfidf_and_zero_shot_runs_stream_too(kind: str, other_runs: dict[str, Path], reviews: list[str],
                                             tmp_path: Path) -> None:
    some = reviews[:40]
    predicted = Predictor(other_runs[kind]).predict(some)
    source = tmp_path / "r.txt"
    source.write_text("\n".join(some) + "\n", encoding="utf-8")
    code, out, err = run_cli(["predict", str(other_runs[kind]), "--file", str(source), "--json", "--chunk-size", "7",
                              "--batch-size", "4"])
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in lines] == some
    assert [r["prob_positive"] for r in lines] == pytest.approx([round(p.prob_positive, 6) for p in predicted],
                                                                abs=1e-5)


@pytest.fixture(scope="module")
def target_run(tmp_path_factory: pytest.TempPathFactory, restaurants: tuple[Path, Path]) -> Path:
    """TF-IDF on 400 real SemEval-2014 restaurant sentences with their aspects, three classes."""
    folder = tmp_path_factory.mktemp("targets")
    code, _, err = run_cli(["train", "--config", str(restaurant_config(folder, restaurants)), "--method", "tfidf",
                            "--train-size", "400", "--eval-size", "60", "--out", str(folder / "run"), "--no-progress"])
    assert code == 0, err
    return folder / "run"


def test_targets_stream_from_a_column_or_one_for_every_row(target_run: Path, restaurants: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    examples = read_target_lines(restaurants[1], THREE_CLASSES)[:50]
    texts, targets = [e.text for e in examples], [e.target or "" for e in examples]
    predictor = Predictor(target_run)
    predicted = predictor.predict(texts, targets=targets)
    table = write_table(tmp_path / "aspects.csv", ["sentence", "aspect"],
                        [[t, a] for t, a in zip(texts, targets, strict=True)])
    out = tmp_path / "out.csv"
    code, _, err = run_cli(["predict", str(target_run), "--file", str(table), "--text-column", "sentence",
                            "--target-column", "aspect", "--output", str(out), "--chunk-size", "7"])
    assert code == 0, err
    rows = read_output(out)
    assert list(rows[0]) == ["text", "target", "label", *(f"prob_{n}" for n in THREE_CLASSES), "line"]
    assert [(r["text"], r["target"], r["label"]) for r in rows] == [(p.text, p.target, p.label) for p in predicted]
    assert [float(r[f"prob_{n}"]) for r in rows for n in THREE_CLASSES] == \
           pytest.approx([p.probs[n] for p in predicted for n in THREE_CLASSES], abs=1e-6)
    food = [e.text for e in read_target_lines(restaurants[1], THREE_CLASSES) if e.target == "food"][:12]
    source = tmp_path / "food.txt"
    source.write_text("\n".join(food) + "\n", encoding="utf-8")
    code, printed, err = run_cli(["predict", str(target_run), "--file", str(source), "--target", "food", "--json",
                                  "--chunk-size", "5"])
    assert code == 0, err
    got = [json.loads(line) for line in printed.splitlines()]
    again = predictor.predict(food, targets=["food"] * len(food))
    assert [(g["text"], g["target"], g["label"]) for g in got] == [(p.text, "food", p.label) for p in again]
    missing = write_table(tmp_path / "missing.csv", ["sentence", "aspect"],
                          [[t, a] for t, a in zip(texts[:9], targets[:9], strict=True)] + [[texts[9]]])
    code, _, err = run_cli(["predict", str(target_run), "--file", str(missing), "--text-column", "sentence",
                            "--target-column", "aspect", "--output", str(tmp_path / "m.csv"), "--chunk-size", "4"])
    assert_one_line_error(code, err, [f"{missing}:11: missing field 'aspect'"])
    assert not (tmp_path / "m.csv").exists()
    code, _, err = run_cli(["predict", str(target_run), "--file", str(source)])
    assert_one_line_error(code, err, [f"{source}:1: a target-dependent run needs one target per text"])


# ------------------------------------------------------------------------------ review files and their lines


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
