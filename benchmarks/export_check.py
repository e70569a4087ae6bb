"""How exactly an `export --format hf` folder reproduces its run, measured where sentitune cannot be imported.

    .venv/bin/python benchmarks/export_check.py --run runs/minilm-lora-quickstart --reviews 1000 --write

Exports the run (timed), then in a subprocess that has transformers but not sentitune (python -S, the
venv's site-packages on sys.path without the editable install's .pth) classifies the first N IMDb test
reviews (raw text, <br /> tags and all) with pipeline("text-classification", truncation=True), and
compares with sentitune's own Predictor on the same reviews: largest probability difference, labels that
differ, and each side's reviews/s. --write puts the table into docs/EXPORT.md between markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from agreement import agreement, one_row_table
from docs_block import write_block
from machine import arch, cpus_online

from sentitune.data.imdb import read_archive
from sentitune.export import export_run
from sentitune.inference import Predictor
from sentitune.paths import cache_dir

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = r"""
import json, sys, time
try:
    import sentitune
    raise SystemExit("sentitune is importable: the check would not be independent")
except ImportError:
    pass
from transformers import pipeline
folder, texts_file, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = json.load(open(texts_file))
classify = pipeline("text-classification", model=folder, truncation=True, top_k=None)
start = time.perf_counter()
rows = classify(texts, batch_size=batch)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "probs": [{d["label"]: d["score"] for d in row} for row in rows]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "minilm-lora-quickstart")
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--archive", type=Path, default=cache_dir("datasets") / "aclImdb_v1.tar.gz")
    parser.add_argument("--write", action="store_true", help="write the table into docs/EXPORT.md")
    args = parser.parse_args()

    test = read_archive(args.archive)["test"]
    reviews = [test[i] for i in range(0, len(test), max(1, len(test) // args.reviews))][: args.reviews]  # both classes
    texts = [e.text for e in reviews]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        start = time.perf_counter()
        record = export_run(args.run, folder, "hf")
        export_seconds = time.perf_counter() - start
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        site = sysconfig.get_paths()["purelib"]
        boot = (f"import sys; sys.path.append({site!r}); "
                f"sys.argv = ['x', {str(folder)!r}, {str(Path(tmp) / 'texts.json')!r}, '{args.batch_size}']; "
                f"exec({PIPELINE!r})")
        done = subprocess.run([sys.executable, "-S", "-c", boot], capture_output=True, text=True, cwd="/")
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
    predictor = Predictor(args.run)
    start = time.perf_counter()
    ours = predictor.predict(texts, batch_size=args.batch_size)
    our_seconds = time.perf_counter() - start
    labels = predictor.labels
    row = {"run": str(args.run.relative_to(ROOT) if args.run.is_relative_to(ROOT) else args.run),
           "architecture": record["architecture"], "reviews": len(texts), "export_seconds": round(export_seconds, 1),
           **agreement(theirs["probs"], ours, [e.label for e in reviews], labels),
           "sentitune_reviews_per_second": round(len(texts) / our_seconds, 1),
           "pipeline_reviews_per_second": round(len(texts) / theirs["seconds"], 1)}
    table = one_row_table([
        ("run", row["run"]), ("exported as", row["architecture"]), ("reviews", f"{row['reviews']:,}"),
        ("max abs. probability difference", f"{row['max_probability_difference']:.1e}"),
        ("labels that differ", row["labels_differ"]), ("accuracy", f"{row['accuracy']:.4f}"),
        ("export s", row["export_seconds"]), ("sentitune predict reviews/s", row["sentitune_reviews_per_second"]),
        ("transformers pipeline reviews/s", row["pipeline_reviews_per_second"])])
    machine = f"{arch()}, {cpus_online()} CPUs, torch threads as sentitune sets them"
    print(table + f"\n({machine})")
    print(json.dumps(row))
    if args.write:
        body = (f"Measured with `.venv/bin/python benchmarks/export_check.py --run {row['run']} --reviews "
                f"{args.reviews} --write` ({machine}; IMDb test reviews spread over both classes, raw text):\n\n"
                + table)
        write_block(ROOT / "docs" / "EXPORT.md", "export-check", body, require=True)


if __name__ == "__main__":
    main()
