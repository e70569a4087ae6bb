"""Data-parallel training: `accelerate launch --num_processes 2 -m sentitune train` (gloo, 2 CPU processes)
against one process on the same data, a killed 2-process run resumed with 2 processes, and what is refused.

The model is a 2-block random GPT-2 with the real GPT-2 tokenizer and every dropout at 0, trained in fp32, so
one process and two differ only in the order floats are summed: the stated tolerance is 1e-5 on every
probability and validation loss. The splits are odd-sized (33 training reviews in batches of 8: the last
batch has one review, so one process holds none of it; 33 validation and 45 test reviews), the top block
trains on a cached prefix, and gradients accumulate over 2 micro-batches.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from sentitune.models.packaged import gpt2_tiny_random

TOLERANCE = 1e-5
# Steps: 5 micro-batches an epoch, accumulated in pairs -> 3 optimizer steps an epoch, 6 in all; a
# checkpoint at each epoch's validation (steps 3 and 6). The killed run dies inside step 5.
KILL_AT_STEP = 5

KILLER = textwrap.dedent('''
    """`sentitune ARGS`, each process killing itself (SIGKILL) inside its optimizer step number FAULT_AT."""
    import os, signal, sys

    import torch

    at, calls = int(os.environ["FAULT_AT"]), {"n": 0}
    step = torch.optim.AdamW.step

    def faulty_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *args, **kwargs)

    torch.optim.AdamW.step = faulty_step
    from sentitune.cli import main

    sys.exit(main(sys.argv[1:]))
''')


@pytest.fixture(scope="module")
def no_dropout_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged random GPT-2 with its dropouts at 0: a local model folder (a model spec like any other)."""
    folder = tmp_path_factory.mktemp("gpt2-no-dropout") / "model"
    shutil.copytree(gpt2_tiny_random(), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update({k: 0.0 for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout")})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def train_args(model: Path, archive: Path, out: Path, cache: Path) -> list[str]:
    settings = [f"model.spec={model}", "model.dropout=0", "method.name=partial", "method.freeze_layers=1",
                "data.max_length=48", "data.train_size=33", "data.val_size=33", "data.eval_size=45",
                "train.batch_size=8", "train.eval_batch_size=4", "train.grad_accum=2", "train.epochs=2",
                "train.lr=0.001", "train.precision=fp32", "train.eval_precision=fp32", "train.feature_cache=true",
                f"train.feature_cache_dir={cache}", "train.seed=3", "name=ddp"]
    return ["train", "--data", str(archive), *[a for s in settings for a in ("--set", s)], "--out", str(out),
            "--no-progress"]


def launch(args: list[str], script: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Two gloo processes on this machine through Accelerate's launcher (no GPU, whatever the machine has)."""
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *script, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **(env or {})})


def predictions(run: Path) -> dict[str, float]:
    with (run / "predictions.csv").open(newline="") as f:
        return {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}


def test_two_processes_equal_one_and_resume_with_two(tmp_path: Path, no_dropout_gpt2: Path,
                                                      imdb_slice_archive: Path) -> None:
    cache = tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    code, out, err = run_cli(train_args(no_dropout_gpt2, imdb_slice_archive, one, cache))
    assert code == 0, err

    # Two processes, killed (every process) inside step 5: the checkpoint of the first epoch's validation stays.
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    killed = launch(train_args(no_dropout_gpt2, imdb_slice_archive, two, cache), [str(killer)],
                    {"FAULT_AT": str(KILL_AT_STEP)})
    assert killed.returncode != 0, killed.stdout
    assert (two / "checkpoint.pt").is_file() and not (two / "metrics.json").exists()

    # Resuming with another number of processes is refused in one line, and changes nothing.
    before = (two / "checkpoint.pt").read_bytes()
    code, _, err = run_cli([*train_args(no_dropout_gpt2, imdb_slice_archive, two, cache), "--resume"])
    assert_one_line_error(code, err, ["written by 2 process(es)", "resume with the same number", "has 1"])
    assert (two / "checkpoint.pt").read_bytes() == before

    resumed = launch([*train_args(no_dropout_gpt2, imdb_slice_archive, two, cache), "--resume"],
                     ["-m", "sentitune"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("test set, 45 reviews") == 1  # only the main process prints
    assert "resuming: phase 1, step 3" in resumed.stdout

    m1, m2 = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    # Every test review scored exactly once (45 is odd: no review dropped or duplicated by the gather).
    p1, p2 = predictions(one), predictions(two)
    assert len(p2) == m2["test"]["n"] == 45 and set(p1) == set(p2)
    assert max(abs(p1[k] - p2[k]) for k in p1) < TOLERANCE
    assert m1["test"]["confusion_matrix"] == m2["test"]["confusion_matrix"]
    assert m1["test"]["accuracy"] == m2["test"]["accuracy"]
    assert len(m1["validation"]) == len(m2["validation"]) == 2
    for a, b in zip(m1["validation"], m2["validation"], strict=True):
        assert (a["phase"], a["step"]) == (b["phase"], b["step"])
        assert abs(a["loss"] - b["loss"]) < TOLERANCE
    # The same tokens counted (every process's share of every batch), the same files written, once.
    assert m1["train_tokens"] == m2["train_tokens"]
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert not (two / "checkpoint.pt").exists()
    # The training-loss records: all reviews of each logging window, whatever process held them.
    losses = [[r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
               if r["event"] == "train"] for run in (one, two)]
    assert len(losses[0]) == len(losses[1]) and all(abs(a - b) < TOLERANCE for a, b in zip(*losses, strict=True))


def test_what_a_launch_does_not_run_is_refused(monkeypatch: pytest.MonkeyPatch, imdb_slice_archive: Path,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as the launcher sets it in each process it starts
    code, _, err = run_cli(["evaluate", str(tmp_path / "run")])
    assert_one_line_error(code, err, ["`sentitune evaluate` runs in one process", "without accelerate launch"])
    code, _, err = run_cli(["train", "--method", "tfidf", "--data", str(imdb_slice_archive), "--out",
                            str(tmp_path / "tfidf")])
    assert_one_line_error(code, err, ["method.name=tfidf", "one process"])
    assert not (tmp_path / "tfidf").exists()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    code, _, err = run_cli(["train", "--method", "lora", "--data", str(imdb_slice_archive), "--out",
                            str(tmp_path / "fsdp")])
    assert_one_line_error(code, err, ["FSDP", "data parallel (DDP)"])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_weight_the_loss_to_the_full_batch_mean(world: int) -> None:
    """Whatever the batch size, the shares partition the batch, and the weighted losses averaged over the
    processes (what DDP does to their gradients) are the full batch's mean loss."""
    from sentitune.distributed import Cluster

    for n in range(1, 10):
        batch = list(range(100, 100 + n))
        loss = {i: float(i % 7) for i in batch}
        shares = [Cluster(rank, world).share(batch) for rank in range(world)]
        assert [i for part, w in shares if w for i in part] == batch
        averaged = sum(w * sum(loss[i] for i in part) / len(part) for part, w in shares) / world
        assert averaged == pytest.approx(sum(loss.values()) / n)
        dealt = [Cluster(rank, world).batches([[i] for i in range(n)]) for rank in range(world)]
        assert sorted(b[0] for d in dealt for b in d) == list(range(n))  # each evaluation batch exactly once
