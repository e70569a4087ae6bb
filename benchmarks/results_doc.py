"""docs/RESULTS.md and its report page, from the offline results bench (configs/benches/offline-results.yaml).

    .venv/bin/python benchmarks/results_doc.py            # run the bench (finished rows are skipped), write the doc
    .venv/bin/python benchmarks/results_doc.py --no-run   # only rewrite the doc from the finished rows

Running it also runs `sentitune search configs/searches/minilm-probe.yaml` (the probe's learning rate and
epochs chosen on validation, from the bench row's cached features; a finished search is only read back).

What it writes, all from run directories and the shipped bench files (no number is typed here):
- the measured matrix (every method on MiniLM on the full 25,000-review test set, the LoRA rank sweep,
  the TF-IDF references, SmolLM2 zero-shot), its plots and `docs/results/report.html`;
- for every row of configs/benches/published.yaml, its offline counterpart in configs/benches/offline.yaml:
  the measured row that answers it here (at this bench's smaller budget) and the exact command of the
  full-size row with an estimate of its CPU time.

The estimate is arithmetic on measured rates, not a run: FLOPs per token for the method (2N forward,
+2N for activation gradients, +2N for weight gradients of the layers that train; N = non-embedding
parameters) times the tokens the row would see (a seeded sample of 1,000 training reviews tokenized with
the row's tokenizer, truncated at its max_length), divided by the FLOP rate this machine reached in the
measured rows (training and inference separately; SmolLM2 inference from its zero-shot row). Attention's
quadratic cost and a bigger model's better matmul efficiency are ignored: read it as +-2x. The doc also
applies the estimator to the measured rows, next to their measured times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sentitune.atomic import write_text
from sentitune.benching import BenchRow, load_bench
from sentitune.config import ExperimentConfig
from sentitune.markdown import duration
from sentitune.report import write_report

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "configs" / "benches" / "offline-results.yaml"
OFFLINE = ROOT / "configs" / "benches" / "offline.yaml"
PUBLISHED = ROOT / "configs" / "benches" / "published.yaml"
OUT = ROOT / "runs" / "bench" / "offline-results"
SEARCH = ROOT / "configs" / "searches" / "minilm-probe.yaml"
SEARCH_OUT = ROOT / "runs" / "search" / "minilm-probe"
DOC = ROOT / "docs" / "RESULTS.md"
PAGE = ROOT / "docs" / "results"
COMMAND = ".venv/bin/python benchmarks/results_doc.py"
# Blocks of this page that other scripts write; a rewrite of the page keeps them (docs_block's markers): the
# frontier under the title, the target section at the end.
KEPT = {"frontier": "benchmarks/frontier_doc.py", "labels": "benchmarks/labels_doc.py",
        "targets": "benchmarks/targets_doc.py"}
IMDB_TRAIN, IMDB_TEST = 25_000, 25_000

# published row -> (its full-size offline counterpart in configs/benches/offline.yaml, the measured row here)
COUNTERPARTS: dict[str, tuple[str, str | None]] = {
    "gpt2-zero-shot": ("smollm2-zero-shot", "smollm2-zero-shot"),
    "gpt2-partial": ("smollm2-partial", None),
    "gpt2-lora-last2": ("smollm2-lora-last2", None),
    "bert-partial": ("minilm-partial", "minilm-partial-freeze4"),
    "bert-lora": ("minilm-lora", "minilm-lora-r8"),
    "bert-lora-5k": ("minilm-lora-5k", None),
    "bert-cased-lora": ("mpnet-lora", None),
    "distilbert-two-phase": ("minilm-two-phase", "minilm-two-phase"),
    "bert-lora-r4": ("minilm-lora-r4", "minilm-lora-r4"),
    "bert-lora-r16": ("minilm-lora-r16", "minilm-lora-r16"),
    "bert-lora-r32": ("minilm-lora-r32", "minilm-lora-r32"),
    "bert-full": ("minilm-full", "minilm-full"),
    "distilbert-full": ("minilm-full", "minilm-full"),
    "tfidf-nb": ("tfidf-nb", "tfidf-nb-train25k"),
    "tfidf-lr": ("tfidf-lr", "tfidf-lr-train25k"),
}


# ------------------------------------------------------------------------------------------ estimates


@cache
def _sample_texts() -> list[str]:
    from sentitune.data.imdb import locate_imdb, read_imdb
    from sentitune.data.text import clean_text

    train = read_imdb(locate_imdb(None), ("train",))["train"]
    picks = np.random.default_rng(0).choice(len(train), size=1000, replace=False)
    return [clean_text(train[i].text) for i in picks]


@cache
def mean_tokens(spec: str, max_length: int) -> float:
    """Mean tokens per review after truncation at max_length, on 1,000 seeded training reviews."""
    from transformers import AutoTokenizer

    from sentitune.models.registry import resolve

    tok = AutoTokenizer.from_pretrained(resolve(spec).source)
    lengths = [len(ids) for ids in tok(_sample_texts(), add_special_tokens=True)["input_ids"]]
    return float(np.mean(np.minimum(lengths, max_length)))


@cache
def model_shape(spec: str) -> tuple[int, int]:
    """(non-embedding parameters, blocks), built on the meta device: no memory, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModel

    from sentitune.models.blocks import num_blocks
    from sentitune.models.registry import resolve

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(resolve(spec).source))
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    return sum(p.numel() for p in model.parameters()) - embedding, num_blocks(model)


def train_flops_per_token(cfg: ExperimentConfig, method: str, n: int, blocks: int) -> float:
    """Per trained token: forward 2N, activation gradients down to the lowest layer that trains, weight
    gradients for the layers that train (LoRA: none for the frozen base weights)."""
    if method == "probe":
        return 2 * n
    if method == "full":
        return 6 * n
    if method == "partial":
        return 2 * n + 4 * n * (blocks - cfg.method.freeze_layers) / blocks
    top = cfg.method.lora.top_layers or blocks  # lora
    return 2 * n + 2 * n * top / blocks


def sizes(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(train, validation, test) review counts of a row."""
    pool = IMDB_TRAIN
    val = int(cfg.data.val_size) if cfg.data.val_size >= 1 else round(cfg.data.val_size * pool)
    train = cfg.data.train_size or pool - val
    return train, val, cfg.data.eval_size or IMDB_TEST


def estimate(cfg: ExperimentConfig, rates: dict[str, float]) -> float | None:
    """Estimated CPU seconds of a row on this machine (None for tfidf: measured in seconds anyway)."""
    if cfg.method.name == "tfidf":
        return None
    spec = cfg.model.spec
    n, blocks = model_shape(spec)
    decoder = spec.startswith("smollm2")
    infer = rates["decoder_inference" if decoder else "inference"]
    train_rate = rates["train"] * (rates["decoder_inference"] / rates["inference"] if decoder else 1.0)
    train, val, test = sizes(cfg)
    if cfg.method.name == "zero-shot":
        tokens = mean_tokens(spec, cfg.zero_shot.review_tokens) + 10  # the template around the review
        return 2 * n * tokens * (test + 2 * cfg.zero_shot.calibration_size) / infer
    tokens = mean_tokens(spec, cfg.data.max_length)
    seconds = 0.0
    for phase in cfg.phases():
        seconds += phase.epochs * train * tokens * train_flops_per_token(cfg, phase.method, n, blocks) / train_rate
        seconds += max(1, round(phase.epochs)) * val * tokens * 2 * n / infer
    return seconds + test * tokens * 2 * n / infer


def measured_rates(rows: list[dict[str, Any]], bench: dict[str, BenchRow]) -> dict[str, float]:
    """FLOP/s this machine reached: training (LoRA and full rows), inference (their test passes), and
    SmolLM2's inference (its zero-shot row's tokens/s)."""
    train, infer = [], []
    for r in rows:
        cfg = bench[r["name"]].config
        if cfg.method.name not in ("lora", "full") or not r["train_tokens_per_second"]:
            continue
        n, blocks = model_shape(cfg.model.spec)
        train.append(r["train_tokens_per_second"] * train_flops_per_token(cfg, cfg.method.name, n, blocks))
        infer.append(r["n"] * mean_tokens(cfg.model.spec, cfg.data.max_length) * 2 * n / r["test_seconds"])
    rates = {"train": statistics.median(train), "inference": statistics.median(infer)}
    zero = next((r for r in rows if bench[r["name"]].config.method.name == "zero-shot"), None)
    metrics = json.loads((OUT / zero["name"] / "metrics.json").read_text()) if zero else {}
    if metrics.get("tokens_per_second"):
        rates["decoder_inference"] = metrics["tokens_per_second"] * 2 * model_shape("smollm2-135m")[0]
    else:
        rates["decoder_inference"] = rates["inference"]
    return rates


# ------------------------------------------------------------------------------------------ the doc


def _f(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _row_time(r: dict[str, Any]) -> float | None:
    parts = [r.get("train_seconds"), r.get("test_seconds")]
    return sum(p for p in parts if p) or None


def build_doc(results: dict[str, Any]) -> str:
    bench = {r.name: r for r in load_bench(BENCH).rows}
    offline = {r.name: r for r in load_bench(OFFLINE).rows}
    published = load_bench(PUBLISHED).rows
    rows = results["rows"]
    by_name = {r["name"]: r for r in rows}
    rates = measured_rates(rows, bench)
    from docs_block import markers  # this folder is on sys.path when the script runs, not when a test imports it
    from machine import arch, bf16_native, cpus_online, yes_no

    lora = next(r for r in bench.values() if r.config.method.name == "lora")
    cfg = lora.config
    wall = {r["name"]: json.loads((OUT / r["name"] / "metrics.json").read_text()).get("wall_seconds") for r in rows}
    lines = [
        "# Results: which method, at what cost",
        "",
        *markers("frontier"),
        "",
        *markers("labels"),
        "",
        f"Generated by `{COMMAND}` (it runs `sentitune bench {BENCH.relative_to(ROOT)} --out "
        f"{OUT.relative_to(ROOT)}`, skipping finished rows, then writes this page and "
        "[results/report.html](results/report.html)). Nothing here is typed by hand.",
        "",
        f"**Setup.** Every transformer row trains on the same {cfg.data.train_size:,} stratified IMDb training "
        f"reviews ({int(cfg.data.val_size):,} more carved from train for validation; seed {cfg.train.seed}) and is "
        f"scored on the **full {IMDB_TEST:,}-review test set**; reviews are cut to {cfg.data.max_length} tokens "
        "(the TF-IDF rows read whole reviews). Machine: "
        f"{arch()} CPU, {cpus_online()} cores, bf16 instructions: {yes_no(bf16_native())} "
        "(`train.precision: auto` trains in bf16 where they exist; `train.eval_precision: auto` here). "
        "Times are seconds of this 2-core machine: `train s` includes building a feature cache, `test s` the "
        "25,000-review pass, `whole row` the command from start to end (loading data and model included). Rows ran "
        "one after another, but at times beside other work on the same two cores (tests; the probe and partial rows "
        "most): read the times as upper bounds.",
        "",
        "## The matrix",
        "",
        "| run | method | accuracy | 95% CI | precision | recall | F1 | ROC AUC | trainable / total | train s | test s "
        "| whole row | McNemar p vs tfidf-lr |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = (f"{r['trainable_parameters']:,} / {r['total_parameters']:,}" if r["trainable_parameters"] else "")
        p = r["mcnemar_p_vs_tfidf"]
        lines.append(
            f"| {r['name']} | {r['method']} | {_f(r['accuracy'])} | [{_f(r['accuracy_ci_low'], 3)}, "
            f"{_f(r['accuracy_ci_high'], 3)}] | {_f(r['precision'])} | {_f(r['recall'])} | {_f(r['f1'])} | "
            f"{_f(r['roc_auc'])} | {params} | {_f(r['train_seconds'], 0)} | {_f(r['test_seconds'], 0)} | "
            f"{duration(wall.get(r['name']))} | {'' if p is None else f'{p:.2g}'} |")
    lines += ["", "n = test reviews scored: 25,000 for every row except `smollm2-zero-shot` (2,000 stratified test "
              "reviews: a 25,000-review pass of a 135M decoder takes hours here), whose McNemar cell is therefore "
              "blank. CI: 95% bootstrap over test reviews; McNemar: exact test on the same reviews.", ""]
    trained = [r for r in rows if r["method"] not in ("tfidf", "zero-shot") and r["accuracy"] is not None]
    same_split = by_name.get("tfidf-lr")
    if trained and same_split:
        top = max(trained, key=lambda r: r["accuracy"])
        lines += [f"**Reading it.** The best transformer row here is `{top['name']}` ({top['accuracy']:.4f}, ROC AUC "
                  f"{top['roc_auc']:.4f}, {duration(wall.get(top['name']))}); TF-IDF + logistic regression on the "
                  f"same 4,000 reviews scores {same_split['accuracy']:.4f} in {duration(wall.get('tfidf-lr'))}. "
                  "The table by length below shows where the transformer rows lose: every MiniLM row, cut at 128 "
                  "tokens, falls with review length, while TF-IDF, which reads whole reviews, does not.", ""]
    if results.get("not_reported"):
        lines += ["Not (yet) reported: " + "; ".join(f"`{k}` ({v})" for k, v in results["not_reported"].items()), ""]

    sweep = [r for r in rows if bench[r["name"]].config.method.name == "lora"]
    sweep.sort(key=lambda r: bench[r["name"]].config.method.lora.r)
    lines += ["## LoRA rank sweep", "", "MiniLM, adapters on query and value of all 6 layers, alpha = 2r.", "",
              "| r | alpha | trainable parameters | accuracy | ROC AUC | F1 | train s |",
              "|---|---|---|---|---|---|---|"]
    for r in sweep:
        lo = bench[r["name"]].config.method.lora
        lines.append(f"| {lo.r} | {lo.alpha} | {r['trainable_parameters']:,} | {_f(r['accuracy'])} | "
                     f"{_f(r['roc_auc'])} | {_f(r['f1'])} | {_f(r['train_seconds'], 0)} |")

    lines += search_section(by_name)
    lines += ["", "## Every published experiment and its offline counterpart", "",
              f"`{PUBLISHED.relative_to(ROOT)}` is each published experiment as run (hub models, full data). "
              f"`{OFFLINE.relative_to(ROOT)}` is the same matrix with the packaged models. The measured column is "
              "the row of the matrix above that answers it here (4,000 training reviews, 128 tokens); the last "
              "column estimates the full-size offline row on this machine (see the method below).", "",
              "| published row | setup | offline counterpart | measured here | accuracy | full-size command | "
              "estimated CPU time |", "|---|---|---|---|---|---|---|"]
    for row in published:
        counterpart, measured = COUNTERPARTS[row.name]
        c = row.config
        setup = f"tfidf-{c.method.tfidf.variant}" if c.method.name == "tfidf" else f"{c.model.spec}, {c.method.name}"
        if row.published:
            setup += f"; published {row.published['accuracy']:.4f} ({row.published['source']})"
        m = by_name.get(measured) if measured else None
        command = f"`sentitune bench {OFFLINE.relative_to(ROOT)} --rows {counterpart}`"
        est = estimate(offline[counterpart].config, rates)
        spec = offline[counterpart].config
        what = "tfidf" if spec.method.name == "tfidf" else spec.model.spec
        lines.append(f"| {row.name} | {setup} | {counterpart} ({what}) | "
                     f"{measured or 'not measured'} | {_f(m['accuracy']) if m else ''} | {command} | "
                     f"{duration(est) if est is not None else 'about a minute (measured: tfidf rows)'} |")

    lines += ["", "### How the estimates are made, and how good they are", "",
              "The estimate is arithmetic " + __doc__.split("The estimate is arithmetic")[1].strip().replace("\n", " "),
              "",
              f"Rates measured in this bench: training {rates['train'] / 1e9:.1f} GFLOP/s, inference "
              f"{rates['inference'] / 1e9:.1f} GFLOP/s (MiniLM), SmolLM2 inference "
              f"{rates['decoder_inference'] / 1e9:.1f} GFLOP/s.", "",
              "| measured row | estimated | measured (train s + test s; zero-shot: whole row) |", "|---|---|---|"]
    for r in rows:
        est = estimate(bench[r["name"]].config, rates)
        if est is not None:
            lines.append(f"| {r['name']} | {duration(est)} | {duration(_row_time(r) or wall.get(r['name']))} |")

    lines += ["", "## Accuracy by review length", "",
              "Words per review (whitespace-separated, after cleaning), the same bins for every tokenizer:", "",
              *length_table(rows), "", "## Plots", ""]
    for name, title in (("roc", "ROC curves"), ("accuracy_vs_parameters", "Accuracy vs trainable parameters"),
                        ("accuracy_vs_time", "Accuracy vs training time"), ("curves", "Training and validation loss"),
                        ("accuracy_by_length", "Accuracy by review length")):
        lines += [f"![{title}](results/{name}.png)", ""]
    lines += markers("targets")
    return "\n".join(lines).rstrip() + "\n"


def search_section(by_name: dict[str, Any]) -> list[str]:
    """The probe row again, its lr and epochs chosen by `sentitune search` on validation (search.json)."""
    path = SEARCH_OUT / "search.json"
    if not path.is_file():
        return ["", "## Search", "", f"Not run yet: `sentitune search {SEARCH.relative_to(ROOT)}`."]
    result = json.loads(path.read_text())
    best = result["best"] or {}
    test = best.get("test") or {}
    done = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    probe = by_name.get("minilm-probe")
    wall = json.loads((SEARCH_OUT / "best" / "metrics.json").read_text()) if (SEARCH_OUT / "best").is_dir() else {}
    lines = ["", "## Search: the probe's learning rate and epochs, chosen on validation", "",
             f"`sentitune search {SEARCH.relative_to(ROOT)}`: {len(done)} Optuna (TPE) trials, each an ordinary "
             "run with the test pass off, scored by validation loss on the 500 validation reviews; the frozen "
             "MiniLM states come from the feature cache the bench's probe row built. The best settings were "
             "then trained once and scored once on the 25,000 test reviews.", "",
             "| trial | lr | epochs | validation loss |", "|---|---|---|---|"]
    for t in sorted(done, key=lambda t: t["value"]):
        lines.append(f"| {t['number']} | {t['params']['train.lr']:.3g} | {t['params']['train.epochs']} | "
                     f"{t['value']:.4f} |")
    if test:
        lines += ["", f"Best (trial {best['trial']}): test accuracy **{test['accuracy']:.4f}**, ROC AUC "
                  f"{test['roc_auc']:.4f} (the bench's hand-set probe: "
                  f"{_f(probe['accuracy']) if probe else '?'}, ROC AUC {_f(probe['roc_auc']) if probe else '?'}); "
                  f"the final run took {duration(wall.get('wall_seconds'))}."]
    return lines


def length_table(rows: list[dict[str, Any]]) -> list[str]:
    from sentitune.plots import accuracy_by_length, read_row

    out: list[str] = []
    for r in rows:
        bins = accuracy_by_length(read_row(r["name"], OUT / r["name"]))
        if not out:
            out = ["| run | " + " | ".join(f"{label} words (n)" for label, _, _ in bins) + " |",
                   "|---|" + "---|" * len(bins)]
        out.append(f"| {r['name']} | " + " | ".join(
            f"{acc:.4f} ({n:,})" if acc is not None else "" for _, n, acc in bins) + " |")
    return out


def keep_blocks(doc: str, old: str) -> str:
    """The new page `doc` with the blocks other scripts wrote into the `old` page (KEPT) as they were."""
    from docs_block import put_block, read_block

    for name in KEPT:
        body = read_block(old, name)
        if body is not None:
            doc = put_block(doc, name, body, require=True)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only rewrite the doc from the finished rows")
    args = parser.parse_args()
    if not args.no_run:
        done = subprocess.run([str(Path(sys.executable).parent / "sentitune"), "bench", str(BENCH), "--out", str(OUT),
                               "--no-progress"], check=False)
        if done.returncode not in (0, 1):  # 1: a row failed; the doc says which
            raise SystemExit(done.returncode)
        subprocess.run([str(Path(sys.executable).parent / "sentitune"), "search", str(SEARCH), "--out",
                        str(SEARCH_OUT), "--no-progress"], check=False)
    from sentitune.benching import write_results

    results = write_results(load_bench(BENCH), OUT)
    PAGE.mkdir(parents=True, exist_ok=True)
    write_report(OUT, PAGE / "report.html")
    for png in (OUT / "plots").glob("*.png"):
        shutil.copyfile(png, PAGE / png.name)
    write_text(DOC, keep_blocks(build_doc(results), DOC.read_text(encoding="utf-8") if DOC.exists() else ""))
    print(f"wrote {DOC.relative_to(ROOT)} and {(PAGE / 'report.html').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
