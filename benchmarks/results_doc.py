"""docs/RESULTS.md and its report page, from the results benches and searches (nothing here is typed in).

    .venv/bin/python benchmarks/results_doc.py            # run what is not finished yet, then write the doc
    .venv/bin/python benchmarks/results_doc.py --no-run   # only rewrite the doc from the finished runs

What it runs, one after another (finished rows and searches are only read back):
- `sentitune bench configs/benches/offline-results.yaml`: the matrix, every method on MiniLM read as the
  README's job reads a review (256 tokens, head + tail), the LoRA rank sweep, the TF-IDF references,
  SmolLM2 zero-shot;
- `sentitune bench configs/benches/published-measured.yaml`: the published experiments the matrix does not
  answer, with their offline stand-ins at a stated size;
- `sentitune search configs/searches/minilm-probe.yaml` (the probe's lr and epochs) and
  `configs/searches/smollm2-partial-lr.yaml` (the GPT-2 study's learning rate, for its stand-in), each
  chosen on validation from the cached frozen prefix a bench row built;
- `sentitune predict` with the tuned GPT-2 stand-in on a few new reviews (the study's last step).

The published section (benchmarks/published_doc.py) sets each published setup beside its stand-in's, with
the full-size command and an estimate of its CPU time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from published_doc import COUNTERPARTS, estimate, measured_rates, published_section  # noqa: F401 (tests)

from sentitune.atomic import write_text
from sentitune.benching import load_bench, write_results
from sentitune.markdown import cell, duration, number
from sentitune.report import write_report

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ROOT / "configs" / "benches"
BENCH, MEASURED = BENCHES / "offline-results.yaml", BENCHES / "published-measured.yaml"
OFFLINE, PUBLISHED = BENCHES / "offline.yaml", BENCHES / "published.yaml"
OUT, MEASURED_OUT = ROOT / "runs" / "bench" / "offline-results", ROOT / "runs" / "bench" / "published-measured"
SEARCHES = {name: (ROOT / "configs" / "searches" / f"{name}.yaml", ROOT / "runs" / "search" / name)
            for name in ("minilm-probe", "smollm2-partial-lr")}
DOC = ROOT / "docs" / "RESULTS.md"
PAGE = ROOT / "docs" / "results"
COMMAND = ".venv/bin/python benchmarks/results_doc.py"
# Blocks of this page that other scripts write; a rewrite of the page keeps them (docs_block's markers): the
# frontier under the title, the label budget, the target section at the end.
KEPT = {"frontier": "benchmarks/frontier_doc.py", "labels": "benchmarks/labels_doc.py",
        "targets": "benchmarks/targets_doc.py"}
PLOTS = [("roc", "ROC curves"), ("accuracy_vs_parameters", "Accuracy vs trainable parameters"),
         ("accuracy_vs_time", "Accuracy vs training time"), ("curves", "Training and validation loss"),
         ("accuracy_by_length", "Accuracy by review length")]
# New reviews for the GPT-2 study's "predict on new reviews" step (written for this page, not from IMDb).
NEW_REVIEWS = [
    "A quiet, patient film that earns every one of its tears. The lead performance is astonishing.",
    "Two hours of my life I will never get back. The plot makes no sense and the jokes fall flat.",
    "The first half drags, but the ending is so good that I forgave it everything.",
    "Beautiful to look at, yet hollow: I stopped caring about these people long before the end.",
]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _metrics(out: Path, name: str) -> dict[str, Any]:
    path = out / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _row_time(r: dict[str, Any]) -> float | None:
    parts = [r.get("train_seconds"), r.get("test_seconds")]
    return sum(p for p in parts if p) or None


def matrix_section(rows: list[dict[str, Any]], wall: dict[str, Any], ensembles: set[str]) -> list[str]:
    """The matrix and what it says: the best transformer row against TF-IDF on the same reviews (`ensembles`:
    the rows whose score is a transformer + n-gram ensemble)."""
    lines = ["## The matrix", "",
             "| run | method | accuracy | 95% CI | precision | recall | F1 | ROC AUC | trainable / total | train s "
             "| test s | whole row | McNemar p vs tfidf-lr |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['trainable_parameters']:,} / {r['total_parameters']:,}" if r["trainable_parameters"] else ""
        p = r["mcnemar_p_vs_tfidf"]
        lines.append(
            f"| {r['name']} | {r['method']} | {number(r['accuracy'])} | [{number(r['accuracy_ci_low'], 3)}, "
            f"{number(r['accuracy_ci_high'], 3)}] | {number(r['precision'])} | {number(r['recall'])} | "
            f"{number(r['f1'])} | {number(r['roc_auc'])} | {params} | {number(r['train_seconds'], 0)} | "
            f"{number(r['test_seconds'], 0)} | "
            f"{duration(wall.get(r['name']))} | {'' if p is None else f'{p:.2g}'} |")
    most = max((r["n"] for r in rows if r["n"]), default=0)
    others = [f"`{r['name']}` ({r['n']:,}: its McNemar cell is blank)" for r in rows if r["n"] and r["n"] != most]
    lines += ["", f"n = test reviews scored: {most:,}, the same stratified ones, for every row"
              + (f" except {', '.join(others)}" if others else "") + ". CI: 95% bootstrap over test reviews; "
              "McNemar: exact test on the same reviews. `quickstart` is the README's job (the partial row's "
              "transformer + NBSVM).", ""]
    alone = [r for r in rows if r["method"] not in ("tfidf", "zero-shot") and r["accuracy"] is not None
             and r["name"] not in ensembles]
    tfidf = next((r for r in rows if r["name"] == "tfidf-lr" and r["accuracy"] is not None), None)
    if alone and tfidf:
        top = max(alone, key=lambda r: r["accuracy"])
        above = [r["name"] for r in alone if r["accuracy"] > tfidf["accuracy"]]
        lines += [f"**Reading it.** Read as the README's job reads them, {len(above)} of the {len(alone)} "
                  f"transformer rows beat TF-IDF + logistic regression on the same 4,000 reviews "
                  f"({tfidf['accuracy']:.4f}, {duration(wall.get('tfidf-lr'))})"
                  + (f": {', '.join(f'`{n}`' for n in above)}" if above else "")
                  + f". The best transformer alone is `{top['name']}` ({top['accuracy']:.4f}, ROC AUC "
                  f"{top['roc_auc']:.4f}, McNemar p {top['mcnemar_p_vs_tfidf']:.2g}, "
                  f"{duration(wall.get(top['name']))})."]
        ensemble = next((r for r in rows if r["name"] in ensembles), None)
        if ensemble:
            lines[-1] += (f" The README's job, that transformer beside NBSVM, scores {ensemble['accuracy']:.4f} "
                          f"(McNemar p vs tfidf-lr {ensemble['mcnemar_p_vs_tfidf']:.2g}) in "
                          f"{duration(wall.get(ensemble['name']))}: the story of the frontier above, on these "
                          "reviews.")
        lines.append("")
    return lines


def lora_section(rows: list[dict[str, Any]], bench: dict[str, Any]) -> list[str]:
    sweep = sorted((r for r in rows if bench[r["name"]].config.method.name == "lora"),
                   key=lambda r: bench[r["name"]].config.method.lora.r)
    lines = ["## LoRA rank sweep", "", "MiniLM, adapters on query and value of all 6 layers, alpha = 2r.", "",
             "| r | alpha | trainable parameters | accuracy | ROC AUC | F1 | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in sweep:
        lo = bench[r["name"]].config.method.lora
        lines.append(f"| {lo.r} | {lo.alpha} | {r['trainable_parameters']:,} | {number(r['accuracy'])} | "
                     f"{number(r['roc_auc'])} | {number(r['f1'])} | {number(r['train_seconds'], 0)} |")
    return lines


def search_section(name: str, title: str, about: str, reference: dict[str, Any] | None) -> list[str]:
    """A search's trials (validation loss) and its best run's test score beside the hand-set bench row."""
    path, out = SEARCHES[name]
    command = f"`sentitune search {_rel(path)}`"
    if not (out / "search.json").is_file():
        return ["", f"## {title}", "", f"Not run yet: {command}."]
    result = json.loads((out / "search.json").read_text())
    best, done = result["best"] or {}, [t for t in result["trials"] if t["state"] == "COMPLETE"]
    test, params = best.get("test") or {}, sorted({k for t in done for k in t["params"]})
    lines = ["", f"## {title}", "", f"{command}: {len(done)} Optuna (TPE) trials, {about}", "",
             "| trial | " + " | ".join(p.split(".")[-1] for p in params) + " | validation loss |",
             "|---|" + "---|" * len(params) + "---|"]
    for t in sorted(done, key=lambda t: t["value"]):
        values = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (t["params"][p] for p in params)]
        lines.append(f"| {t['number']} | " + " | ".join(values) + f" | {t['value']:.4f} |")
    if test:
        wall = _metrics(out, "best").get("wall_seconds")
        lines += ["", f"Best (trial {best['trial']}): test accuracy **{test['accuracy']:.4f}**, ROC AUC "
                  f"{test['roc_auc']:.4f}" + (f" (the bench's hand-set `{reference['name']}`: "
                                              f"{number(reference['accuracy'])}, ROC AUC "
                                              f"{number(reference['roc_auc'])})" if reference else "")
                  + f"; the final run took {duration(wall)}."]
    edge = [p for p in params if len(done) > 2 and isinstance(best["params"].get(p), float)
            and best["params"][p] in (min(t["params"][p] for t in done), max(t["params"][p] for t in done))]
    if edge:
        lines += ["", f"The best {', '.join(p.split('.')[-1] for p in edge)} is at the edge of the values tried: "
                  f"{command[:-1]} --trials {2 * len(done)}` continues the study (the trials above are kept)."]
    return lines


def predict_section(run: Path, output: str | None) -> list[str]:
    """The GPT-2 study's last step, on the tuned stand-in: the exact command and what it printed."""
    command = f"sentitune predict {_rel(run)} " + " ".join(f'"{t}"' for t in NEW_REVIEWS)
    lines = ["", "### Predict on new reviews", "",
             "The study's last step, with the tuned stand-in above (reviews written for this page; each line: "
             "the label, the probability of positive, the review):", "",
             "```bash", command, "```", ""]
    return lines + (["```", output.rstrip(), "```"] if output else ["Not run yet (the search has no best run)."])


def run_predict(run: Path) -> str | None:
    if not (run / "model").exists():
        return None
    done = subprocess.run([str(Path(sys.executable).parent / "sentitune"), "predict", str(run), "--no-progress",
                           *NEW_REVIEWS], capture_output=True, text=True, check=True, cwd=ROOT)
    return done.stdout


def length_table(rows: list[dict[str, Any]]) -> list[str]:
    """Accuracy by words per review, and how much each row loses from the shortest bin to the longest."""
    from sentitune.plots import accuracy_by_length, read_row

    out: list[str] = []
    for r in rows:
        bins = accuracy_by_length(read_row(r["name"], OUT / r["name"]))
        if not out:
            out = ["| run | " + " | ".join(f"{label} words (n)" for label, _, _ in bins) + " | longest - shortest |",
                   "|---|" + "---|" * (len(bins) + 1)]
        accs = [acc for _, _, acc in bins if acc is not None]
        drop = f"{(accs[-1] - accs[0]) * 100:+.1f} points" if len(accs) > 1 else ""
        out.append(f"| {r['name']} | " + " | ".join(
            f"{acc:.4f} ({n:,})" if acc is not None else "" for _, n, acc in bins) + f" | {drop} |")
    return out


def build_doc(results: dict[str, Any], measured: dict[str, Any], predicted: str | None) -> str:
    from docs_block import markers  # this folder is on sys.path when the script runs
    from machine import arch, bf16_native, cpus_online, yes_no

    bench = {r.name: r for r in load_bench(BENCH).rows}
    measured_rows = {r.name: r for r in load_bench(MEASURED).rows}
    rows, by_name = results["rows"], {r["name"]: r for r in results["rows"] + measured["rows"]}
    metrics = {r["name"]: _metrics(OUT, r["name"]) for r in rows}  # each run's metrics.json, read once
    metrics |= {r["name"]: _metrics(MEASURED_OUT, r["name"]) for r in measured["rows"]}
    wall = {name: m.get("wall_seconds") for name, m in metrics.items()}
    cfg = next(r for r in bench.values() if r.config.method.name == "lora").config
    lines = [
        "# Results: which method, at what cost", "", *markers("frontier"), "", *markers("labels"), "",
        f"Generated by `{COMMAND}` (it runs `sentitune bench {_rel(BENCH)} --out {_rel(OUT)}` and "
        f"`sentitune bench {_rel(MEASURED)} --out {_rel(MEASURED_OUT)}`, skipping finished rows, the two searches "
        "below, then writes this page and [results/report.html](results/report.html)). Nothing here is typed by "
        "hand.", "",
        f"**Setup.** Every transformer row of the matrix trains on the same {cfg.data.train_size:,} stratified "
        f"IMDb training reviews ({int(cfg.data.val_size):,} more carved from train for validation; seed "
        f"{cfg.train.seed}) and is scored on the same {cfg.data.eval_size:,} stratified test reviews. Reviews are "
        f"read as the README's job reads them: {cfg.data.max_length} tokens, a longer review as its first "
        f"quarter and last three quarters ({cfg.data.truncation}); probe and partial rows train and are scored "
        "from their frozen prefix, cached once (`train.feature_cache`), the other rows run the whole model. "
        f"The TF-IDF rows read whole reviews. Machine: {arch()} CPU, {cpus_online()} cores, bf16 instructions: "
        f"{yes_no(bf16_native())} (`train.precision: auto` trains in bf16 where they exist; `train.eval_precision: "
        "auto` here). Times are of this 2-core machine, rows one after another: `train s` includes building a "
        "feature cache, `test s` the test pass, `whole row` the command from start to end (data and model "
        "loading included).", "",
        *matrix_section(rows, wall, {r["name"] for r in rows if metrics[r["name"]].get("ensemble")}),
        *lora_section(rows, bench),
    ]
    lines += search_section("minilm-probe", "Search: the probe's learning rate and epochs, chosen on validation",
                            "each an ordinary run with the test pass off, scored by validation loss on the 500 "
                            "validation reviews; the frozen MiniLM states come from the feature cache the bench's "
                            "probe row built. The best settings were then trained once and scored once on the "
                            "matrix's test reviews.", by_name.get("minilm-probe"))
    rates = measured_rates(rows, bench, OUT)
    commands = {name: f"sentitune bench {_rel(path)} --out {_rel(out)} --rows {name}"
                for path, out, names in ((BENCH, OUT, bench), (MEASURED, MEASURED_OUT, measured_rows))
                for name in names}
    lines += ["", "## Every published experiment and its offline counterpart", "",
              f"`{_rel(PUBLISHED)}` is each published experiment as run (hub models, full data); `{_rel(OFFLINE)}` "
              "the same with the packaged stand-ins at full size. Each stand-in is measured here: in the matrix "
              f"above, or at the size its name states in `{_rel(MEASURED)}` (what differs from the published "
              "setup is listed beside it). The last columns are the full-size offline command and an estimate of "
              "its CPU time on this machine (the method below).", "",
              *published_section(load_bench(PUBLISHED).rows, {r.name: r for r in load_bench(OFFLINE).rows},
                                 bench | measured_rows, by_name, wall, rates, commands)]
    gpt2 = measured_rows["smollm2-partial-1k"].config
    lines += search_section("smollm2-partial-lr", "The GPT-2 study's learning rate, searched",
                            f"one epoch each on the stand-in's {gpt2.data.train_size:,} training reviews, scored by "
                            f"validation loss on its {int(gpt2.data.val_size):,} validation reviews (the frozen "
                            f"{gpt2.method.freeze_layers} blocks read from the cache the bench row built); the best "
                            f"learning rate then trained the study's {gpt2.train.epochs:g} epochs and was scored "
                            f"once on the row's {gpt2.data.eval_size:,} test reviews.",
                            by_name.get("smollm2-partial-1k"))
    lines += predict_section(SEARCHES["smollm2-partial-lr"][1] / "best", predicted)
    lines += ["", "### How the estimates are made, and how good they are", "",
              "The estimate is arithmetic " + sys.modules["published_doc"].__doc__.split(
                  "The estimate is arithmetic")[1].strip().replace("\n", " "), "",
              f"Rates measured in the matrix: training {rates['train'] / 1e9:.1f} GFLOP/s, inference "
              f"{rates['inference'] / 1e9:.1f} GFLOP/s (MiniLM), SmolLM2 inference "
              f"{rates['decoder_inference'] / 1e9:.1f} GFLOP/s.", "",
              "| measured row | estimated | measured (train s + test s; zero-shot: whole row) |", "|---|---|---|"]
    for name, row in (bench | measured_rows).items():
        est, r = estimate(row.config, rates), by_name.get(name)
        if est is not None and r:
            lines.append(f"| {cell(name)} | {duration(est)} | {duration(_row_time(r) or wall.get(name))} |")
    lines += ["", "## Accuracy by review length", "",
              "Words per review (whitespace-separated, after cleaning), the same bins for every tokenizer:", "",
              *length_table(rows), "", "## Plots", ""]
    for name, title in PLOTS:
        lines += [f"![{title}](results/{name}.png)", ""]
    return "\n".join([*lines, *markers("targets")]).rstrip() + "\n"


def keep_blocks(doc: str, old: str) -> str:
    """The new page `doc` with the blocks other scripts wrote into the `old` page (KEPT) as they were."""
    from docs_block import put_block, read_block

    for name in KEPT:
        body = read_block(old, name)
        if body is not None:
            doc = put_block(doc, name, body, require=True)
    return doc


def run_everything() -> None:
    """The two benches, then the two searches (each reads the feature cache its bench row built)."""
    cli = str(Path(sys.executable).parent / "sentitune")
    for bench, out in ((BENCH, OUT), (MEASURED, MEASURED_OUT)):
        done = subprocess.run([cli, "bench", str(bench), "--out", str(out), "--no-progress"], check=False)
        if done.returncode not in (0, 1):  # 1: a row failed; the doc says which
            raise SystemExit(done.returncode)
    for path, out in SEARCHES.values():
        subprocess.run([cli, "search", str(path), "--out", str(out), "--no-progress"], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only rewrite the doc from the finished runs")
    args = parser.parse_args()
    if not args.no_run:
        run_everything()
    results = write_results(load_bench(BENCH), OUT)
    measured = write_results(load_bench(MEASURED), MEASURED_OUT)
    predicted = run_predict(SEARCHES["smollm2-partial-lr"][1] / "best")
    PAGE.mkdir(parents=True, exist_ok=True)
    write_report(OUT, PAGE / "report.html")
    for name, _ in PLOTS:  # only this page's plots: the frontier's and the label budget's have their own scripts
        if (OUT / "plots" / f"{name}.png").is_file():
            shutil.copyfile(OUT / "plots" / f"{name}.png", PAGE / f"{name}.png")
    write_text(DOC, keep_blocks(build_doc(results, measured, predicted),
                                DOC.read_text(encoding="utf-8") if DOC.exists() else ""))
    print(f"wrote {_rel(DOC)} and {_rel(PAGE / 'report.html')}")


if __name__ == "__main__":
    main()
