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

from agreement import agreement, one_row_table
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
    what = " + ".join(["ONNX graph", *(["n-gram arrays"] if record.get("ensemble") else [])])
    row = {"run": str(args.run.relative_to(ROOT) if args.run.is_relative_to(ROOT) else args.run),
           "truncation": (record.get("preprocessing") or {}).get("truncation"), "exported_as": what,
           "reviews": len(texts), "export_seconds": round(export_seconds, 1),
           **agreement([dict(zip(labels, t, strict=True)) for t in theirs["probs"]], ours,
                       [e.label for e in reviews], labels),
           "sentitune_reviews_per_second": round(len(texts) / our_seconds, 1),
           "scorer_reviews_per_second": round(len(texts) / theirs["seconds"], 1)}
    table = one_row_table([
        ("run", row["run"]), ("truncation", row["truncation"]), ("exported as", what),
        ("reviews", f"{row['reviews']:,}"),
        ("max abs. probability difference", f"{row['max_probability_difference']:.1e}"),
        ("labels that differ", row["labels_differ"]), ("accuracy", f"{row['accuracy']:.4f}"),
        ("export s", row["export_seconds"]), ("sentitune predict reviews/s", row["sentitune_reviews_per_second"]),
        ("sentitune_scorer.py reviews/s", row["scorer_reviews_per_second"])])
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
