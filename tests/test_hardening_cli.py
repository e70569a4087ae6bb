"""CLI regression tests of the hardening issue: what the user sees when a CSV, a run or the disk is hostile.

* CSV formula injection: text cells (reviews, user-given ids) that a spreadsheet would run as a
  formula are written with a leading single quote, in `predict --output` and in predictions.csv.
* A run whose model/ folder is incomplete or damaged, an unwritable --out/--output/run folder, an
  unreadable --config, a full disk, and memory or OS errors that reach the CLI: each is one line on
  stderr naming the file, exit 2, never a traceback; unwritable folders are found before any work.

Two tiny runs of the packaged `gpt2-tiny-random` (real GPT-2 tokenizer, random weights) train once per
module on 40 synthetic reviews; each case breaks its own copy. Root ignores file modes, so permission
cases run in one subprocess without CAP_DAC_OVERRIDE (setpriv); the full disk is a 200 KiB tmpfs.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

MODEL = ["--model", "gpt2-tiny-random", "--max-length", "32", "--epochs", "1", "--no-progress"]
ID_PREFIXES = "=+-@"  # every review id starts with a character spreadsheets treat as a formula






def write_reviews(path: Path, n: int = 40) -> Path:
    """Synthetic labelled reviews whose ids (user-given, through data.id_column) all look like formulas."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i in range(n):
            text = f"Review {i}: {'a fine, moving' if i % 2 else 'a dull, clumsy'} film."
            w.writerow([f"{ID_PREFIXES[i % 4]}{i}", text, i % 2])
    return path


def train_argv(source: Path, out: Path, method: str = "lora") -> list[str]:
    return ["train", *MODEL, "--method", method, "--source", str(source), "--set", "data.id_column=id",
            "--out", str(out)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening")


@pytest.fixture(scope="module")
def reviews(workdir: Path) -> Path:
    return write_reviews(workdir / "reviews.csv")


@pytest.fixture(scope="module")
def runs(workdir: Path, reviews: Path) -> dict[str, Path]:
    """A LoRA run (weights "adapter") and a full fine-tune (weights "backbone"), trained once."""
    made = {}
    for method in ("lora", "full"):
        code, _, err = run_cli(train_argv(reviews, workdir / f"run-{method}", method))
        assert code == 0, err
        made[method] = workdir / f"run-{method}"
    return made


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest))


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
def predicted_rows(runs: dict[str, Path], workdir: Path) -> dict[str, dict[str, str]]:
    """`predict --output` once for every review of CELLS: review -> its CSV row."""
    out = workdir / "predicted.csv"
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


# --------------------------------------------------------------------------- damaged model folders


@dataclass
class Broken:
    """`breaks(model_dir)` damages a copy of run `run`; the error line must name `names(model_dir)`."""

    id: str
    run: str
    breaks: Callable[[Path], None]
    names: Callable[[Path], list[str]]
    command: str = "predict"


def _remove(*names: str) -> Callable[[Path], None]:
    def breaks(model: Path) -> None:
        for name in names:
            shutil.rmtree(model / name) if (model / name).is_dir() else (model / name).unlink()

    return breaks


def _truncate(model: Path) -> None:
    head = model / "head.safetensors"
    head.write_bytes(head.read_bytes()[:100])


def _edit_meta(edit: Callable[[dict[str, object]], str]) -> Callable[[Path], None]:
    def breaks(model: Path) -> None:
        meta = model / "sentitune.json"
        meta.write_text(edit(json.loads(meta.read_text())))

    return breaks


def _incomplete(name: str) -> Callable[[Path], list[str]]:
    return lambda model: [f"{model / name}: missing", "the run's model folder is incomplete"]


BROKEN = [
    Broken("head-missing", "lora", _remove("head.safetensors"), _incomplete("head.safetensors")),
    Broken("adapter-missing", "lora", _remove("adapter"), _incomplete("adapter")),
    Broken("backbone-missing", "full", _remove("backbone"), _incomplete("backbone")),
    Broken("tokenizer-missing", "lora", _remove("tokenizer.json", "tokenizer_config.json"),
           _incomplete("tokenizer_config.json")),
    Broken("tokenizer-vocabulary-missing", "lora", _remove("tokenizer.json"), _incomplete("tokenizer.json")),
    Broken("head-truncated", "lora", _truncate, lambda m: [f"{m / 'head.safetensors'}: cannot load", "damaged"]),
    Broken("meta-not-json", "lora", _edit_meta(lambda meta: '{"base": "gpt2-tiny-random", '),
           lambda m: [f"{m / 'sentitune.json'}: not valid JSON"]),
    Broken("meta-missing-key", "lora", _edit_meta(lambda meta: json.dumps({k: v for k, v in meta.items()
                                                                           if k != "weights"})),
           lambda m: [f"{m / 'sentitune.json'}: missing key 'weights'"]),
    Broken("evaluate-head-missing", "lora", _remove("head.safetensors"), _incomplete("head.safetensors"), "evaluate"),
    Broken("evaluate-backbone-missing", "full", _remove("backbone"), _incomplete("backbone"), "evaluate"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_damaged_model_folder_is_one_line(case: Broken, runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs[case.run], tmp_path / "run")
    case.breaks(run / "model")
    argv = (["predict", str(run), "A fine, moving film."] if case.command == "predict"
            else ["evaluate", str(run), "--no-baseline", "--no-progress"])
    code, _, err = run_cli(argv)
    assert_one_line_error(code, err, case.names(run / "model"))


def test_damaged_run_is_one_line_from_a_real_process(runs: dict[str, Path], tmp_path: Path) -> None:
    """`python -m sentitune.cli` as users run it: library warnings reach stderr too (in-process, pytest hides them)."""
    run = copy_run(runs["lora"], tmp_path / "run")
    _truncate(run / "model")  # fails after the LoRA adapter loaded, which warns
    done = subprocess.run([sys.executable, "-m", "sentitune.cli", "predict", str(run), "A fine film."],
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(done.returncode, done.stderr, [f"{run / 'model' / 'head.safetensors'}: cannot load"])


# --------------------------------------------------------------------------- permissions (one subprocess)

# Runs each case's argv through sentitune.cli.main in a process that obeys file modes; a Python
# exception escaping main is recorded as its traceback (exit 1), as `python -m sentitune.cli` shows it.
DRIVER = r"""
import json, os, sys
probe = os.path.join(sys.argv[2], "probe")
try:
    open(probe, "w").close()
    os.unlink(probe)
    print(json.dumps({"probe": "writable"}))
    sys.exit(0)
except PermissionError:
    pass
sys.path.insert(0, sys.argv[3])  # tests/: the same run_cli as the in-process tests
from conftest import run_cli
results = {case: [code, err] for case, argv in json.loads(sys.argv[1]).items() for code, _, err in [run_cli(argv)]}
print(json.dumps(results))
"""

PERMISSION_CASES = ["train-out-read-only", "train-out-missing-parents-read-only", "zero-shot-out-read-only",
                    "predict-output-read-only", "evaluate-run-read-only", "config-unreadable"]


@pytest.fixture(scope="module")
def permission_results(runs: dict[str, Path], workdir: Path) -> dict[str, tuple[int, str, list[str]]]:
    """case -> (exit code, stderr, strings the error line must contain), all cases in one subprocess.

    Train and zero-shot get data that does not exist: only a check made before reading the data can
    name the unwritable folder. Predict and evaluate use a real run (unchecked, the model loaded first).
    """
    base = workdir / "permissions"
    read_only = base / "read-only"
    read_only.mkdir(parents=True)
    ro_run = copy_run(runs["lora"], base / "read-only-run")
    config = base / "cfg.yaml"
    config.write_text("name: unreadable\n")
    absent = str(base / "absent.csv")
    cases = {
        "train-out-read-only": (["train", *MODEL, "--source", absent, "--out", str(read_only / "run")],
                                [f"{read_only}: not writable (Permission denied)"]),
        "train-out-missing-parents-read-only": (
            ["train", *MODEL, "--source", absent, "--out", str(read_only / "a" / "b" / "run")],
            [f"{read_only}: not writable (Permission denied)"]),
        "zero-shot-out-read-only": (["zero-shot", "--model", "gpt2-tiny-random", "--data", str(base / "absent.tar.gz"),
                                     "--out", str(read_only / "zs"), "--no-progress"],
                                    [f"{read_only}: not writable (Permission denied)"]),
        "predict-output-read-only": (["predict", str(runs["lora"]), "A fine film.", "--output",
                                      str(read_only / "out.csv")], [f"{read_only}: not writable (Permission denied)"]),
        "evaluate-run-read-only": (["evaluate", str(ro_run), "--no-baseline", "--no-progress"],
                                   [f"{ro_run}: not writable (Permission denied)"]),
        "config-unreadable": (["train", "--config", str(config), "--out", str(base / "cfg-run")],
                              [f"{config}: cannot read (Permission denied)"]),
    }
    assert list(cases) == PERMISSION_CASES
    command = [sys.executable, "-c", DRIVER, json.dumps({k: v[0] for k, v in cases.items()}), str(read_only),
               str(Path(__file__).parent)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores file modes and setpriv (util-linux) is missing to drop CAP_DAC_OVERRIDE")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    read_only.chmod(0o555)
    ro_run.chmod(0o555)
    config.chmod(0o000)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        read_only.chmod(0o755)
        ro_run.chmod(0o755)
        config.chmod(0o644)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip(f"cannot run the CLI without file-mode overrides: {done.stderr.strip()[-300:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    if results == {"probe": "writable"}:
        pytest.skip("a 0555 folder is still writable here (file modes are not enforced)")
    assert not (read_only / "run").exists() and not (read_only / "a").exists()  # a refused start leaves nothing
    return {case: (*results[case], cases[case][1]) for case in cases}


@pytest.mark.parametrize("case", PERMISSION_CASES)
def test_permission_problem_is_one_line(permission_results: dict[str, tuple[int, str, list[str]]], case: str) -> None:
    code, err, expect = permission_results[case]
    assert_one_line_error(code, err, expect)


# --------------------------------------------------------------------------- a full disk


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


# --------------------------------------------------------------------------- errors that reach the CLI


@dataclass
class Slipped:
    """`command` fails with `raised` from deep inside; the one error line must contain `expect`, not `absent`."""

    id: str
    command: str
    raised: BaseException
    expect: list[str]
    absent: str | None = None


RUN_STARTED = "run-started"  # train, failing once the run directory has its config.yaml

SLIPPED = [
    Slipped("memory-error", "predict", MemoryError(), ["out of memory during `sentitune predict`"]),
    Slipped("permission-error", "predict", PermissionError(errno.EACCES, "Permission denied", "{tmp}/x/model.bin"),
            ["{tmp}/x/model.bin: permission denied"]),
    Slipped("read-only-file-system", "predict", OSError(errno.EROFS, "Read-only file system", "{tmp}/x/log.jsonl"),
            ["{tmp}/x/log.jsonl: read-only file system"]),
    Slipped("disk-full-in-temporary-file", "predict",
            OSError(errno.ENOSPC, "No space left on device", "{tmp}/out/.out.csv.k2j4x_9a.tmp"),
            ["{tmp}/out/out.csv: no space left on device (disk full); free some space"], "--resume"),
    Slipped("disk-quota", "predict", OSError(errno.EDQUOT, "Disk quota exceeded"),
            ["{tmp}/out/out.csv: disk quota exceeded"]),
    Slipped("disk-full-from-rust-writer", "predict", Exception("No space left on device (os error 28)"),
            ["{tmp}/out/out.csv: no space left on device (disk full)"]),
    Slipped("train-disk-full-before-the-run-started", "train", OSError(errno.ENOSPC, "No space left on device"),
            ["{tmp}/run: no space left on device (disk full); free some space"], "--resume"),
    Slipped("train-disk-full-once-the-run-started", RUN_STARTED, OSError(errno.ENOSPC, "No space left on device"),
            ["{tmp}/run: no space left on device (disk full); the run can continue with --resume"]),
]


@pytest.mark.parametrize("case", SLIPPED, ids=[c.id for c in SLIPPED])
def test_os_and_memory_errors_are_one_line(case: Slipped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever no library check catches still reaches the user as one line (exit 2), not a traceback."""
    raised = case.raised
    if isinstance(raised, OSError) and raised.filename:
        raised = type(raised)(raised.errno, raised.strerror, raised.filename.format(tmp=tmp_path))

    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    if case.command == "predict":
        monkeypatch.setattr("sentitune.inference.Predictor", fail)  # predict loads the run through it
        argv = ["predict", str(tmp_path), "A fine film.", "--output", str(tmp_path / "out" / "out.csv")]
    else:
        monkeypatch.setattr("sentitune.train.train", fail)
        argv = ["train", "--model", "gpt2-tiny-random", "--out", str(tmp_path / "run")]
        if case.command == RUN_STARTED:
            (tmp_path / "run").mkdir()
            (tmp_path / "run" / "config.yaml").write_text("name: started\n")
    code, _, err = run_cli(argv)
    line = assert_one_line_error(code, err, [x.format(tmp=tmp_path) for x in case.expect])
    assert case.absent is None or case.absent not in line
