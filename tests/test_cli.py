"""The `sentitune` command (sentitune.cli): flags into a config, `predict`'s reviews anywhere among its flags, and
whatever goes wrong, down to an OS or memory error raised deep inside a command, as one line on stderr with exit
code 2, never a traceback.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import assert_one_line_error, run_cli

from sentitune.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# --------------------------------------------------------------------------- flags


def test_cli_flags_set_config_fields_without_yaml_surprises(capsys: pytest.CaptureFixture[str]) -> None:
    """--print-config shows the resolved config; string flags are taken literally (no YAML bool / comment)."""
    code = main(["train", "--config", str(CONFIGS / "experiments" / "minilm-lora-quickstart.yaml"), "--model", "yes",
                 "--data", "/tmp/a #1.tar.gz", "--train-size", "64", "--lr", "0.001",
                 "--set", "method.lora.r=4", "--print-config"])
    assert code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["spec"] == "yes"
    assert cfg["data"]["path"] == "/tmp/a #1.tar.gz"
    assert cfg["data"]["train_size"] == 64
    assert cfg["train"]["lr"] == 0.001
    assert cfg["method"]["lora"]["r"] == 4
    assert cfg["name"] == "minilm-lora-quickstart"


def test_predict_takes_texts_after_its_flags(formula_run: Path) -> None:
    code, stdout, err = run_cli(["predict", str(formula_run), "--json", "moving superb film", "--batch-size", "4",
                                 "odd strange film", "--", "-5 stars: dull clumsy"])
    assert code == 0, err
    assert [json.loads(line)["text"] for line in stdout.splitlines()] == [
        "moving superb film", "odd strange film", "-5 stars: dull clumsy"]
    code, _, err = run_cli(["predict", str(formula_run), "a film", "--no-such-flag"])
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err


# --------------------------------------------------------------------------- errors that reach the CLI


def test_cli_config_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--set", "train.batch_size=zero", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sentitune: error: train.batch_size")
    assert err.count("\n") == 1 and "Traceback" not in err


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
        monkeypatch.setattr("sentitune.training.train", fail)
        argv = ["train", "--model", "gpt2-tiny-random", "--out", str(tmp_path / "run")]
        if case.command == RUN_STARTED:
            (tmp_path / "run").mkdir()
            (tmp_path / "run" / "config.yaml").write_text("name: started\n")
    code, _, err = run_cli(argv)
    line = assert_one_line_error(code, err, [x.format(tmp=tmp_path) for x in case.expect])
    assert case.absent is None or case.absent not in line
