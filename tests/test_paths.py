"""The up-front checks of sentitune.paths: an output folder that cannot be written (a read-only `--out`,
`predict --output` folder or run folder) and an output file that is a folder are one line on stderr naming it,
exit 2, before any data is read or any model loaded, and nothing is created. An unreadable `--config` is one line too.

Root ignores file modes, so the permission cases run in one subprocess without CAP_DAC_OVERRIDE (setpriv), on a
copy of a tiny LoRA run of the packaged `gpt2-tiny-random` (conftest `runs`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_ONE_EPOCH as MODEL
from conftest import assert_one_line_error, copy_run, run_cli

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
def permission_results(runs: dict[str, Path],
                       tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, list[str]]]:
    """case -> (exit code, stderr, strings the error line must contain), all cases in one subprocess.

    Train and zero-shot get data that does not exist: only a check made before reading the data can
    name the unwritable folder. Predict and evaluate use a real run (unchecked, the model loaded first).
    """
    base = tmp_path_factory.mktemp("permissions")
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


# --------------------------------------------------------------------------- an output file that is a folder


def test_5_predict_output_that_is_a_folder_is_refused_before_loading(tmp_path: Path) -> None:
    """Before loading: the run given does not even exist, and the error is about --output."""
    folder = tmp_path / "existing"
    folder.mkdir()
    code, _, err = run_cli(["predict", str(tmp_path / "no-such-run"), "A film.", "--output", str(folder)])
    assert_one_line_error(code, err, [f"{folder}: is a folder"])
