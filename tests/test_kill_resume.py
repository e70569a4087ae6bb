"""Hard kills (SIGKILL) and Ctrl-C (SIGINT) at chosen points of a real training run, then --resume.

Each killed run is a `sentitune train` subprocess started through a small wrapper that kills its own
process at the N-th optimizer step or at the N-th rename of a given output file (the temporary file
is complete and fsynced, the rename has not happened: the worst moment of an atomic write). The
resumed run must end with the same metrics, predictions and weights, bit for bit, as an
uninterrupted run with the same seed. The fault ids are what `benchmarks/reliability.py` counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from sentitune.cli import main

pytestmark = pytest.mark.numeric  # run again under the other precision by `make test`

# 48 training reviews in batches of 8: 6 optimizer steps an epoch, 12 in all; a checkpoint every 2
# steps and at each validation (steps 6 and 12), so kills land before, between and on checkpoints.
STEPS = 12
TIMINGS = {"train_seconds", "train_tokens_per_second", "wall_seconds", "epoch_seconds", "test_seconds",
           "cost_seconds", "feature_cache_found_seconds"}

WRAPPER = textwrap.dedent('''
    """Run `sentitune` and kill this very process at one chosen point (FAULT, FAULT_AT)."""
    import os, signal, sys, time
    from pathlib import Path

    import torch

    fault, at = os.environ["FAULT"], int(os.environ["FAULT_AT"])
    calls = {"n": 0}

    def due() -> bool:
        calls["n"] += 1
        return calls["n"] == at

    if fault == "step":
        step = torch.optim.AdamW.step

        def faulty_step(self, *args, **kwargs):
            if due():  # inside the update: gradients computed, weights not yet changed
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, *args, **kwargs)

        torch.optim.AdamW.step = faulty_step
    elif fault == "sigint":  # wait where Ctrl-C is not deferred: between backward and the step
        clip = torch.nn.utils.clip_grad_norm_

        def waiting_clip(*args, **kwargs):
            if due():
                Path(os.environ["FAULT_MARK"]).write_text("waiting for SIGINT")
                time.sleep(120)  # the test sends a real SIGINT (Ctrl-C) from outside
            return clip(*args, **kwargs)

        torch.nn.utils.clip_grad_norm_ = waiting_clip
    else:  # FAULT names an output file: die after its temp file is written, before the rename
        replace = os.replace

        def faulty_replace(src, dst, *args, **kwargs):
            if Path(dst).name == fault and due():
                os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst, *args, **kwargs)

        os.replace = faulty_replace

    from sentitune.cli import main

    sys.exit(main(sys.argv[1:]))
''')


@dataclass
class Kill:
    """A kill (or a chain of kills, each resumed by the next) applied to one run."""

    id: str
    faults: list[tuple[str, int]]  # (FAULT, FAULT_AT) per process; each later one runs with --resume
    checkpoint_step: int | None  # optimizer step of the checkpoint the (last) kill leaves; None: no checkpoint
    returncodes: list[int] = field(default_factory=list)
    stderr: str = ""


KILLS = [
    Kill("sigkill-at-step-1-before-any-checkpoint", [("step", 1)], None),
    Kill("sigkill-at-step-9-second-epoch", [("step", 9)], 8),
    Kill("sigkill-during-checkpoint-write", [("checkpoint.pt", 3)], 4),
    Kill("sigkill-during-final-model-save", [("model", 1)], STEPS),
    Kill("sigkill-during-final-metrics-write", [("metrics.json", 1)], STEPS),
    Kill("sigkill-twice-step-3-then-resumed-step-4", [("step", 3), ("step", 4)], 4),
]
SIGINT = Kill("sigint-ctrl-c-at-step-7", [("sigint", 7)], 6)


def train_args(archive: Path, out: Path) -> list[str]:
    return ["train", "--model", "gpt2-tiny-random", "--method", "lora", "--data", str(archive),
            "--max-length", "32", "--train-size", "48", "--val-size", "8", "--eval-size", "16",
            "--batch-size", "8", "--epochs", "2", "--set", "train.checkpoint_every=2",
            "--set", "train.threads=1", "--no-progress", "--out", str(out)]


def run_killed(kill: Kill, archive: Path, root: Path, wrapper: Path) -> Kill:
    """Run the faulty processes of `kill` one after the other in root/<id>; record how each ended."""
    out = root / kill.id
    for i, (fault, at) in enumerate(kill.faults):
        env = {**os.environ, "FAULT": fault, "FAULT_AT": str(at), "FAULT_MARK": str(root / f"{kill.id}.mark")}
        argv = [sys.executable, str(wrapper), *train_args(archive, out), *(["--resume"] if i else [])]
        # SIGINT back to its default: a shell starts background jobs (CI, nohup) with Ctrl-C ignored.
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if fault == "sigint":
            mark = root / f"{kill.id}.mark"
            deadline = time.monotonic() + 240
            while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        try:
            _, kill.stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, kill.stderr = proc.communicate()
        kill.returncodes.append(proc.returncode)
    return kill


@pytest.fixture(scope="module")
def archive(imdb_slice_archive: Path) -> Path:
    return imdb_slice_archive


@pytest.fixture(scope="module")
def killed(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Kill]]:
    """Every faulty run, three processes at a time (the kills are independent runs)."""
    root = tmp_path_factory.mktemp("killed")
    wrapper = root / "faulty_sentitune.py"
    wrapper.write_text(WRAPPER)
    kills = [Kill(k.id, list(k.faults), k.checkpoint_step) for k in [*KILLS, SIGINT]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(lambda k: run_killed(k, archive, root, wrapper), kills))
    return root, {k.id: k for k in done}


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    code = main(argv)
    capsys.readouterr()
    return code


@pytest.fixture(scope="module")
def reference(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_args(archive, out)) == 0
    return out


def outcome(run: Path) -> dict[str, Any]:
    """What a run produced, minus wall-clock timings: metrics, predictions, trained weights."""
    from safetensors.torch import load_file

    metrics = json.loads((run / "metrics.json").read_text())
    weights = {}
    for file in ("head.safetensors", "adapter/adapter_model.safetensors"):
        weights |= {f"{file}:{k}": v for k, v in load_file(str(run / "model" / file)).items()}
    return {
        "metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
        "predictions": (run / "predictions.csv").read_bytes(),
        "weights": weights,
    }


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = outcome(run), outcome(reference)
    assert got["metrics"] == want["metrics"]
    assert got["predictions"] == want["predictions"]
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        assert torch.equal(got["weights"][name], tensor), f"{name} differs"
    assert not (run / "checkpoint.pt").exists(), "a finished run keeps no checkpoint"


@pytest.mark.parametrize("kill", KILLS, ids=[k.id for k in KILLS])
def test_sigkill_then_resume_reproduces_uninterrupted_run(
    kill: Kill, killed: tuple[Path, dict[str, Kill]], reference: Path, archive: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, results = killed
    result, run = results[kill.id], root / kill.id
    assert result.returncodes == [-signal.SIGKILL] * len(kill.faults), result.stderr
    assert not (run / "metrics.json").exists(), "a killed run must not look finished"
    checkpoint = run / "checkpoint.pt"
    if kill.checkpoint_step is None:
        assert not checkpoint.exists()
    else:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state"]  # plain values only
        assert state["step"] == kill.checkpoint_step
    if kill.faults[-1][0] == "checkpoint.pt":  # the kill came after the temp file, before the rename
        assert [p.stat().st_size > 0 for p in run.glob(".checkpoint.pt.*.tmp")] == [True]
    assert run_in_process([*train_args(archive, run), "--resume"], capsys) == 0
    assert_same_run(run, reference)


def test_sigint_saves_checkpoint_exits_130_and_resumes(
    killed: tuple[Path, dict[str, Kill]], reference: Path, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, results = killed
    result, run = results[SIGINT.id], root / SIGINT.id
    assert result.returncodes == [130], result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sentitune: interrupted; checkpoint saved in")
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]
    assert state["step"] == SIGINT.checkpoint_step  # the step interrupted half-way is redone, not half-kept
    assert not (run / "metrics.json").exists()
    assert run_in_process([*train_args(archive, run), "--resume"], capsys) == 0
    assert_same_run(run, reference)


def test_same_config_and_seed_reproduce_bit_for_bit(
    reference: Path, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "again"
    assert run_in_process(train_args(archive, again), capsys) == 0
    assert_same_run(again, reference)
