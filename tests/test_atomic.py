"""Files written atomically (sentitune.atomic): a temporary name in the same folder, fsynced, renamed into place,
the folder fsynced after the rename; spreadsheet-safe CSV cells in every CSV sentitune writes; and an OS error
while writing (a full disk) that names the file being written.

* CSV formula injection: text cells (reviews, user-given ids, class names, a bench's published source) that a
  spreadsheet would run as a formula are written with a leading single quote, in `predict --output`,
  predictions.csv, predictions-test.csv and a bench's results.csv; numbers stay numbers.
* A full disk is a 200 KiB tmpfs (root only): training, a checkpoint write, any atomic write and `predict --output`
  that fill it are one line naming the file, exit 2; the last good file survives and no temporary file is left.

The runs are tiny (conftest: `runs`, two runs of the packaged `gpt2-tiny-random` on 40 synthetic reviews whose ids
look like formulas; `formula_run` and `hostile_bench`, TF-IDF on synthetic three-class tables); each case breaks its
own copy.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FORMULA, ID_PREFIXES, assert_one_line_error, copy_run, run_cli, write_formula_id_reviews
from conftest import formula_id_train_argv as train_argv

# --------------------------------------------------------------------------- atomic files and folders


def test_renames_are_followed_by_an_fsync_of_their_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename lives in the folder's entry: without fsyncing the folder a power cut can undo it."""
    from sentitune.atomic import write_text
    from sentitune.models.classifier import SentimentClassifier
    from sentitune.models.registry import load_backbone, load_tokenizer, resolve
    from sentitune.models.saving import save_model

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst, *args, **kwargs)

    source = resolve("gpt2-tiny-random").source
    tokenizer, backbone = load_tokenizer(source), load_backbone(source)
    model = SentimentClassifier(backbone, backbone.config.hidden_size, "last", 2, 0.0)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run = tmp_path / "run"
    write_text(run / "config.yaml", "name: x\n")
    save_model(model, tokenizer, "gpt2-tiny-random", "base", run / "model")
    monkeypatch.undo()

    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    assert [events[i][1] for i in renames] == [str(run / "config.yaml"), str(run / "model")]
    for i in renames:
        assert events[i + 1:i + 2] == [("fsync", str(run.resolve()))], f"no fsync of {run} right after {events[i]}"
    staged = [path for kind, path in events[:renames[1]] if kind == "fsync"]
    assert any(p.endswith("/head.safetensors") for p in staged), "the model's files are fsynced before the rename"


def test_a_cache_folder_another_process_finished_first_is_kept(tmp_path: Path) -> None:
    """atomic_dir(keep_theirs=...): two runs building the same cache key end with one folder, never an error."""
    from sentitune.atomic import atomic_dir

    dest = tmp_path / "key"
    with atomic_dir(dest, keep_theirs="meta.json") as tmp:
        (tmp / "meta.json").write_text("ours")
        dest.mkdir()
        (dest / "meta.json").write_text("theirs")  # the other run renames its folder into place first
    assert (dest / "meta.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["key"], "ours is dropped, no temporary folder left"
    # A folder there that is not a finished one (no meta.json) is not taken for theirs.
    other = tmp_path / "other"
    with pytest.raises(OSError), atomic_dir(other, keep_theirs="meta.json") as tmp:
        (tmp / "meta.json").write_text("ours")
        other.mkdir()
        (other / "half-written.bin").write_text("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "other"]


# --------------------------------------------------------------------------- CSV formula injection


CELLS = [
    ("equals-hyperlink", '=HYPERLINK("http://x","click")', True),
    ("plus", "+1+1", True),
    ("minus", "-2+3", True),
    ("at", "@SUM(A1)", True),
    ("tab", "\t=1+1 after a tab", True),
    ("carriage-return", "\r=1+1 after a carriage return", True),
    ("normal-review", "A fine, moving film; 9/10 = great.", False),
]


@pytest.fixture(scope="module")
def predicted_rows(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """`predict --output` once for every review of CELLS: review -> its CSV row."""
    out = tmp_path_factory.mktemp("predicted") / "predicted.csv"
    texts = [text for _, text, _ in CELLS]  # all after "--": argparse would read "-2+3" as an option
    code, _, err = run_cli(["predict", "--output", str(out), "--", str(runs["lora"]), *texts])
    assert code == 0, err
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(CELLS)
    return {text: row for (_, text, _), row in zip(CELLS, rows, strict=True)}


@pytest.mark.parametrize(("text", "neutralised"), [(t, n) for _, t, n in CELLS], ids=[c[0] for c in CELLS])
def test_predict_output_neutralises_formula_cells(
    predicted_rows: dict[str, dict[str, str]], text: str, neutralised: bool
) -> None:
    row = predicted_rows[text]
    assert row["text"] == ("'" + text if neutralised else text)
    assert row["label"] in ("positive", "negative")
    assert 0.0 <= float(row["prob_positive"]) <= 1.0  # numbers stay numbers


def test_write_csv_guards_every_text_cell_and_leaves_numbers(tmp_path: Path) -> None:
    """The one CSV writer: every text cell (header too) that a spreadsheet would run gets the quote, whatever its
    column; numbers, and text that is a plain number (-0.5, -5), are written as given."""
    from sentitune.atomic import write_csv

    out = tmp_path / "out.csv"
    write_csv(out, ["id", "=score"], iter([["=1+1", "-0.5"], ["-note", -2], ["-5", "-1e-05"], ["@x", "-2+3"]]))
    assert out.read_bytes() == b"id,'=score\r\n'=1+1,-0.5\r\n'-note,-2\r\n-5,-1e-05\r\n'@x,'-2+3\r\n"


@pytest.mark.parametrize("writer", ["train-predictions.csv", "evaluate-predictions-test.csv"])
def test_run_predictions_neutralise_user_given_ids(runs: dict[str, Path], tmp_path: Path, writer: str) -> None:
    """The CSV source's ids all start with = + - or @; predictions.csv must not hand them to a spreadsheet (an
    id that is a plain negative number is no formula)."""
    if writer == "train-predictions.csv":
        path = runs["lora"] / "predictions.csv"
    else:
        run = copy_run(runs["lora"], tmp_path / "run")
        code, _, err = run_cli(["evaluate", str(run), "--no-baseline", "--no-progress"])
        assert code == 0, err
        path = run / "predictions-test.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        if row["id"].lstrip("-").isdigit():  # -14: a plain number, no formula, written as it is
            assert row["id"].startswith("-"), row
            continue
        assert row["id"][0] == "'" and row["id"][1] in ID_PREFIXES, row
        assert row["label"] in ("0", "1") and row["pred"] in ("0", "1")  # numbers are not prefixed
        float(row["prob_positive"])


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


def test_7_published_source_in_results_csv_is_neutralised(hostile_bench: Path) -> None:
    with (hostile_bench / "results.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["published_source"].startswith("'" + FORMULA)
    assert not any(v.startswith(("=", "+", "@")) for row in rows for v in [*row.values(), *row.keys()])


# --------------------------------------------------------------------------- a full disk


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 40 reviews `runs` trains on (their ids look like formulas)."""
    return write_formula_id_reviews(tmp_path_factory.mktemp("reviews") / "reviews.csv")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 KiB tmpfs: a run's tokenizer alone (3.4 MB) does not fit."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill the disk needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_train_disk_full_is_one_line_and_resume_finishes(small_disk: Path, reviews: Path) -> None:
    run = small_disk / "run"
    code, _, err = run_cli(train_argv(reviews, run))
    line = assert_one_line_error(code, err, [str(run), "no space left on device (disk full)"])
    assert "--resume once space is freed" in line
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # space is freed
    code, _, err = run_cli([*train_argv(reviews, run), "--resume"])
    assert code == 0, err
    assert (run / "model" / "head.safetensors").exists() and (run / "metrics.json").exists()


def test_checkpoint_write_on_a_full_disk_is_a_disk_full_error(small_disk: Path) -> None:
    """torch.save reports a full disk as a RuntimeError without errno; the write says ENOSPC and keeps the old file."""
    import torch

    from sentitune.loop import State
    from sentitune.runs import RunDir

    run = RunDir(small_disk / "run")
    small = {"state": State(), "params": {"w": torch.zeros(4)}, "optimizer": {}, "scheduler": {},
             "rng": torch.get_rng_state()}
    run.save_checkpoint(small)
    before = run.checkpoint_path.read_bytes()
    with pytest.raises(OSError) as caught:
        run.save_checkpoint(small | {"params": {"w": torch.zeros(1_000_000)}})  # 4 MB on a 200 KiB disk
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(run.checkpoint_path)
    assert run.checkpoint_path.read_bytes() == before  # the last good checkpoint survives
    assert sorted(f.name for f in run.path.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_a_write_on_a_full_disk_names_the_file(small_disk: Path) -> None:
    """write() and fsync() report a full disk without a file name: the error names the file being written
    (the CLI's line then says which file, not only the run folder)."""
    from sentitune.atomic import atomic_dir, write_text

    target = small_disk / "run" / "metrics.json"
    with pytest.raises(OSError) as caught:
        write_text(target, "x" * 1_000_000)  # 1 MB on a 200 KiB disk
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    folder = small_disk / "run" / "model"
    with pytest.raises(OSError) as caught, atomic_dir(folder) as tmp, (tmp / "weights.bin").open("wb") as f:
        f.write(b"x" * 1_000_000)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder)
    assert not folder.exists() and sorted(p.name for p in (small_disk / "run").iterdir()) == []


def test_predict_output_disk_full_is_one_line(small_disk: Path, runs: dict[str, Path]) -> None:
    with (small_disk / "filler").open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # unbuffered: the write that finds the disk full raises here, not at close
            f.write(b"x" * 4096)
    out = small_disk / "out.csv"
    code, _, err = run_cli(["predict", str(runs["lora"]), "A fine film. " * 2000, "--output", str(out)])
    line = assert_one_line_error(code, err, [str(out), "no space left on device (disk full)"])
    assert "--resume" not in line  # predict has nothing to resume
    assert not out.exists()
