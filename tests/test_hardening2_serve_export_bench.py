"""Regression tests of the second hostile-testing issue: serve, export and bench.

* `sentitune serve`: a body that is not UTF-8, or JSON nested 100,000 deep, is a 422 with the one-line
  `malformed JSON at character N: ...` error that docs/SERVING.md promises (FastAPI said 400 "There was an
  error parsing the body"), and the server goes on answering.
* `sentitune export --out DIR`: DIR holding an earlier export plus a file of the user's is refused (the
  export replaces its folder whole, so the file would be deleted); an earlier export of either format alone
  is still replaced.
* `sentitune bench`: every row is validated before anything runs, and all the bad rows are named at once,
  on one line; nothing runs and no output folder is created.

One tiny run of the packaged `gpt2-tiny-random` (real GPT-2 tokenizer, random weights, a full fine-tune:
its hf export is exact) trains once per module on 24 synthetic reviews, through the CLI.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import assert_one_line_error, run_cli, write_bench

MODEL = ["--model", "gpt2-tiny-random", "--max-length", "32", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening2")


@pytest.fixture(scope="module")
def reviews(workdir: Path) -> Path:
    """Synthetic labelled reviews, a CSV of text,label."""
    path = workdir / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(24):
            w.writerow([f"Review {i}: {'a fine, moving' if i % 2 else 'a dull, clumsy'} film.", i % 2])
    return path


@pytest.fixture(scope="module")
def run(workdir: Path, reviews: Path) -> Iterator[Path]:
    """A full fine-tune of gpt2-tiny-random (offline: the packaged model), trained once."""
    out = workdir / "run-full"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli(["train", *MODEL, "--method", "full", "--source", str(reviews),
                                "--set", "train.baseline=false", "--out", str(out)])
        assert code == 0, err
        yield out


# ------------------------------------------------------------------------------- serve: hostile bodies


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[str]:
    from sentitune.serve import create_app, running

    with running(create_app(run)) as url:
        yield url


def post_raw(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize(("body", "at"), [
    (b"\xff\xff", 0),
    (b'{"text": "\xff\xfe"}', 10),
    ('{"text": "caf\u00e9 \u2014 '.encode() + b'\xe9t\xe9"}', 17),  # characters, not bytes: \u00e9 and \u2014 before
])
def test_a_body_that_is_not_utf8_is_422_naming_where(server: str, body: bytes, at: int) -> None:
    r = post_raw(server, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith(f"malformed JSON at character {at}: not UTF-8 text"), error
    assert "\n" not in error
    assert post_raw(server, b'{"text": "A fine film."}').status_code == 200  # the server is fine afterwards


def test_json_nested_100000_deep_is_422_naming_where(server: str) -> None:
    from sentitune.serve import MAX_JSON_DEPTH

    deep = 100_000
    in_text = '{"texts": ["[[[[", "' + "{" * deep + '"], "x": '  # brackets in strings do not count
    for body, at in [("[" * deep + "]" * deep, MAX_JSON_DEPTH),  # the bracket one level too deep
                     ('{"text": ' + "[" * deep + "]" * deep + "}", len('{"text": ') + MAX_JSON_DEPTH - 1),
                     (in_text + "[" * deep, len(in_text) + MAX_JSON_DEPTH - 1)]:
        r = post_raw(server, body.encode())
        assert r.status_code == 422, r.text[:300]
        error = r.json()["error"]
        assert error == f"malformed JSON at character {at}: nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    # Brackets inside strings are text, and shallow nesting is an ordinary field error, not "too deep".
    r = post_raw(server, json.dumps({"text": "[" * 5000 + "{" * 5000}).encode())
    assert r.status_code == 200, r.text[:300]
    r = post_raw(server, json.dumps({"texts": [["a fine film"]]}).encode())
    assert r.status_code == 422 and r.json()["error"].startswith("texts[0]: Input should be a valid string"), r.text
    r = post_raw(server, b'{"text": "a fine film"')  # malformed JSON is still json's own message
    assert r.status_code == 422 and r.json()["error"].startswith("malformed JSON at character"), r.text


# --------------------------------------------------------------------- export: never delete the user's files


def test_an_earlier_export_with_a_users_file_is_refused_and_the_file_kept(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    code, _, err = run_cli(["export", str(run), "--format", "hf", "--out", str(out)])
    assert code == 0, err
    (out / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_cli(["export", str(run), "--format", "hf", "--out", str(out)])
    assert_one_line_error(code, err, [f"--out {out}", "(notes.txt)", "would be deleted", "new or empty folder"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == before
    # A folder of the user's inside it counts as well.
    (out / "notes.txt").unlink()
    (out / "mine").mkdir()
    (out / "mine" / "todo.txt").write_text("keep me too")
    code, _, err = run_cli(["export", str(run), "--format", "onnx", "--out", str(out)])
    assert_one_line_error(code, err, ["(mine)", "would be deleted"])
    assert (out / "mine" / "todo.txt").read_text() == "keep me too"


def test_an_earlier_export_of_either_format_is_replaced(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    for fmt in ("hf", "hf", "onnx", "hf"):  # twice the same; over the other format, both ways
        code, _, err = run_cli(["export", str(run), "--format", fmt, "--out", str(out)])
        assert code == 0, f"{fmt}: {err}"
        assert json.loads((out / "sentitune.json").read_text())["format"] == fmt
    assert (out / "config.json").is_file() and not (out / "model.onnx").exists()


def test_every_name_an_export_may_write_is_allowed(tmp_path: Path) -> None:
    """Names the two test exports above do not write (the int8 graph, sharded weights, a sentencepiece
    vocabulary, a chat template...) are an earlier export's too; anything else is not."""
    from sentitune.errors import RunError
    from sentitune.export import check_destination

    out = tmp_path / "earlier"
    out.mkdir()
    (out / "sentitune.json").write_text(json.dumps({"format": "onnx"}))
    names = ["README.md", "model.int8.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "chat_template.jinja", "spiece.model", "vocab.txt", "merges.txt", "config.json",
             "model-00001-of-00002.safetensors", "model.safetensors.index.json", "generation_config.json"]
    for name in names:
        (out / name).write_text("x")
    (out / "additional_chat_templates").mkdir()
    (out / "additional_chat_templates" / "tool_use.jinja").write_text("x")
    check_destination(out)  # no error
    for foreign in (".hidden", "model.onnx.bak", "notes.txt"):
        (out / foreign).write_text("x")
        with pytest.raises(RunError, match=rf"\({foreign.replace('.', '[.]')}\)"):
            check_destination(out)
        (out / foreign).unlink()
    (out / "config.json").unlink()
    (out / "config.json").mkdir()  # an export writes it as a file: a folder of that name is someone else's
    with pytest.raises(RunError, match=r"\(config\.json\)"):
        check_destination(out)


# --------------------------------------------------------------------------------- bench: all bad rows at once


def test_a_bench_with_two_bad_rows_names_both_on_one_line_and_runs_nothing(tmp_path: Path, reviews: Path) -> None:
    path = write_bench(tmp_path, {
        "name": "bad", "set": ["model.spec=gpt2-tiny-random", f"data.source={reviews}", "data.max_length=32"],
        "rows": [{"name": "a", "set": ["method.name=tfidf", "train.lr=-1"]},
                 {"name": "good", "set": ["method.name=tfidf"]},
                 {"name": "c", "set": ["method.name=tfidf", "train.no_such_key=1"]}]})
    out = tmp_path / "out"
    code, stdout, err = run_cli(["bench", str(path), "--out", str(out)])
    line = assert_one_line_error(code, err, [str(path), "2 of 3 rows are invalid", "nothing ran", "row a: ",
                                             "train.lr", "row c: ", "no_such_key"])
    assert line.index("row a: ") < line.index("row c: ") and "row good" not in line
    assert not out.exists() and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml"]


def test_one_bad_row_is_still_named_with_its_error(tmp_path: Path) -> None:
    from sentitune.bench import BenchError, load_bench

    path = write_bench(tmp_path, {"name": "b", "rows": [{"name": "ok"}, {"name": "r", "config": "missing.yaml"}]})
    with pytest.raises(BenchError) as info:
        load_bench(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 1 of 2 rows is invalid, nothing ran: row r: config: ")
    assert "missing.yaml not found" in message and "\n" not in message
