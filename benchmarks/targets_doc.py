"""The target-dependent sentiment section of docs/RESULTS.md, from the target bench (configs/benches/target.yaml).

    .venv/bin/python benchmarks/targets_doc.py                 # run the bench (finished rows are skipped), write
    .venv/bin/python benchmarks/targets_doc.py --rows a,b      # run only these rows first
    .venv/bin/python benchmarks/targets_doc.py --no-run        # only rewrite the section from the finished rows

The section lives between the `<!-- targets:start -->` / `<!-- targets:end -->` markers in docs/RESULTS.md
(benchmarks/results_doc.py keeps it when it rewrites the rest). Every number comes from a run directory under
runs/bench/target: accuracy and its bootstrap CI, macro-F1, per-class F1 and times from the bench's
results.json (which reads the run directories). Rows not run yet are listed with their command, never with
a number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_doc import refreshed_results
from docs_block import write_block
from machine import arch, cpus_online

from sentitune.benching import load_bench
from sentitune.report import write_report

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "configs" / "benches" / "target.yaml"
OUT = ROOT / "runs" / "bench" / "target"
DOC = ROOT / "docs" / "RESULTS.md"
PAGE = ROOT / "docs" / "results" / "targets.html"
BLOCK = "targets"  # docs/RESULTS.md's block: <!-- targets:start --> ... <!-- targets:end -->
DATASETS = {"restaurants": "SemEval-2014 restaurants", "laptops": "SemEval-2014 laptops", "twitter": "acl-14 Twitter"}


def _f(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _seconds(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:,.0f}"


def _wall(name: str) -> float | None:
    """The whole run (data, model, training, evaluation) from its metrics.json: zero-shot and tfidf rows have
    no separate training time."""
    return json.loads((OUT / name / "metrics.json").read_text(encoding="utf-8")).get("wall_seconds")


def section(results: dict[str, Any]) -> str:
    bench = load_bench(BENCH)
    by_name = {r["name"]: r for r in results["rows"]}
    lines = ["## Target-dependent sentiment", "",
             "Three classes (negative / neutral / positive) toward a target in a sentence: SemEval-2014 restaurants "
             "and laptops, acl-14 Twitter ([TARGETS.md](TARGETS.md)). Each row trains on the set's training file "
             "(10% carved off, stratified, for validation) and is scored once on its official test file. Made by:",
             "", "```bash", "sentitune bench configs/benches/target.yaml --out runs/bench/target", "```", "",
             f"(`.venv/bin/python benchmarks/targets_doc.py` runs that bench and rewrites this section; "
             f"report page: [results/targets.html](results/targets.html).) Machine: {cpus_online()} CPU cores "
             f"({arch()}), bf16 training where the CPU has it (`train.precision: auto`); times are "
             "wall-clock seconds of training and of the whole run (data, model, training, test). "
             "Accuracy CI: 95% bootstrap over test examples. "
             "Macro-F1 is the unweighted mean of the three classes' F1.", ""]
    head = ["data", "row", "model", "method", "test n", "accuracy", "95% CI", "macro-F1", "F1 neg / neu / pos",
            "ROC AUC (ovr)", "train s", "wall s", "published (accuracy)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    missing = []
    for row in bench.rows:
        r = by_name.get(row.name)
        if r is None:
            missing.append(row.name)
            continue
        per = r["per_class"]
        f1s = " / ".join(_f(per.get(c, {}).get("f1"), 3) for c in ("negative", "neutral", "positive"))
        published = (f"{_f(r['published_accuracy'], 3)} ({r['published_source']})"
                     if r.get("published_accuracy") is not None else "")
        lines.append("| " + " | ".join([
            DATASETS.get(row.name.split("-")[0], ""), row.name,
            row.config.model.spec if row.config.method.name != "tfidf" else "-", row.config.method.name,
            _f(r["n"]), f"**{_f(r['accuracy'])}**", f"[{_f(r['accuracy_ci_low'], 3)}, "
            f"{_f(r['accuracy_ci_high'], 3)}]", f"**{_f(r['macro_f1'])}**", f1s, _f(r["roc_auc"]),
            _seconds(r["train_seconds"]), _seconds(_wall(row.name)), published]) + " |")
    if missing:
        lines += ["", "Not run here yet (out of this session's time; each is one command, nothing is estimated or "
                  "typed in):", ""]
        lines += [f"- `{name}`: `sentitune bench configs/benches/target.yaml --out runs/bench/target --rows {name}`"
                  for name in missing]
    lines += ["", "Settings of each row: [configs/experiments/target/](../configs/experiments/target/) "
              "(the bench file names the overrides)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    results = refreshed_results(__doc__, BENCH, OUT, ROOT)
    write_report(OUT, PAGE)
    write_block(DOC, BLOCK, section(results))
    print(f"wrote the target section of {DOC.relative_to(ROOT)} and {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
