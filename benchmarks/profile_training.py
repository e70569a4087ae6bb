"""Where the time of sentitune's later epochs goes: torch.profiler over training from a warm feature cache.

Builds the frozen prefix's cache with a first run, then profiles a second run of the same config whose
epochs all read that cache (what later epochs do), and prints the operators by self CPU time, grouped into
matmuls, attention, layer norm, activations, dtype casts and copies, the optimizer, the cache read and the
rest (Python and framework overhead per batch), with the achieved model FLOP/s against the measured matmul
peak of the precision in use.

    .venv/bin/python benchmarks/profile_training.py [--train 64] [--max-length 512] [--batch-size 8]

The model is speed.py's GPT-2-size random GPT-2 (10 of 12 blocks frozen), as in the partial-10 block of
docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from docs_block import publish
from speed import ROOT, experiment, gpt2_124m_random, matmul_peak, model_flops_per_token, speed_args

from sentitune.training import train

GROUPS = [  # (group, substrings of operator names), first match wins
    ("cache read", ("sentitune.cache_read",)),
    ("dropout masks", ("bernoulli",)),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax", "baddbmm", "bmm")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "mkldnn", "onednn")),
    ("layer norm", ("layer_norm",)),
    ("activation", ("gelu", "tanh", "pow", "dropout")),
    ("optimizer", ("adamw", "_foreach", "Optimizer.step", "clip_grad", "norm")),
    ("casts and copies", ("aten::to", "aten::copy_", "_to_copy", "aten::clone", "contiguous", "aten::cat",
                          "aten::zeros", "aten::fill_", "aten::empty")),
]


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other (elementwise, indexing, Python)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--freeze", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20, help="operators to list")
    parser.add_argument("--attention-dropout", type=float, default=None,
                        help="model.attention_dropout (default: the backbone's own, 0.1)")
    parser.add_argument("--write", metavar="BLOCK", nargs="?", const="profile-training",
                        help="put the output into docs/PERFORMANCE.md (block "
                        "BLOCK, default profile-training)")
    args = parser.parse_args()
    ns = speed_args(train=args.train, eval=16, max_length=args.max_length, epochs=args.epochs,
                    batch_size=args.batch_size, freeze=args.freeze)
    model = gpt2_124m_random()
    precision_peaks = {"bf16": matmul_peak("bfloat16"), "fp32": matmul_peak("float32")}  # on an idle process
    with tempfile.TemporaryDirectory() as tmp:
        cfg = experiment(ns, model, str(Path(tmp) / "features"))
        cfg.model.attention_dropout = args.attention_dropout
        train(cfg, Path(tmp) / "warm")  # builds the cache
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            metrics = train(cfg, Path(tmp) / "profiled")
            wall = time.perf_counter() - started
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total
    precision = metrics["precision"]
    peak = precision_peaks.get(precision, precision_peaks["fp32"])
    flops = model_flops_per_token(model, "partial", args.freeze)["cached_train"]
    seconds = metrics["train_seconds"]
    achieved = flops * metrics["train_tokens"] / seconds / 1e9
    out = [f"profiled run: {metrics['train_tokens']:,} training tokens in {seconds:.1f} s ({precision}), wall "
           f"{wall:.1f} s under the profiler; top-block model FLOP/s {achieved:.1f} G = {100 * achieved / peak:.0f}% "
           f"of the measured {precision} matmul peak ({peak:.0f} GFLOP/s)",
           "", "| group | self CPU s | share |", "|---|---:|---:|"]
    for group, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        out.append(f"| {group} | {us / 1e6:.2f} | {100 * us / total:.1f}% |")
    table = events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60)
    out += ["", f"Top {args.rows} operators by self CPU time:", "", "```", table.rstrip(), "```", ""]
    publish("\n".join(out), ROOT / "docs" / "PERFORMANCE.md", args.write)


if __name__ == "__main__":
    main()
