"""docs/RESULTS.md "The accuracy frontier": accuracy per minute on IMDb on a 2-core CPU, from two benches.

    .venv/bin/python benchmarks/frontier_doc.py            # run both benches (finished rows are skipped), write
    .venv/bin/python benchmarks/frontier_doc.py --no-run   # only rewrite the section from the finished rows

It runs `sentitune bench configs/benches/frontier.yaml --out runs/bench/frontier` (every row scored on the full
25,000-review test set; the bench draws time_to_accuracy.png) and `sentitune bench
configs/benches/truncation.yaml --out runs/bench/truncation` (one transformer, four ways to read a long review,
2,000 test reviews), then writes the section between its markers in docs/RESULTS.md (`<!-- frontier:start -->`,
under the title: benchmarks/results_doc.py writes the rest of the page and keeps this block) and copies the plot
to docs/results/. Every number comes from the runs' metrics.json / the benches' results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from docs_block import write_block
from machine import arch, bf16_native, cpus_online, yes_no

from sentitune.config import load_config
from sentitune.markdown import duration

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RESULTS.md"
PAGE = ROOT / "docs" / "results"
BENCHES = {"frontier": (ROOT / "configs" / "benches" / "frontier.yaml", ROOT / "runs" / "bench" / "frontier"),
           "truncation": (ROOT / "configs" / "benches" / "truncation.yaml", ROOT / "runs" / "bench" / "truncation")}
BLOCK = "frontier"  # docs/RESULTS.md's block: <!-- frontier:start --> ... <!-- frontier:end -->
BUDGET_MINUTES = 60
README_JOB = "quickstart-2000"  # the row that is configs/experiments/quickstart.yaml exactly (make demo)

WHAT = {
    "tfidf-lr": "uni+bigram TF-IDF, logistic regression (24,000 reviews)",
    "nbsvm-trigram": "NBSVM: 0/1 uni- to trigrams x NB ratios, logistic regression (24,000 reviews)",
    "minilm-full-ht512-ngram": "MiniLM fully fine-tuned (8,000 reviews, head 128 + tail 382 tokens) + NBSVM",
    "quickstart": "the README job: MiniLM top 2 layers on a cached prefix (4,000 reviews, 256 tokens) + NBSVM "
                  "on the same reviews",
    "quickstart-2000": "the same job as `make demo` runs it (2,000 test reviews, with its untrained baseline)",
    "quickstart-ngram-all": "the README job's transformer + NBSVM fitted on all 24,000 training reviews",
    "quickstart-2000-no-attn-dropout": "`make demo`'s job with `model.attention_dropout=0` (the trained blocks run "
                                       "the fused attention kernel; 2,000 test reviews)",
}


def _metrics(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "metrics.json").read_text(encoding="utf-8"))


def _acc(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _results(name: str) -> dict[str, Any] | None:
    path = BENCHES[name][1] / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def frontier_table(results: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    out = BENCHES["frontier"][1]
    lines = ["| row | what | test reviews | accuracy | 95% CI | transformer alone | n-gram alone | ROC AUC | "
             "training | test pass | whole row | McNemar p vs tfidf-lr |", "|" + "---|" * 12]
    rows = []
    for r in results["rows"]:
        m = _metrics(out, r["name"])
        members = (m.get("ensemble") or {}).get("test") or {}
        row = {**r, "members": members, "wall": m.get("wall_seconds")}
        rows.append(row)
        lines.append("| " + " | ".join([
            f"`{r['name']}`", WHAT.get(r["name"], r["method"]), f"{r['n']:,}", f"**{_acc(r['accuracy'])}**",
            f"[{r['accuracy_ci_low']:.3f}, {r['accuracy_ci_high']:.3f}]",
            _acc((members.get("transformer") or {}).get("accuracy")),
            _acc((members.get("ngram") or {}).get("accuracy")),
            _acc(r["roc_auc"]), duration(r["train_seconds"]), duration(r["test_seconds"]), duration(row["wall"]),
            "" if r["mcnemar_p_vs_tfidf"] is None else f"{r['mcnemar_p_vs_tfidf']:.2g}"]) + " |")
    return lines, rows


def best_lines(rows: list[dict[str, Any]]) -> list[str]:
    full = [r for r in rows if r["n"] == 25_000 and r["wall"] is not None]
    within = [r for r in full if r["wall"] <= BUDGET_MINUTES * 60]
    lines = []
    if within:
        b = max(within, key=lambda r: r["accuracy"])
        lines.append(f"- **Best within {BUDGET_MINUTES} minutes** (training + the 25,000-review test pass, whole row): "
                     f"`{b['name']}`, accuracy **{b['accuracy']:.4f}** (95% CI [{b['accuracy_ci_low']:.3f}, "
                     f"{b['accuracy_ci_high']:.3f}]) in {duration(b['wall'])}.")
    if full:
        b = max(full, key=lambda r: r["accuracy"])
        lines.append(f"- **Best at any budget** measured here: `{b['name']}`, {b['accuracy']:.4f} in "
                     f"{duration(b['wall'])}.")
    readme = next((r for r in rows if r["name"] == README_JOB), None)
    if readme is not None:
        lines.append(f"- **The README's job** (`make demo`, configs/experiments/quickstart.yaml): "
                     f"{readme['accuracy']:.4f} on {readme['n']:,} test reviews in {duration(readme['wall'])} of wall "
                     "time inside `sentitune train` (data, model, cache, training, n-gram model, baseline and test "
                     "pass).")
    for r in full:
        members = {k: (v or {}).get("accuracy") for k, v in r["members"].items()}
        if len(members) == 2 and None not in members.values():
            best = max(members, key=lambda k: members[k])
            lines.append(f"- `{r['name']}`: the ensemble {r['accuracy']:.4f} against its better half alone "
                         f"({best}, {members[best]:.4f}): {100 * (r['accuracy'] - members[best]):+.2f} points.")
    return lines


def truncation_table(results: dict[str, Any]) -> list[str]:
    out = BENCHES["truncation"][1]
    lines = ["| row | how a long review is read | accuracy | 95% CI | ROC AUC | training | test pass | whole row | "
             "tokens read per review |", "|" + "---|" * 9]
    how = {"head": "its first 254 tokens", "tail": "its last 254 tokens",
           "head64-tail190": "first 64 + last 190 tokens",
           "windows-2x256-mean": "up to 2 windows of 254 (first from the head, last to the end), logits averaged"}
    for r in results["rows"]:
        m = _metrics(out, r["name"])
        epochs = load_config(out / r["name"] / "config.yaml").train.epochs
        per = f"{m['train_tokens'] / (m['data']['train']['n'] * epochs):.0f}" if m.get("train_tokens") else ""
        lines.append("| " + " | ".join([
            f"`{r['name']}`", how.get(r["name"], ""), f"**{_acc(r['accuracy'])}**",
            f"[{r['accuracy_ci_low']:.3f}, {r['accuracy_ci_high']:.3f}]", _acc(r["roc_auc"]),
            duration(r["train_seconds"]), duration(r["test_seconds"]), duration(m.get("wall_seconds")), per]) + " |")
    return lines


def section() -> str:
    machine = f"{arch()}, {cpus_online()} CPU cores, bf16 instructions: {yes_no(bf16_native())}"
    lines = ["## The accuracy frontier: accuracy per minute on 2 CPU cores", "",
             "Made by `.venv/bin/python benchmarks/frontier_doc.py`, which runs "
             "`sentitune bench configs/benches/frontier.yaml --out runs/bench/frontier` and "
             "`sentitune bench configs/benches/truncation.yaml --out runs/bench/truncation` (finished rows are "
             f"skipped) and writes this section. Machine: {machine}. Times are wall-clock on this machine: "
             "`training` includes building the feature cache and fitting the n-gram model, `test pass` the scoring "
             "of every test review, `whole row` the command from start to end (reading the archive, tokenizing, "
             "loading the model included).", ""]
    frontier = _results("frontier")
    if frontier:
        table, rows = frontier_table(frontier)
        lines += best_lines(rows) + ["", *table, "",
                                     "`transformer alone` / `n-gram alone`: the two halves of an ensemble row scored "
                                     "on their own on the same test reviews (metrics.json `ensemble.test`); the "
                                     "ensemble adds their log-probabilities with two weights fitted on the "
                                     "validation reviews (sentitune.ensemble).", "",
                                     "![time to accuracy](results/time_to_accuracy.png)", "",
                                     "The plot is the bench's own (`sentitune bench` draws it into "
                                     "runs/bench/frontier/plots/); the dashed line is the best accuracy reached "
                                     "by that many minutes."]
    truncation = _results("truncation")
    if truncation:
        first = load_config(BENCHES["truncation"][1] / truncation["rows"][0]["name"] / "config.yaml")
        lines += ["", "### Which tokens to read", "",
                  f"The README job's transformer alone (cached MiniLM prefix, top 2 layers, "
                  f"{first.data.train_size:,} training reviews, {first.train.epochs:g} epoch(s)), four ways to read a "
                  f"review longer than its {first.data.max_length}-token window; {first.data.eval_size:,} test "
                  "reviews (`configs/benches/truncation.yaml`). `tokens read per review`: training tokens per "
                  "training review and epoch.", "", *truncation_table(truncation)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only rewrite the section from the finished rows")
    args = parser.parse_args()
    sentitune = str(Path(sys.executable).parent / "sentitune")
    for name, (bench, out) in BENCHES.items():
        if args.no_run:
            subprocess.run([sentitune, "bench", str(bench), "--out", str(out), "--report-only"], check=True)
            continue
        done = subprocess.run([sentitune, "bench", str(bench), "--out", str(out), "--no-progress"], check=False)
        if done.returncode not in (0, 1):  # 1: a row failed; the results say which
            raise SystemExit(f"{name}: sentitune bench exited {done.returncode}")
    PAGE.mkdir(parents=True, exist_ok=True)
    plot = BENCHES["frontier"][1] / "plots" / "time_to_accuracy.png"
    if plot.exists():
        shutil.copyfile(plot, PAGE / plot.name)
    write_block(DOC, BLOCK, section(), require=True)  # its place, under the title, is results_doc's layout
    print(f"wrote the frontier section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
