"""Precision: what `auto` picks, and a saved run that predicts the same numbers anywhere.

Training may autocast to bf16 (where the CPU has it); inference is fp32 by default, because bf16
results change with the batch a review shares and with the CPU's kernels (docs/RELIABILITY.md,
benchmarks/precision_consistency.py). These tests hold the fp32 default to 1e-5 across batch
neighbours and across CPUs; the second CPU is this one with its vector kernels capped at AVX2
(no AVX-512, no bf16 instructions), as on an older or smaller machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from sentitune.config import ConfigError
from sentitune.inference import Predictor, predict_texts
from sentitune.precision import ENV, cpu_has_bf16, name, pick_precision

pytestmark = pytest.mark.numeric  # run again under the other precision by `make test`

CPU = torch.device("cpu")
# Environment of a CPU without AVX-512 or bf16: ATen's vector kernels, MKL's and oneDNN's all capped at AVX2.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.mark.parametrize(("env", "expected"), [("fp32", "fp32"), ("bf16", "bf16"), ("FP32", "fp32")])
def test_environment_variable_sets_what_auto_picks(monkeypatch: pytest.MonkeyPatch, env: str, expected: str) -> None:
    monkeypatch.setenv(ENV, env)
    assert name(pick_precision("auto", CPU)) == expected
    assert name(pick_precision("fp32", CPU)) == "fp32"  # an explicit choice wins over the variable
    assert name(pick_precision("bf16", CPU)) == "bf16"


def test_auto_follows_the_hardware_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert name(pick_precision("auto", CPU)) == ("bf16" if cpu_has_bf16() else "fp32")
    monkeypatch.setenv(ENV, "auto")
    assert name(pick_precision("auto", CPU)) == ("bf16" if cpu_has_bf16() else "fp32")


def test_bad_precision_settings_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "fp8")
    with pytest.raises(ConfigError, match=r"\$SENTITUNE_PRECISION: 'fp8' is not one of fp32, bf16, auto"):
        pick_precision("auto", CPU)
    with pytest.raises(ConfigError, match="fp16 is for GPUs"):
        pick_precision("fp16", CPU)


def test_eval_precision_is_a_validated_config_field(imdb_slice_archive: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(["train", "--data", str(imdb_slice_archive), "--set", "train.eval_precision=fp64",
                            "--out", str(tmp_path / "run")])
    assert code == 2 and "train.eval_precision" in err and "fp64" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def reviews(imdb_full: dict) -> list[str]:
    """24 test reviews of every length: 8 short, 8 medium, 8 long (longer than the run's 64 tokens)."""
    by_length = sorted(imdb_full["test"], key=lambda e: (len(e.text), e.id))
    picks = by_length[100:108] + by_length[12_000:12_008] + by_length[-300:-292]
    return [e.text.replace("\n", " ") for e in picks]


def test_predict_is_the_same_whatever_shares_the_batch(minilm_lora_run: tuple[Path, str], reviews: list[str]) -> None:
    predictor = Predictor(minilm_lora_run[0])
    together = [p.prob_positive for p in predictor.predict(reviews, batch_size=32)]
    alone = [predictor.predict([r])[0].prob_positive for r in reviews]
    reversed_pairs = [p.prob_positive for p in predictor.predict(reviews[::-1], batch_size=2)][::-1]
    assert max(together) - min(together) > 1e-2  # a model whose scores differ between reviews
    assert together == pytest.approx(alone, abs=1e-5)
    assert together == pytest.approx(reversed_pairs, abs=1e-5)


def test_predict_is_the_same_on_a_cpu_without_avx512(
    minilm_lora_run: tuple[Path, str], reviews: list[str], tmp_path: Path
) -> None:
    """The CLI in a process whose kernels are capped at AVX2 gives this process's numbers within 1e-5."""
    run, _ = minilm_lora_run
    file = tmp_path / "reviews.txt"
    file.write_text("\n".join(reviews) + "\n", encoding="utf-8")
    here = [p.prob_positive for p in predict_texts(run, reviews)]
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY} | AVX2_ONLY
    proc = subprocess.run([sys.executable, "-m", "sentitune.cli", "predict", str(run), "--file", str(file), "--json"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    there = [json.loads(line)["prob_positive"] for line in proc.stdout.splitlines()]
    assert len(there) == len(reviews)
    assert there == pytest.approx(here, abs=1e-5)  # --json rounds to 6 decimals


def test_the_saved_precision_is_what_predict_uses(
    minilm_lora_run: tuple[Path, str], reviews: list[str], tmp_path: Path
) -> None:
    """sentitune.json records the inference precision; predict follows it unless told otherwise."""
    run = tmp_path / "run"
    shutil.copytree(minilm_lora_run[0], run)
    meta_file = run / "model" / "sentitune.json"
    assert json.loads(meta_file.read_text())["precision"] == "fp32"
    few = reviews[:2] + reviews[-2:]
    fp32 = [p.prob_positive for p in predict_texts(run, few)]
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(meta | {"precision": "bf16"}))
    recorded = [p.prob_positive for p in predict_texts(run, few)]
    assert recorded == [p.prob_positive for p in predict_texts(run, few, precision="bf16")]
    assert recorded != fp32  # bf16 rounds differently: the recorded choice was applied
    assert [p.prob_positive for p in predict_texts(run, few, precision="fp32")] == fp32
    del meta["precision"]  # a run saved before the choice was recorded: fp32
    meta_file.write_text(json.dumps(meta))
    assert [p.prob_positive for p in predict_texts(run, few)] == fp32

