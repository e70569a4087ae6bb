"""How exactly an `export --format onnx` folder's own scorer reproduces its run, where neither torch nor sentitune
can be imported: the README's model (`make demo`: MiniLM read head+tail, plus the NBSVM n-gram half).

    .venv/bin/python benchmarks/portable_check.py --run runs/quickstart --reviews 1000 --write

Exports the run (timed), then in a subprocess whose `torch`, `transformers` and `sentitune` imports fail runs the
folder's sentitune_scorer.py (numpy, onnxruntime, tokenizers) on N IMDb test reviews of the run's own test split
(raw text, <br /> tags and all), and compares with sentitune's Predictor on the same reviews: largest probability
difference, labels that differ, each side's reviews/s. --write puts the table into docs/EXPORT.md between markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docs_block import write_block
from machine import arch, cpus_online

from sentitune.data.sources import load_splits
from sentitune.export import export_run
from sentitune.inference import Predictor
from sentitune.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
SCORER = r"""
import json, runpy, sys, time
for name in ("torch", "transformers", "sentitune"):
    sys.modules[name] = None  # an import of any of them fails: the folder must stand alone
folder, texts_file = sys.argv[1], sys.argv[2]
sys.path.insert(0, folder)
from sentitune_scorer import Scorer
texts = json.load(open(texts_file))
scorer = Scorer(folder)
start = time.perf_counter()
probs = scorer.probabilities(texts)
print(json.dumps({"seconds": time.perf_counter() - start, "labels": scorer.labels, "probs": probs.tolist()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="write the table into docs/EXPORT.md")
    args = parser.parse_args()

    cfg = RunDir(args.run).config()
    reviews = load_splits(cfg.data, cfg.train.seed).test[: args.reviews]  # stratified, both classes
    texts = [e.text for e in reviews]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        start = time.perf_counter()
        record = export_run(args.run, folder, "onnx")
        export_seconds = time.perf_counter() - start
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        done = subprocess.run([sys.executable, "-c", SCORER, str(folder), str(Path(tmp) / "texts.json")],
                              capture_output=True, text=True, cwd="/")
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
    predictor = Predictor(args.run)
    start = time.perf_counter()
    ours = predictor.predict(texts)
    our_seconds = time.perf_counter() - start
    labels = predictor.labels
    assert theirs["labels"] == labels, (theirs["labels"], labels)
    diff = max(abs(t[k] - o.probs[name]) for t, o in zip(theirs["probs"], ours, strict=True)
               for k, name in enumerate(labels))
    flips = sum(labels[max(range(len(t)), key=t.__getitem__)] != o.label
                for t, o in zip(theirs["probs"], ours, strict=True))
    accuracy = sum(o.label == labels[e.label] for o, e in zip(ours, reviews, strict=True)) / len(reviews)
    what = " + ".join(["ONNX graph", *(["n-gram arrays"] if record.get("ensemble") else [])])
    row = {"run": str(args.run.relative_to(ROOT) if args.run.is_relative_to(ROOT) else args.run),
           "truncation": (record.get("preprocessing") or {}).get("truncation"), "exported_as": what,
           "reviews": len(texts), "export_seconds": round(export_seconds, 1), "max_probability_difference": diff,
           "labels_differ": flips, "accuracy": round(accuracy, 4),
           "sentitune_reviews_per_second": round(len(texts) / our_seconds, 1),
           "scorer_reviews_per_second": round(len(texts) / theirs["seconds"], 1)}
    table = ("| run | truncation | exported as | reviews | max abs. probability difference | labels that differ | "
             "accuracy | export s | sentitune predict reviews/s | sentitune_scorer.py reviews/s |\n"
             "|---|---|---|---|---|---|---|---|---|---|\n"
             f"| {row['run']} | {row['truncation']} | {what} | {row['reviews']:,} | {diff:.1e} | {flips} | "
             f"{accuracy:.4f} | {row['export_seconds']} | {row['sentitune_reviews_per_second']} | "
             f"{row['scorer_reviews_per_second']} |\n")
    machine = f"{arch()}, {cpus_online()} CPUs"
    print(table + f"\n({machine})")
    print(json.dumps(row))
    if args.write:
        body = (f"Measured with `.venv/bin/python benchmarks/portable_check.py --run {row['run']} --reviews "
                f"{args.reviews} --write` ({machine}; the run's own stratified test reviews, raw text; the scorer in "
                "a process where torch, transformers and sentitune cannot be imported):\n\n" + table)
        write_block(ROOT / "docs" / "EXPORT.md", "portable-check", body, require=True)


if __name__ == "__main__":
    main()
