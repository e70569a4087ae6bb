"""One process against N data-parallel processes (accelerate launch, gloo on CPU / NCCL on GPUs) on one config.

Trains the same config twice, `sentitune train` and `accelerate launch --num_processes N -m sentitune train`,
and writes what each took and how far apart their results are into docs/SCALING.md (the `scaling` block):
the machine, training time, tokens/s, test accuracy, and the largest difference of a test probability.

    .venv/bin/python benchmarks/scaling.py [--processes 2] [--out runs/scaling] [--set key=value ...]

On a CPU machine the N processes share its cores (each gets cores / N threads): this measures the cost of
the data-parallel machinery there, not a speed-up; on a machine with N GPUs each process has its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from docs_block import write_block
from machine import bf16_native, cores_used, cpu_name

DOC = Path(__file__).resolve().parents[1] / "docs" / "SCALING.md"
SETTINGS = ["model.spec=minilm", "method.name=partial", "method.freeze_layers=4", "data.train_size=1000",
            "data.val_size=200", "data.eval_size=500", "data.max_length=256", "data.truncation=head+tail",
            "train.epochs=1", "train.lr=3e-4", "train.batch_size=16", "train.baseline=false", "name=scaling"]


def run(command: list[str], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([*command, "--out", str(out), "--no-progress"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open(newline="") as f:
        metrics["_probs"] = {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    sets = [a for s in [*SETTINGS, *args.sets] for a in ("--set", s)]
    bin_dir = Path(sys.executable).parent
    one = run([str(bin_dir / "sentitune"), "train", *sets], args.out / "one")
    launch = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(args.processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sentitune"]
    many = run([*launch, "train", *sets], args.out / "many")
    diffs = [abs(one["_probs"][k] - many["_probs"][k]) for k in one["_probs"]]
    agree = sum((one["_probs"][k] > 0.5) == (many["_probs"][k] > 0.5) for k in one["_probs"]) / len(diffs)
    machine = (f"{cpu_name()}, {cores_used()} cores, bf16 instructions: {bf16_native()}, "
               f"GPUs: {torch.cuda.device_count()}")
    rows = [("1 process", one), (f"{args.processes} processes (DDP)", many)]
    lines = [f"Machine: {machine}. Config: `{' '.join(SETTINGS + args.sets)}`; training precision "
             f"{one['precision']}. Command: `.venv/bin/python benchmarks/scaling.py --processes {args.processes}"
             + "".join(f" --set {s}" for s in args.sets) + "`.", "",
             "| run | training s | tokens/s | test accuracy | test reviews | whole run s |",
             "|---|---|---|---|---|---|"]
    for name, m in rows:
        lines.append(f"| {name} | {m['train_seconds']:.1f} | {m['train_tokens_per_second']:,.0f} | "
                     f"{m['test']['accuracy']:.4f} | {m['test']['n']} | {m['wall_seconds']:.1f} |")
    lines += ["", f"Test probabilities, one process against {args.processes}: largest difference {max(diffs):.2e}, "
              f"mean {sum(diffs) / len(diffs):.2e}; the same decision on {100 * agree:.1f}% of the reviews (each "
              f"review scored once: {len(one['_probs'])} and {len(many['_probs'])}). Each process draws its own "
              "dropout masks, so with dropout the runs agree as two seeds would, not bit for bit; without dropout, "
              "in fp32, they agree within 1e-5 (tests/test_distributed.py).", ""]
    body = "\n".join(lines)
    print(body)
    write_block(DOC, "scaling", body, new_doc="# Scaling out\n")


if __name__ == "__main__":
    main()
