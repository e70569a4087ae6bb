"""Inference throughput: `Predictor.predict` reviews/s at 256 and 512 tokens, in fp32, bf16 and int8.

A saved run (default: the quickstart run, runs/minilm-lora-quickstart, made by `make demo`) classifies the
same N real IMDb test reviews (a stratified, seeded sample, with their labels) through `Predictor.predict`,
the path `sentitune predict` takes (`sentitune evaluate` scores with the same `evaluation.score`):

- fp32: `Predictor(run, precision="fp32")`, the default (`predict --precision fp32`);
- bf16: `Predictor(run, precision="bf16")`, bf16 autocast (`predict --precision bf16`); on a CPU without
  native bf16 (oneDNN's AVX512-BF16/AMX) it is emulated and far slower: the table says so, and
  `--skip-emulated` leaves it out;
- int8: `Predictor(run, quantize="int8")`, ONNX Runtime on the int8 dynamic-quantized graph
  (`predict --quantize int8`); its first use exports and quantizes the graph (timed separately).

Each max length classifies the reviews with the run's data settings but `data.max_length` set to it (the
same weights; a model takes at most its position count). The arms take turns for --rounds rounds (a
neighbour's load on a shared machine hits them alike) and the median round is kept. The run is copied to
a temporary folder first, so the exported graphs never land in it.

    python benchmarks/inference_speed.py [--run runs/minilm-lora-quickstart] [--n 128] [--lengths 256,512]
        [--batch-size 32] [--rounds 3] [--skip-emulated] [--out FILE.json] [--write inference-speed]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docs_block import write_block
from machine import bf16_native, cores_line

ROOT = Path(__file__).resolve().parents[1]
# The quickstart run (configs/experiments/minilm-lora-quickstart.yaml), in this checkout or the main one.
QUICKSTART = (ROOT / "runs" / "minilm-lora-quickstart", Path("/work/main/runs/minilm-lora-quickstart"))
DEFAULT_RUN = next((p for p in QUICKSTART if (p / "model").is_dir()), QUICKSTART[0])
DEFAULT_DATA = os.environ.get("SENTITUNE_IMDB", "/work/shared/data/aclImdb_v1.tar.gz")


def predictors(run: Path, native_bf16: bool, skip_emulated: bool) -> tuple[dict[str, Any], float]:
    """The arms, each a Predictor as `sentitune predict` builds it, and the seconds int8's first use took
    (export + quantization into the run's model folder: here the temporary copy)."""
    from sentitune.inference import Predictor

    arms: dict[str, Any] = {"fp32": Predictor(run, precision="fp32")}
    if native_bf16 or not skip_emulated:
        arms["bf16" if native_bf16 else "bf16 (emulated)"] = Predictor(run, precision="bf16")
    start = time.perf_counter()
    arms["int8"] = Predictor(run, quantize="int8")
    return arms, time.perf_counter() - start


def at_length(predictor: Any, max_length: int) -> None:
    """Make the predictor encode reviews as its run does, cut at `max_length` tokens instead."""
    from sentitune.config import replace

    predictor.cfg = replace(predictor.cfg, data=replace(predictor.cfg.data, max_length=max_length))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="a saved run (a trained transformer)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the IMDb archive or folder ($SENTITUNE_IMDB)")
    parser.add_argument("--n", type=int, default=128, help="test reviews (stratified, seeded sample)")
    parser.add_argument("--lengths", default="256,512", help="comma-separated max lengths, in tokens")
    parser.add_argument("--batch-size", type=int, default=32, help="as `sentitune predict --batch-size`")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per arm (the median is kept)")
    parser.add_argument("--skip-emulated", action="store_true",
                        help="leave bf16 out on a CPU without native bf16 (emulated: far slower than fp32)")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON")
    parser.add_argument("--write", metavar="NAME", help="put the table into docs/PERFORMANCE.md between NAME markers")
    args = parser.parse_args()
    if not (args.run / "model").is_dir():
        raise SystemExit(f"{args.run}: no saved model (train one: make demo, or pass --run)")
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--lengths {args.lengths!r}: give whole numbers of tokens, comma-separated") from None
    if not lengths or min(lengths) < 1 or args.n < 1 or args.rounds < 1 or args.batch_size < 1:
        raise SystemExit("--lengths, --n, --rounds and --batch-size must be at least 1")

    import numpy as np
    import torch

    from sentitune.config import replace
    from sentitune.data.batching import encode, encoding_args
    from sentitune.data.sources import load_splits
    from sentitune.metrics import classification_metrics
    from sentitune.models.registry import is_decoder
    from sentitune.runs import RunDir

    cfg = RunDir(args.run).config()
    examples = load_splits(replace(cfg.data, path=str(args.data), eval_size=args.n), cfg.train.seed).test
    texts, labels = [e.text for e in examples], [e.label for e in examples]
    native = bf16_native()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sentitune-inference-") as tmp:
        run = Path(tmp) / args.run.name
        shutil.copytree(args.run, run)
        arms, int8_setup = predictors(run, native, args.skip_emulated)
        fp32 = arms["fp32"]
        positions = fp32.model.backbone.config.max_position_embeddings
        if max(lengths) > positions:
            raise SystemExit(f"--lengths: {cfg.model.spec} takes at most {positions} tokens")
        decoder = is_decoder(fp32.model.backbone.config)
        shape: dict[int, dict[str, float]] = {}
        for length in lengths:
            data = encode(examples, fp32.tokenizer, **encoding_args(replace(cfg.data, max_length=length), decoder))
            sizes = [len(x) for x in data.input_ids]
            shape[length] = {"tokens": sum(sizes), "cut": sum(n >= length for n in sizes) / len(sizes)}
        seconds: dict[tuple[int, str], list[float]] = {(n, a): [] for n in lengths for a in arms}
        probs: dict[tuple[int, str], np.ndarray] = {}
        for length in lengths:  # warm-up: first-call allocations and kernel choices are not the steady state
            for predictor in arms.values():
                at_length(predictor, length)
                predictor.predict(texts[:args.batch_size], args.batch_size)
        for _ in range(args.rounds):
            for length in lengths:
                for name, predictor in arms.items():
                    at_length(predictor, length)
                    start = time.perf_counter()
                    got = predictor.predict(texts, args.batch_size)
                    seconds[(length, name)].append(time.perf_counter() - start)
                    probs[(length, name)] = np.array([p.prob_positive for p in got])

    rows: list[dict[str, Any]] = []
    for length in lengths:
        base = statistics.median(seconds[(length, "fp32")])
        for name in arms:
            median = statistics.median(seconds[(length, name)])
            rows.append({"max_length": length, "arm": name, "seconds": median, "reviews_per_s": len(texts) / median,
                         "tokens_per_s": shape[length]["tokens"] / median, "vs_fp32": base / median,
                         "accuracy": classification_metrics(labels, probs[(length, name)])["accuracy"],
                         "max_abs_diff": float(np.abs(probs[(length, name)] - probs[(length, "fp32")]).max())})
    backend = {"int8": "ONNX Runtime, int8 graph"}
    lines = ["| max_length | precision | backend | reviews/s | tokens/s | vs fp32 | accuracy | max abs diff vs fp32 |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['max_length']} | {r['arm']} | {backend.get(r['arm'], 'torch')} | {r['reviews_per_s']:.1f} | "
              f"{r['tokens_per_s']:.0f} | {r['vs_fp32']:.2f}x | {r['accuracy']:.4f} | {r['max_abs_diff']:.1e} |"
              for r in rows]
    cut = ", ".join(f"{100 * shape[n]['cut']:.0f}% cut at {n}" for n in lengths)
    mean = ", ".join(f"{shape[n]['tokens'] / len(texts):.0f} at {n}" for n in lengths)
    bf16 = "yes" if native else ("no: bf16 is emulated" + (", left out (--skip-emulated)" if args.skip_emulated
                                                           else ""))
    command = "python benchmarks/inference_speed.py " + " ".join(sys.argv[1:])
    body = (f"```\n{command.strip()}\n```\n\n{len(texts)} IMDb test reviews (a stratified sample; mean tokens after "
            f"truncation {mean}; {cut}), run `{args.run.name}` ({cfg.model.spec}, {cfg.method.name}, trained at "
            f"max_length {cfg.data.max_length}), `Predictor.predict` in batches of {args.batch_size}, median of "
            f"{args.rounds} interleaved rounds. Machine: {cores_line()}, "
            f"{torch.get_num_threads()} torch threads; native bf16 (oneDNN): {bf16}. "
            f"int8's first use (export + quantization) took {int8_setup:.0f} s, not counted. 1-minute load "
            f"average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n\n"
            + "\n".join(lines) + "\n")
    print(body)
    if args.out:
        from sentitune.atomic import write_json

        write_json(args.out, {"command": command, "run": str(args.run), "reviews": len(texts), "lengths": shape,
                              "native_bf16": native, "int8_setup_seconds": int8_setup, "rows": rows,
                              "seconds": {f"{n} {a}": s for (n, a), s in seconds.items()}})
    if args.write:
        write_block(ROOT / "docs" / "PERFORMANCE.md", args.write, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
