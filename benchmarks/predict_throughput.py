"""Streamed `predict`: throughput of length-sorted vs input-order batches, and peak memory as the file grows.

Reviews are real IMDb test reviews (read from the archive by sentitune's IMDb reader), classified by a
saved run (default: runs/minilm-lora-quickstart, made by `make demo`).

1. Throughput, in this process: `Predictor.predict_stream` over N reviews with its chunks sorted by token
   length into batches (the default) against batches of the same size in input order (chunk size = batch
   size: each chunk is one batch, nothing to sort); reviews/s, and the share of padding each way.
2. Memory, each arm in its own process doing what `sentitune predict --file F --output out.csv` does: the
   peak RSS while predicting (reset once the model is loaded, whose own peak would hide everything else)
   for a file of M reviews and one 10x bigger, streamed (chunks of 64), and the big one all at once (one
   chunk of the whole file: how predict worked before streaming, every review and its tokens held), with
   a fixed mmap threshold (see MALLOC); the two streamed arms again with glibc's default allocator.

    .venv/bin/python benchmarks/predict_throughput.py --run runs/minilm-lora-quickstart [--reviews 128]
        [--small 48] [--write predict-throughput]

--write NAME puts the tables into docs/PERFORMANCE.md between the NAME markers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docs_block import write_block

ROOT = Path(__file__).resolve().parents[1]

# One memory arm, in its own process: what `sentitune predict --file F --output out.csv` calls, with the
# peak RSS (VmHWM) reset once the model is loaded (Linux clear_refs 5), so the peak is the prediction's.
CHILD = """
import json, sys, time
from pathlib import Path
from sentitune.inference import Predictor, iter_reviews, write_predictions_csv

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))

run, file, out, batch, chunk = sys.argv[1:]
predictor = Predictor(Path(run))
loaded = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
start = time.perf_counter()
count = write_predictions_csv(Path(out), predictor.predict_stream(iter_reviews(Path(file)), int(batch), int(chunk)))
print(json.dumps({"count": count, "loaded_mb": loaded, "peak_mb": status("VmHWM"),
                  "seconds": time.perf_counter() - start}))
"""


# glibc's default moves its mmap threshold up as large blocks are freed, so batch tensors of varying shapes
# end up in the heap and its high-water mark drifts; a fixed threshold returns every large block at once.
MALLOC = {"MALLOC_MMAP_THRESHOLD_=131072": {"MALLOC_MMAP_THRESHOLD_": "131072"}, "glibc default": {}}


def imdb_test_reviews(data: str | None, count: int, seed: int = 0) -> list[str]:
    """`count` distinct test reviews, a seeded sample (both classes, every length)."""
    from sentitune.data.imdb import locate_imdb, read_imdb

    test = read_imdb(locate_imdb(data, download=False), ("test",))["test"]
    return [e.text for e in random.Random(seed).sample(test, count)]


def padding(lengths: list[int], batches: list[list[int]]) -> float:
    """The share of the computed positions that are padding."""
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / computed


def throughput(run: Path, texts: list[str], batch_size: int, repeats: int) -> dict[str, Any]:
    """Reviews/s of sorted (default chunks) and input-order batches (chunks of one batch), best of `repeats`."""
    from sentitune.data.batching import encode, encoding_args, sorted_batches
    from sentitune.data.records import Example
    from sentitune.data.text import clean_text
    from sentitune.inference import Predictor

    predictor = Predictor(run)
    list(predictor.predict_stream(texts[:batch_size], batch_size))  # warm-up: first-call allocations
    arms = {"sorted by length (chunks of 2,048)": 2048, "input order (chunk = batch)": batch_size}
    examples = [Example(str(i), clean_text(t), 0) for i, t in enumerate(texts)]
    lengths = [len(x) for x in encode(examples, predictor.scorer.tokenizer,
                                      **encoding_args(predictor.cfg.data, False)).input_ids]
    layouts = {2048: sorted_batches(lengths, batch_size),
               batch_size: [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]}
    out: dict[str, Any] = {"reviews": len(texts), "batch_size": batch_size, "mean_tokens": sum(lengths) / len(texts),
                           "truncated": sum(n >= predictor.cfg.data.max_length for n in lengths) / len(texts),
                           "arms": {}}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):  # interleaved, so a busy moment on a shared machine hits both arms alike
        for name, chunk in arms.items():
            start = time.perf_counter()
            got = list(predictor.predict_stream(texts, batch_size, chunk))
            seconds[name].append(time.perf_counter() - start)
            assert [p.text for p in got] == texts
    for name, chunk in arms.items():
        out["arms"][name] = {"seconds": min(seconds[name]), "reviews_per_s": len(texts) / min(seconds[name]),
                             "padding": padding(lengths, layouts[chunk])}
    return out


def peak_rss(run: Path, file: Path, batch_size: int, chunk: int, out: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(run), str(file), str(out), str(batch_size), str(chunk)],
                          capture_output=True, text=True, env=os.environ | env)
    if done.returncode != 0:
        raise SystemExit(f"predict failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "minilm-lora-quickstart", help="a saved run")
    parser.add_argument("--data", help="IMDb archive or folder (default: $SENTITUNE_IMDB, then the cache)")
    parser.add_argument("--reviews", type=int, default=128, help="test reviews for the throughput arms")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="passes per throughput arm (the best is kept)")
    parser.add_argument("--small", type=int, default=48, help="reviews in the small file (the big one: 10x)")
    parser.add_argument("--stream-chunk", type=int, default=64, help="--chunk-size of the streamed memory arms")
    parser.add_argument("--write", metavar="NAME", help="put the tables into docs/PERFORMANCE.md under NAME")
    args = parser.parse_args()
    if not (args.run / "config.yaml").is_file():
        raise SystemExit(f"{args.run}: not a run directory (train one: make demo)")

    texts = imdb_test_reviews(args.data, max(args.reviews, 10 * args.small))
    report: dict[str, Any] = {"throughput": throughput(args.run, texts[:args.reviews], args.batch_size,
                                                       args.repeats), "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        for malloc, env in MALLOC.items():
            arms = [(args.small, "streamed"), (10 * args.small, "streamed")]  # + all at once, with the fixed
            for rows, how in arms + ([(10 * args.small, "all at once")] if env else []):  # threshold only (time)
                file = Path(tmp) / f"reviews-{rows}.txt"
                file.write_text("\n".join(t.replace("\n", " ") for t in texts[:rows]) + "\n", encoding="utf-8")
                chunk = args.stream_chunk if how == "streamed" else rows
                arm = peak_rss(args.run, file, args.batch_size, chunk, Path(tmp) / "out.csv", env)
                assert arm["count"] == rows
                report["memory"].append({"reviews": rows, "how": how, "chunk_size": chunk, "malloc": malloc, **arm})
                print(f"{rows} reviews, {how}, {malloc}: RSS {arm['loaded_mb']:.0f} MB loaded, peak "
                      f"{arm['peak_mb']:.0f} MB while predicting ({arm['seconds']:.0f} s)", flush=True)

    command = "python benchmarks/predict_throughput.py " + shlex.join(sys.argv[1:])
    t = report["throughput"]
    lines = [f"```\n{command.strip()}\n```\n",
             f"Run `{args.run}`, {t['reviews']} IMDb test reviews (mean {t['mean_tokens']:.0f} tokens after "
             f"truncation, {100 * t['truncated']:.0f}% cut at max_length), batches of {t['batch_size']}, the best of "
             f"{args.repeats} interleaved passes:\n",
             "| batches | reviews/s | seconds | padding |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {arm['reviews_per_s']:.1f} | {arm['seconds']:.1f} | {100 * arm['padding']:.1f}% |"
              for name, arm in t["arms"].items()]
    lines += ["", "Memory of `predict_stream` writing `out.csv` from the file, as `sentitune predict --file F --output "
              "out.csv` does, each row in its own process: RSS once the model is loaded, and the peak RSS while "
              "predicting (measured from there: the peak is reset after the load):\n",
              "| malloc | reviews in the file | how | --chunk-size | RSS loaded (MB) | peak predicting (MB) "
              "| peak - loaded (MB) | seconds |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {m['malloc']} | {m['reviews']} | {m['how']} | {m['chunk_size']} | {m['loaded_mb']:.0f} | "
              f"{m['peak_mb']:.0f} | "
              f"{m['peak_mb'] - m['loaded_mb']:.0f} | {m['seconds']:.0f} |" for m in report["memory"]]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        write_block(ROOT / "docs" / "PERFORMANCE.md", args.write, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
