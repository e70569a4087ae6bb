"""docs/RESULTS.md "How many labels do I need?", from the label-budget bench (configs/benches/labels.yaml).

    .venv/bin/python benchmarks/labels_doc.py                 # run the bench (finished rows are skipped), write
    .venv/bin/python benchmarks/labels_doc.py --rows a,b      # run only these rows first
    .venv/bin/python benchmarks/labels_doc.py --no-run        # only rewrite the section from the finished rows

The section lives between the `<!-- labels:start -->` / `<!-- labels:end -->` markers in docs/RESULTS.md. Every
number comes from a run directory under runs/bench/labels, read back by the bench (results.json: the learning
curve, mean ± sd over seeds); each budget's two halves alone come from the rows' metrics.json (ensemble.test).
Rows not run yet are listed with their command, never with a number.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from bench_doc import refreshed_results
from docs_block import write_block
from label_peers import ARMS, PEERS
from machine import cores_line

from sentitune.benching import load_bench
from sentitune.benching.results import curve_table
from sentitune.markdown import table
from sentitune.report import write_report

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "configs" / "benches" / "labels.yaml"
OUT = ROOT / "runs" / "bench" / "labels"
DOC = ROOT / "docs" / "RESULTS.md"
PLOT = ROOT / "docs" / "results" / "learning_curve.png"
BLOCK = "labels"  # docs/RESULTS.md's block: <!-- labels:start --> ... <!-- labels:end -->


def _halves(results: dict[str, Any]) -> list[list[str]]:
    """Per budget: the transformer alone, the n-gram model alone and both, mean test accuracy over the seeds
    (from each row's metrics.json: ensemble.test)."""
    rows = []
    for line in results["curve"]:
        for point in line["points"]:
            tests = [json.loads((OUT / name / "metrics.json").read_text(encoding="utf-8")) for name in point["runs"]]
            members = [m["ensemble"]["test"] for m in tests if (m.get("ensemble") or {}).get("test")]
            if not members:
                continue
            mean = {k: float(np.mean([m[k]["accuracy"] for m in members])) for k in ("transformer", "ngram")}
            rows.append([f"{point['labels']:,}", line["line"], f"{mean['transformer']:.4f}", f"{mean['ngram']:.4f}",
                         f"{point['accuracy_mean']:.4f}", str(len(members))])
    return rows


def _teachers(results: dict[str, Any]) -> list[list[str]]:
    """Per self-trained budget: what the teacher did (from each row's metrics.json: self_training), means over seeds."""
    rows = []
    for line in results["curve"]:
        for point in line["points"]:
            runs = [json.loads((OUT / name / "metrics.json").read_text(encoding="utf-8")) for name in point["runs"]]
            st = [m["self_training"] for m in runs if m.get("self_training")]
            if not st:
                continue

            def mean(records: list[dict[str, Any]], key: str, digits: str = ".4f") -> str:
                values = [r[key] for r in records if r.get(key) is not None]
                return format(float(np.mean(values)), digits) if values else ""

            rows.append([f"{point['labels']:,}", line["line"], mean(st, "teacher_accuracy_unlabeled"),
                         mean(st, "scored", ",.0f"), mean(st, "kept", ",.0f"), mean(st, "pseudo_accuracy"),
                         f"{float(np.mean([r['teacher_cost_seconds'] for r in st])) / 60:.1f} min"])
    return rows


def _peers() -> list[list[str]]:
    """Per budget: each peer arm's mean test accuracy ± sd over seeds (benchmarks/label_peers.py's peers.json)."""
    if not PEERS.is_file():
        return []
    records = list(json.loads(PEERS.read_text(encoding="utf-8")).values())
    arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
    rows = []
    for labels in sorted({r["labels"] for r in records}):
        cells = []
        for arm in arms:
            accuracy = [r["accuracy"] for r in records if r["arm"] == arm and r["labels"] == labels]
            sd = f" ± {np.std(accuracy, ddof=1):.4f}" if len(accuracy) > 1 else ""
            cells.append(f"{np.mean(accuracy):.4f}{sd} ({len(accuracy)} seed{'s' if len(accuracy) > 1 else ''})"
                         if accuracy else "")
        rows.append([f"{labels:,}", *cells])
    return [["labelled reviews", *arms], *rows]


def section(results: dict[str, Any]) -> str:
    bench = load_bench(BENCH)
    done = {r["name"] for r in results["rows"]}
    lines = ["## How many labels do I need?", "",
             "Test accuracy on 2,000 stratified IMDb test reviews against the labelled reviews a run is given "
             "(training + validation: a fifth of them, rounded up, is the validation set). Made by:", "",
             "```bash", f"sentitune bench {BENCH.relative_to(ROOT)} --out {OUT.relative_to(ROOT)}", "```", "",
             f"(`.venv/bin/python benchmarks/labels_doc.py` runs that bench and rewrites this section.) Machine: "
             f"{cores_line()}. Each seed draws its own labelled reviews and its own test reviews.", "",
             "Lines: `partial` is the README's job (configs/experiments/quickstart.yaml: cached MiniLM prefix, top 2 "
             "layers + NBSVM) on the labelled reviews alone; `self-train` the same job as the student of SmolLM2 "
             "prompted (`--teacher smollm2-135m --unlabeled pool`: it labels 2,000 training reviews whose labels are "
             "hidden, its surest half joins the labelled ones; docs/METHODS.md, \"Self-training\"); `contrastive` the "
             "same job with `--method contrastive` (its top 2 layers tuned with a batch-wise supervised contrastive "
             "loss, then its head: the SetFit idea; docs/METHODS.md, \"Contrastive\"); `self-train-contrastive` that "
             "job as the self-trained student; `self-train-mpnet` configs/experiments/few-labels.yaml: the "
             "README's job on the packaged MPNet-base (its lower 10 of 12 layers cached, the top 2 trained) as the "
             "student of the same teacher, which labels 1,000 reviews (the larger encoder costs the other 1,000's "
             "time); `zero-shot` "
             "SmolLM2 prompted, no training (its decision reads no label).", ""]
    if results["curve"]:
        lines += curve_table(results["curve"])[3:]  # the table and its legend, under this section's own title
        lines += ["", "The rows of every line but `self-train-mpnet` ran before a run counted the feature caches it "
                  "found built (metrics.json `feature_cache_found_seconds`): where an earlier row of the same seed "
                  "had built their test reviews' prefix states, their minutes leave out that build."]
        lines += ["", f"![Accuracy against labelled reviews](results/{PLOT.name})"]
    halves = _halves(results)
    if halves:
        lines += ["", "Each half of the README's job alone (mean test accuracy over the same seeds):", ""]
        lines += table(["labelled reviews", "line", "transformer alone", "n-gram alone", "both", "seeds"], halves)
    peers = _peers()
    if peers:
        lines += ["", "Peers on the same labelled reviews (all of them for training) and the same test reviews, "
                  "by seed (`.venv/bin/python benchmarks/label_peers.py`; `--setfit` adds SetFit on the packaged "
                  "MiniLM):", ""]
        lines += table(peers[0], peers[1:])
    teachers = _teachers(results)
    if teachers:
        lines += ["", "The self-trained rows' teacher (SmolLM2 prompted, its decision moved to the labelled reviews' "
                  "class shares; metrics.json `self_training`, means over the seeds). Its accuracy and its kept "
                  "pseudo-labels' are measured against the labels it never read (the unlabelled reviews are training "
                  "reviews with their labels hidden); the teacher's cost is what scoring its reviews takes, "
                  "counted in every row although the bench scored each review once:", ""]
        lines += table(["labelled reviews", "line", "teacher accuracy", "reviews it labelled", "kept",
                        "kept: accuracy", "teacher cost"], teachers)
    missing = [row.name for row in bench.rows if row.name not in done]
    if missing:
        lines += ["", "Not run here yet (each is one command; nothing is estimated or typed in):", ""]
        lines += [f"- `{name}`: `sentitune bench {BENCH.relative_to(ROOT)} --out {OUT.relative_to(ROOT)} "
                  f"--rows {name}`" for name in missing]
    return "\n".join(lines) + "\n"


def main() -> None:
    results = refreshed_results(__doc__, BENCH, OUT, ROOT)
    write_report(OUT)
    if (OUT / "plots" / PLOT.name).is_file():
        shutil.copyfile(OUT / "plots" / PLOT.name, PLOT)
    write_block(DOC, BLOCK, section(results))
    print(f"wrote the label-budget section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
