"""A bench's results, read back from its run directories only (metrics.json, config.yaml, predictions.csv):
results.json, results.csv and results.md with bootstrap CIs, McNemar against the classical reference, macro-F1
and each class's F1, and mean ± sd across seeds. No number is ever typed."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sentitune import markdown as md
from sentitune.atomic import write_csv, write_json, write_text
from sentitune.benching.rows import Bench, BenchError, BenchRow
from sentitune.config import ExperimentConfig, load_config, to_dict
from sentitune.kinds import kind_of
from sentitune.statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, accuracy_ci, class_f1, mcnemar_p

RESULT_COLUMNS = ("name", "model", "method", "seed", "labels", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                  "precision", "recall", "f1", "macro_f1", "roc_auc", "trainable_parameters", "total_parameters",
                  "train_seconds", "test_seconds", "wall_seconds", "train_tokens_per_second", "mcnemar_p_vs_tfidf",
                  "published_accuracy", "published_source")
SEED_METRICS = ("accuracy", "macro_f1", "roc_auc")  # mean ± sd across seeds
SEED_COLUMNS = ("group", "runs", "seeds", *(f"{m}_{s}" for m in SEED_METRICS for s in ("mean", "sd")))


def _predictions(path: Path) -> dict[str, tuple[int, int]]:
    """id -> (label, pred) from a run's predictions.csv: class indices, in both layouts (prob_positive, or
    a prob_<class> column per class)."""
    with path.open(newline="", encoding="utf-8") as f:
        return {r["id"]: (int(r["label"]), int(r["pred"])) for r in csv.DictReader(f)}


def _group_name(names: list[str]) -> str:
    """The name pieces all seeds share (`minilm-lora-seed1`, `minilm-lora-seed2` -> `minilm-lora`)."""
    pieces = [n.split("-") for n in names]
    common = [p for p in pieces[0] if all(p in other for other in pieces[1:])]
    return "-".join(common) or names[0]


def _read_run(run_dir: Path, row: BenchRow) -> tuple[dict[str, Any], ExperimentConfig, dict[str, tuple[int, int]]]:
    """metrics.json, config.yaml and predictions.csv of a finished row, or a BenchError saying why not."""
    if not (run_dir / "metrics.json").is_file():
        raise BenchError("not finished (no metrics.json)")
    try:
        cfg = load_config(run_dir / "config.yaml")
        if to_dict(cfg) != to_dict(row.config):
            raise BenchError("its config.yaml is not this bench row's config")
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        if metrics.get("test", {}) is None:
            raise BenchError("no test metrics (train.evaluate_test is false)")
        pred = _predictions(run_dir / "predictions.csv")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"unreadable ({type(e).__name__}: {e})") from None
    return metrics, cfg, pred


def collect(bench: Bench, out: Path) -> dict[str, Any]:
    """The results of every finished row, read from its run directory; the others, with why, under not_reported."""
    rows, preds, configs, not_reported = [], {}, {}, {}
    for bench_row in bench.rows:
        run_dir = out / bench_row.name
        try:
            metrics, cfg, pred = _read_run(run_dir, bench_row)
        except BenchError as e:  # one broken run directory must not hide the others' results
            not_reported[bench_row.name] = str(e)
            continue
        test, par = metrics.get("test") or {}, metrics.get("parameters") or {}
        low, high = accuracy_ci(np.array([p == y for y, p in pred.values()], dtype=float))
        per_class = test.get("per_class") or class_f1(pred, list(test.get("labels") or cfg.data.labels))
        per_class = {name: {"f1": c["f1"], "support": c["support"]} for name, c in per_class.items()}
        macro_f1 = test.get("macro_f1")
        if macro_f1 is None:  # metrics.json from before macro_f1: the mean of the classes' F1
            macro_f1 = float(np.mean([c["f1"] for c in per_class.values()]))
        rows.append({
            "name": bench_row.name, "model": metrics.get("model", cfg.model.spec), "method": cfg.method.name,
            "seed": cfg.train.seed, "labels": _labels(cfg, metrics), "n": test.get("n"),
            "accuracy": test.get("accuracy"),
            "accuracy_ci_low": low, "accuracy_ci_high": high, "precision": test.get("precision"),
            "recall": test.get("recall"), "f1": test.get("f1"), "macro_f1": macro_f1, "per_class": per_class,
            "roc_auc": test.get("roc_auc"),
            "trainable_parameters": par.get("trainable"), "total_parameters": par.get("total"),
            "train_seconds": metrics.get("train_seconds"), "test_seconds": metrics.get("test_seconds"),
            "wall_seconds": metrics.get("wall_seconds"),
            # what the run costs from nothing: its wall time, a self-training teacher's cached scores paid in full
            "cost_seconds": metrics.get("cost_seconds", metrics.get("wall_seconds")),
            "train_tokens_per_second": metrics.get("train_tokens_per_second"), "mcnemar_p_vs_tfidf": None,
            "published_accuracy": (bench_row.published or {}).get("accuracy"),
            "published_source": (bench_row.published or {}).get("source"),
        })
        preds[bench_row.name], configs[bench_row.name] = pred, cfg
    reference = next((r["name"] for r in rows if kind_of(configs[r["name"]]).reference), None)
    for r in rows:
        if reference is not None and r["name"] != reference:
            r["mcnemar_p_vs_tfidf"] = mcnemar_p(preds[reference], preds[r["name"]])
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:  # rows that differ only in train.seed
        d = to_dict(configs[r["name"]])
        d.pop("name")
        d["train"].pop("seed")
        groups.setdefault(json.dumps(d, sort_keys=True), []).append(r)
    seeds = []
    for members in groups.values():
        if len(members) < 2:
            continue
        entry: dict[str, Any] = {"group": _group_name([m["name"] for m in members]),
                                 "runs": [m["name"] for m in members], "seeds": [m["seed"] for m in members]}
        for metric in SEED_METRICS:
            values = np.array([m[metric] if m[metric] is not None else math.nan for m in members], dtype=float)
            entry[f"{metric}_mean"], entry[f"{metric}_sd"] = float(values.mean()), float(values.std(ddof=1))
        seeds.append(entry)
    return {"bench": bench.name, "reference": reference, "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED, "level": 0.95}, "classes": per_class_names(rows), "rows": rows,
            "seed_groups": seeds, "curve": learning_curve(rows, configs), "not_reported": not_reported}


def _labels(cfg: ExperimentConfig, metrics: dict[str, Any]) -> int | None:
    """The labelled reviews the run was given (its recipe counts them); None for a run without a data record."""
    from sentitune.recipes import recipe_of

    data = metrics.get("data")
    return recipe_of(cfg).labels(cfg, data) if isinstance(data, dict) and "validation" in data else None


BUDGET_PIECE = re.compile(r"^(labels|seed)\d+$")  # row-name pieces of the budget axis and the seed


def learning_curve(rows: list[dict[str, Any]], configs: dict[str, ExperimentConfig]) -> list[dict[str, Any]]:
    """Accuracy against labelled reviews: rows whose configs differ only in their label budget (train and
    validation sizes) and seed make one line, a point per budget (mean ± sd over its seeds, mean wall time).
    Empty unless some method runs at two budgets or more: one budget is a table, not a curve."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["labels"] is None or r["accuracy"] is None:
            continue
        d = to_dict(configs[r["name"]])
        d.pop("name")
        d["train"].pop("seed")
        d["data"].pop("train_size")
        d["data"].pop("val_size")
        lines.setdefault(json.dumps(d, sort_keys=True), []).append(r)
    if not any(len({r["labels"] for r in members}) > 1 for members in lines.values()):
        return []  # no method at two budgets: a table of rows says it all
    curve = []
    for members in lines.values():
        pieces = [p for p in members[0]["name"].split("-") if not BUDGET_PIECE.match(p)]
        points = []
        for labels in sorted({m["labels"] for m in members}):
            at = [m for m in members if m["labels"] == labels]
            accuracy = np.array([m["accuracy"] for m in at], dtype=float)
            walls = [m["cost_seconds"] for m in at if m.get("cost_seconds")]
            points.append({"labels": labels, "runs": [m["name"] for m in at], "seeds": len(at),
                           "accuracy_mean": float(accuracy.mean()),
                           "accuracy_sd": float(accuracy.std(ddof=1)) if len(at) > 1 else None,
                           "cost_seconds_mean": float(np.mean(walls)) if walls else None})
        curve.append({"line": "-".join(pieces) or members[0]["method"], "method": members[0]["method"],
                      "points": points})
    return curve


def per_class_names(rows: list[dict[str, Any]]) -> list[str]:
    """The classes whose F1 gets a column: those of every row with more than two classes, in first-seen
    order; none when every row is binary (its F1 and macro-F1 say it all)."""
    names: dict[str, None] = {}
    for r in rows:
        if len(r["per_class"]) > 2:
            names.update(dict.fromkeys(r["per_class"]))
    return list(names)


def class_cell(row: dict[str, Any], name: str) -> float | None:
    """The row's F1 of class `name` (None when the row has no such class)."""
    return (row["per_class"].get(name) or {}).get("f1")


def result_columns(results: dict[str, Any]) -> list[str]:
    """results.csv's columns: RESULT_COLUMNS, with an f1_<class> column per class after macro_f1 when the
    bench has more than two classes."""
    at = RESULT_COLUMNS.index("macro_f1") + 1
    return [*RESULT_COLUMNS[:at], *(f"f1_{n}" for n in results.get("classes", [])), *RESULT_COLUMNS[at:]]


def markdown(results: dict[str, Any]) -> str:
    """results.md: the runs table, the seed table, and how the numbers were made."""
    lines = [f"# Bench {results['bench']}", "", "Generated by `sentitune bench` from the run directories; "
             "accuracy CI: 95% percentile bootstrap over test reviews "
             f"({results['bootstrap']['resamples']} resamples, seed {results['bootstrap']['seed']}).", ""]
    if results["reference"]:
        lines += [f"McNemar p: exact test against the classical reference `{results['reference']}` on the "
                  "same test reviews (blank when the test sets differ).", ""]
    classes = results.get("classes") or []
    if classes:
        lines += ["With more than two classes, precision, recall and F1 are macro averages over the classes (so F1 "
                  "is macro-F1), ROC AUC is one-vs-rest (macro), and accuracy, its CI and McNemar use the most "
                  "probable class. F1 of each class: below.", ""]
    published = any(r.get("published_accuracy") is not None for r in results["rows"])
    head = ["run", "model", "method", "seed", "n", "accuracy", "95% CI", "precision", "recall", "F1", "macro-F1",
            "ROC AUC", "trainable / total", "train s", "test s", "whole row", "tokens/s", "McNemar p",
            *(["published"] if published else [])]
    table = []
    for r in results["rows"]:
        ci = f"[{md.number(r['accuracy_ci_low'], 3)}, {md.number(r['accuracy_ci_high'], 3)}]"
        params = (f"{r['trainable_parameters']:,} / {r['total_parameters']:,}"
                  if r["trainable_parameters"] is not None and r["total_parameters"] is not None else "")
        cells = [r["name"], r["model"], r["method"], md.number(r["seed"]), md.number(r["n"]),
                 md.number(r["accuracy"]), ci,
                 md.number(r["precision"]), md.number(r["recall"]), md.number(r["f1"]), md.number(r.get("macro_f1")),
                 md.number(r["roc_auc"]), params,
                 md.number(r["train_seconds"], 1), md.number(r["test_seconds"], 1), md.duration(r.get("wall_seconds")),
                 md.number(r["train_tokens_per_second"], 0),
                 md.number(r["mcnemar_p_vs_tfidf"], 3)]
        if published:
            cells.append(f"{md.number(r.get('published_accuracy'))} ({r['published_source']})"
                         if r.get("published_accuracy") is not None else "")
        table.append(cells)
    lines += md.table(head, table)  # every cell escaped: names and sources are the bench author's text
    if classes:
        lines += ["", "## F1 per class", ""]
        lines += md.table(["run", *class_heads(results), "macro-F1"],
                          ([r["name"], *(md.number(class_cell(r, n)) for n in classes), md.number(r["macro_f1"])]
                           for r in results["rows"]))
    if results["seed_groups"]:
        lines += ["", "## Across seeds (mean ± sd)", "", "Rows that differ only in train.seed (which also draws "
                  "the data subsamples).", ""]
        lines += md.table(["runs", "seeds", "accuracy", "macro-F1", "ROC AUC"],
                          ([g["group"], md.number(g["seeds"]),
                            *(f"{md.number(g.get(f'{m}_mean'))} ± {md.number(g.get(f'{m}_sd'))}" for m in SEED_METRICS)]
                           for g in results["seed_groups"]))
    if results.get("curve"):
        lines += curve_table(results["curve"])
    if results["not_reported"]:
        lines += ["", "Not reported:", ""] + [f"- {md.cell(name)}: {md.cell(why)}"
                                              for name, why in results["not_reported"].items()]
    return "\n".join(lines) + "\n"


def curve_table(curve: list[dict[str, Any]]) -> list[str]:
    """The learning curve as Markdown: a row per label budget, a column per line (method), each cell the mean
    accuracy ± sd over seeds, with the number of seeds and the mean cost of one run."""
    budgets = sorted({p["labels"] for line in curve for p in line["points"]})
    table = []
    for labels in budgets:
        cells = []
        for line in curve:
            p = next((p for p in line["points"] if p["labels"] == labels), None)
            sd = f" ± {md.number(p['accuracy_sd'])}" if p and p["accuracy_sd"] is not None else ""
            cells.append(f"{md.number(p['accuracy_mean'])}{sd} ({p['seeds']} × {md.duration(p['cost_seconds_mean'])})"
                         if p else "")
        table.append([f"{labels:,}", *cells])
    return ["", "## Learning curve: accuracy against labelled reviews", "",
            "Labelled reviews: training + validation, everything a run was given (a prompt: its demonstrations and "
            "the validation labels its decision read). Each cell: mean test accuracy ± sd over seeds (seeds × the "
            "mean cost of one run: its wall time, with a self-training teacher's cached scores and the feature "
            "caches it found built counted at what computing them took).", "",
            *md.table(["labelled reviews", *(c["line"] for c in curve)], table)]


def class_heads(results: dict[str, Any]) -> list[str]:
    """Class names, each with its test support when every row has the same (the same test examples)."""
    heads = []
    for name in results["classes"]:
        support = {(r["per_class"].get(name) or {}).get("support") for r in results["rows"]}
        heads.append(f"{name} (n={support.pop()})" if len(support) == 1 and None not in support else name)
    return heads


def write_results(bench: Bench, out: Path) -> dict[str, Any]:
    """results.json, results.csv and results.md in `out`, from the run directories (atomic writes)."""
    results = collect(bench, out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    columns = result_columns(results)

    def value(r: dict[str, Any], column: str) -> Any:
        return class_cell(r, column[3:]) if column.startswith("f1_") else r[column]

    write_csv(out / "results.csv", columns, ([md.number(value(r, c), 6) for c in columns] for r in results["rows"]))
    write_text(out / "results.md", markdown(results))
    return results
