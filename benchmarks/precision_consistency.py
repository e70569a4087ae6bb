"""Does a saved run predict the same numbers everywhere? fp32 vs bf16 inference, measured.

Trains a small MiniLM LoRA run on IMDb, then classifies test reviews with the saved model in fp32
and under bf16 autocast, three ways: all in one batch, each review alone, and (in a child process)
on this CPU with its kernels capped at AVX2, i.e. as on a CPU without AVX-512 and bf16 instructions.
Prints the largest probability differences and the number of flipped labels: why inference is fp32
by default (`train.eval_precision`, sentitune.precision).

    .venv/bin/python benchmarks/precision_consistency.py [--reviews 48] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import AVX2_ONLY, bf16_native


def scores(run: Path, texts: list[str], precision: str) -> dict[str, list[float]]:
    from sentitune.inference import Predictor

    predictor = Predictor(run, precision)
    together = [p.prob_positive for p in predictor.predict(texts, batch_size=32)]
    alone = [predictor.predict([t])[0].prob_positive for t in texts]
    return {"together": together, "alone": alone}


def child(run: Path, texts_file: Path, precision: str) -> None:
    texts = json.loads(texts_file.read_text())
    print(json.dumps(scores(run, texts, precision)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=48, help="test reviews classified")
    parser.add_argument("--train-size", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--data", help="IMDb archive (default: the usual lookup)")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "TEXTS", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return 0

    import torch

    from sentitune.config import load_config
    from sentitune.data.sources import load_splits
    from sentitune.training import train

    overrides = ["model.spec=minilm", "method.name=lora", f"data.train_size={args.train_size}", "data.val_size=32",
                 f"data.eval_size={args.reviews}", f"data.max_length={args.max_length}", "train.lr=0.002",
                 "train.baseline=false"] + ([f"data.path={json.dumps(args.data)}"] if args.data else [])
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        metrics = train(cfg, run)
        texts = [e.text for e in load_splits(cfg.data, cfg.train.seed).test]
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        env = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY} | AVX2_ONLY
        rows = []
        for precision in ("fp32", "bf16"):
            here = scores(run, texts, precision)
            proc = subprocess.run([sys.executable, __file__, "--child", str(run), str(texts_file), precision],
                                  capture_output=True, text=True, env=env, check=True)
            there = json.loads(proc.stdout.splitlines()[-1])

            def gap(a: list[float], b: list[float]) -> tuple[float, int]:
                return max(abs(x - y) for x, y in zip(a, b, strict=True)), sum((x > .5) != (y > .5) for x, y in
                                                                               zip(a, b, strict=True))

            batch, batch_flips = gap(here["together"], here["alone"])
            cpu, cpu_flips = gap(here["together"], there["together"])
            rows.append((precision, batch, batch_flips, cpu, cpu_flips))
    print(f"MiniLM LoRA run: {args.train_size} training reviews, {len(texts)} test reviews, {args.max_length} tokens; "
          f"trained in {metrics['precision']}; this CPU has bf16 instructions: {bf16_native()}; "
          f"torch {torch.__version__}")
    print()
    print("| inference | batch of 32 vs alone: max abs diff | flipped | this CPU vs AVX2-only CPU: max abs diff "
          "| flipped |")
    print("|---|---|---|---|---|")
    for precision, batch, batch_flips, cpu, cpu_flips in rows:
        print(f"| {precision} | {batch:.2e} | {batch_flips} | {cpu:.2e} | {cpu_flips} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
