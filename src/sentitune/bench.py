"""A benchmark: a matrix of ordinary runs from one YAML file, and results read back from their run directories.

Why runs and not a new format: every row is an ordinary experiment config (built with `load_config`, so each
override is validated as usual) in an ordinary run directory; a finished row is skipped and a checkpointed
one resumed, so a bench interrupted anywhere continues where it stopped. The results tables are generated
from the run directories only (metrics.json, config.yaml, predictions.csv): no number is ever typed.

    name: minilm-vs-tfidf
    base: ../configs/minilm-lora-quickstart.yaml   # optional, relative to this file
    set: [data.eval_size=2000]                      # optional, for every row
    matrix:                                         # rows: the cartesian product, in file order
      method.name: [lora, probe]
      train.seed: [1, 2]
    rows:                                           # optional extra rows
      - {name: tfidf, set: [method.name=tfidf]}
      - {name: zero-shot, config: zero-shot-smollm2.yaml, set: [data.eval_size=1000]}  # its own base config
      - {name: bert, config: bert.yaml, published: {accuracy: 0.9346, source: "Sanh et al. 2019, Table 2"}}

`published` puts a number from the literature beside a row that reproduces its setup (never used in a test).

Many workers (the same command, the same --out, on one machine or several sharing the folder) split one bench:
a worker claims a row in a claims table (`--workers-db`, default sqlite:///OUT/claims.db; PostgreSQL across
machines) before it trains it, skips rows other live workers hold, takes over a row whose worker stopped
beating for the grace period (at once when that worker was a process of this machine), and rewrites the
results files, under a lock, whenever it finishes a row.

Rows may have any number of classes (data.labels): accuracy, its bootstrap CI and McNemar use each test
example's decision (the `pred` of predictions.csv, the most probable class), macro-F1 is in every row, and
a bench with more than two classes also gets each class's F1.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentitune import markdown as md
from sentitune.atomic import write_csv, write_json, write_text
from sentitune.claims import GRACE_SECONDS, Claims, ClaimsError
from sentitune.config import ExperimentConfig, load_config, to_dict
from sentitune.errors import SentituneError
from sentitune.runset import SAFE_NAME, one_line, override, read_header, read_yaml, strings

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
RESULT_COLUMNS = ("name", "model", "method", "seed", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                  "precision", "recall", "f1", "macro_f1", "roc_auc", "trainable_parameters", "total_parameters",
                  "train_seconds", "test_seconds", "wall_seconds", "train_tokens_per_second", "mcnemar_p_vs_tfidf",
                  "published_accuracy", "published_source")
SEED_METRICS = ("accuracy", "macro_f1", "roc_auc")  # mean ± sd across seeds
SEED_COLUMNS = ("group", "runs", "seeds", *(f"{m}_{s}" for m in SEED_METRICS for s in ("mean", "sd")))
_BENCH_KEYS = ("name", "base", "set", "matrix", "rows")


class BenchError(SentituneError):
    """A bench file is missing, malformed, or names a setting that does not validate."""


@dataclass
class BenchRow:
    name: str
    overrides: list[str]
    config: ExperimentConfig
    base: Path | None = None  # the experiment YAML the overrides apply to
    published: dict[str, Any] | None = None  # {accuracy, source}: the literature's number for this setup


@dataclass
class Bench:
    name: str
    path: Path
    base: Path | None
    rows: list[BenchRow]


@dataclass
class Outcome:
    """What happened to one row: ran, resumed, skipped, failed (with the error's one-line message) or left
    (to another worker, which holds it, finished it or saw it fail: the message says which)."""

    row: str
    status: str
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ the bench file


def slug(value: Any) -> str:
    """A filesystem-safe piece of a row name: `org/model` -> `org-model`, `[query, value]` -> `query-value`."""
    text = "-".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "x"


def _piece(key: str, value: Any) -> str:
    """Numbers are named by their key (`train.seed: 1` -> `seed1`): a bare `1` says nothing in a folder name."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return slug(f"{key.rsplit('.', 1)[-1]}{value}")
    return slug(value)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def expand(data: dict[str, Any], where: str) -> list[tuple[str, list[str], str | None, dict[str, Any] | None]]:
    """(row name, row overrides, row base config or None, published or None) for the matrix (cartesian
    product, in file order) and the explicit rows."""
    matrix = data.get("matrix") or {}
    if not isinstance(matrix, dict):
        raise BenchError(f"{where}: matrix: expected a mapping of config key -> list of values")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise BenchError(f"{where}: matrix.{key}: expected a non-empty list of values, got {values!r}")
    rows: list[tuple[str, list[str], str | None, dict[str, Any] | None]] = []
    if matrix:
        keys = list(matrix)
        combos = list(itertools.product(*(matrix[k] for k in keys)))
        names = _unique(["-".join(_piece(k, v) for k, v in zip(keys, combo, strict=True)) for combo in combos])
        rows = [(n, [override(k, v) for k, v in zip(keys, combo, strict=True)], None, None)
                for n, combo in zip(names, combos, strict=True)]
    extra = data.get("rows") or []
    if not isinstance(extra, list):
        raise BenchError(f"{where}: rows: expected a list of {{name, config, set}} mappings")
    for i, row in enumerate(extra):
        if not isinstance(row, dict) or set(row) - {"name", "set", "config", "published"}:
            raise BenchError(f"{where}: rows[{i}]: expected a mapping with name, config, set and/or published, "
                             f"got {row!r}")
        published = row.get("published")
        if published is not None and not (
                isinstance(published, dict) and set(published) == {"accuracy", "source"}
                and isinstance(published["accuracy"], (int, float)) and 0 <= published["accuracy"] <= 1
                and isinstance(published["source"], str)):
            raise BenchError(f"{where}: rows[{i}].published: expected {{accuracy: 0..1, source: text}}, "
                             f"got {published!r}")
        config = row.get("config")
        if config is not None and not isinstance(config, str):
            raise BenchError(f"{where}: rows[{i}].config: expected a path to an experiment YAML, got {config!r}")
        name = row.get("name")
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise BenchError(f"{where}: rows[{i}].name: {name!r} is not a folder-safe name (letters, digits, . _ -)")
        rows.append((name, strings(row.get("set"), f"{where}: rows[{i}].set", BenchError), config, published))
    taken = [n for n, *_ in rows]
    if dup := next((n for n in taken if taken.count(n) > 1), None):
        raise BenchError(f"{where}: rows: the name {dup!r} is used twice")
    if not rows:
        raise BenchError(f"{where}: no rows: give a matrix, rows, or both")
    return rows


def load_bench(path: str | Path) -> Bench:
    """Read and check a bench file; every row's config is built (and validated) before anything runs.

    Every row is checked, and the bad ones are named together on one line: a user who fixes the first bad
    row of a long bench should not meet the next one only on the following try.
    """
    path = Path(path)
    data = read_yaml(path, BenchError, "bench file")
    name, base_path, common = read_header(path, data, _BENCH_KEYS, BenchError, "name, matrix and/or rows")
    rows, bad = [], []
    expanded = expand(data, str(path))
    for row_name, overrides, row_base, published in expanded:
        config_path = (path.parent / row_base) if row_base else base_path  # base_path: checked by read_header
        everything = [*common, *overrides, f"name={row_name}"]
        try:
            if row_base and not config_path.is_file():
                raise BenchError(f"config: {config_path} not found")
            cfg = load_config(config_path, everything)
        except SentituneError as e:
            bad.append(f"row {row_name}: {one_line(e)}")
            continue
        rows.append(BenchRow(row_name, everything, cfg, config_path, published))
    if bad:
        count = f"{len(bad)} of {len(expanded)} rows {'is' if len(bad) == 1 else 'are'} invalid"
        raise BenchError(f"{path}: {count}, nothing ran: {'; '.join(bad)}")
    return Bench(name, path, base_path, rows)


# ------------------------------------------------------------------------------------------ running


def _run_row(row: BenchRow, run_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """The row's recipe (recipes.py); an unfinished row without a checkpoint starts over."""
    from sentitune.recipes import recipe_of

    return recipe_of(row.config).run(row.config, run_dir, resume, not resume, progress, lambda s: None)


def _finished_row(row: BenchRow, run_dir: Path) -> bool:
    """metrics.json is there (of this row's config: another one is an error, not a result to keep)."""
    if not (run_dir / "metrics.json").is_file():
        return False
    if to_dict(load_config(run_dir / "config.yaml")) != to_dict(row.config):
        raise BenchError(f"{run_dir}: finished with another config than this bench row; delete it or use another --out")
    return True


def _left(claims: Claims, key: str, row: str) -> Outcome:
    """A row this worker did not run, with who did (or does)."""
    claim = claims.get(key)
    if claim is None:
        return Outcome(row, "left", "released by another worker")
    what = {"running": "running in", "done": "done by", "failed": "failed in"}.get(claim.state, claim.state)
    return Outcome(row, "left", f"{what} {claim.worker}" + (f": {claim.message}" if claim.message else ""))


def run_bench(bench: Bench, out: Path, progress: bool = False,
              started: Callable[[BenchRow], None] = lambda r: None,
              finished: Callable[[Outcome], None] = lambda o: None,
              only: Collection[str] | None = None, workers_db: str | None = None,
              grace: float = GRACE_SECONDS, at_end: Callable[[Path], object] | None = None) -> list[Outcome]:
    """Run every row (or the rows named in `only`) into `out/<row>`: finished rows are skipped, checkpointed
    ones resumed, and a row that fails is recorded (one line) while the others go on. Each row is claimed in
    the claims database first, so several workers on one bench never train a row twice: rows held by live
    workers are left to them (tried once more at the end, in case their worker died meanwhile). The results
    files are rewritten after each row, from every finished row of the bench, under a lock; `at_end(out)`
    (the report) runs under the same lock when this worker is done, unless other workers still run rows."""
    from sentitune.train import Interrupted

    out.mkdir(parents=True, exist_ok=True)
    claims = _open_claims(out, workers_db, grace)
    lock = f"bench:{bench.name}:results"

    def attempt(row: BenchRow, last: bool) -> Outcome | None:
        """The row's outcome, or None when another worker holds it (and this is not the last pass)."""
        run_dir, key = out / row.name, f"bench:{bench.name}:{row.name}"
        started(row)
        try:
            if _finished_row(row, run_dir):
                claim = claims.get(key)
                by_other = (claim is not None and claim.worker != claims.worker and claim.state == "done"
                            and claim.heartbeat >= claims.started)  # in this round, by another worker
                return _left(claims, key, row.name) if last or by_other else Outcome(row.name, "skipped")
            held = claims.try_hold(key, since=claims.started)
            if held is None:
                return _left(claims, key, row.name) if last else None
            with held:
                if _finished_row(row, run_dir):  # finished by another worker between the look and the claim
                    held.done()
                    return _left(claims, key, row.name) if last else Outcome(row.name, "skipped")
                resume = (run_dir / "checkpoint.pt").is_file()
                try:
                    metrics = _run_row(row, run_dir, resume, progress)
                except (Interrupted, KeyboardInterrupt):
                    raise
                except Exception as e:  # noqa: BLE001 - one failed row must not stop the bench
                    held.failed(one_line(e))
                    raise
                held.done()
                return Outcome(row.name, "resumed" if resume else "ran", metrics=metrics)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - one failed row must not stop the bench
            return Outcome(row.name, "failed", one_line(e))

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if outcome.status != "left":
            with claims.lock(lock):  # serialised: the last writer has seen every finished row
                write_results(bench, out)  # after every row: an interrupted bench still has its tables so far
        finished(outcome)

    outcomes: list[Outcome] = []
    others: list[BenchRow] = []
    for row in bench.rows:
        if only is not None and row.name not in only:
            continue
        outcome = attempt(row, last=False)
        if outcome is None:
            others.append(row)
        else:
            record(outcome)
    for row in others:  # a holder that died meanwhile: its row is taken over now
        outcome = attempt(row, last=True)
        assert outcome is not None
        record(outcome)
    with claims.lock(lock):
        write_results(bench, out)
        # The report is drawn by the worker that ends last: one that leaves rows running in live workers
        # leaves it to them (they see every row finished, since each marks its rows done before this lock).
        if at_end is not None and not [o for o in outcomes if o.status == "left" and _still_running(claims, bench, o)]:
            at_end(out)
    return outcomes


def _open_claims(out: Path, workers_db: str | None, grace: float) -> Claims:
    """The claims database the bench's workers share (default: sqlite:///OUT/claims.db)."""
    url = workers_db or f"sqlite:///{(out / 'claims.db').resolve()}"
    try:
        return Claims(url, grace)
    except ClaimsError as e:
        raise BenchError(str(e)) from None


def _still_running(claims: Claims, bench: Bench, outcome: Outcome) -> bool:
    claim = claims.get(f"bench:{bench.name}:{outcome.row}")
    return claim is not None and claim.state == "running" and claims.takeable(claim, claims.now()) is False


# ------------------------------------------------------------------------------------------ results


def _predictions(path: Path) -> dict[str, tuple[int, int]]:
    """id -> (label, pred) from a run's predictions.csv: class indices, in both layouts (prob_positive, or
    a prob_<class> column per class)."""
    with path.open(newline="", encoding="utf-8") as f:
        return {r["id"]: (int(r["label"]), int(r["pred"])) for r in csv.DictReader(f)}


def accuracy_ci(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy, resampling test examples (seeded: reports are stable)."""
    if len(correct) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(correct))  # ~16 MB of indices at a time, also on 25,000 test reviews
    means = np.concatenate([correct[rng.integers(0, len(correct), size=(min(chunk, resamples - start),
                                                                        len(correct)))].mean(axis=1)
                            for start in range(0, resamples, chunk)])
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def mcnemar_p(reference: dict[str, tuple[int, int]], other: dict[str, tuple[int, int]]) -> float | None:
    """Exact McNemar test (binomial on the discordant pairs: right in one row, wrong in the other, for any
    number of classes); None unless both rows hold the same test ids."""
    from scipy.stats import binomtest

    if set(reference) != set(other):
        return None
    ref_only = sum(1 for i, (y, p) in reference.items() if p == y and other[i][1] != other[i][0])
    other_only = sum(1 for i, (y, p) in reference.items() if p != y and other[i][1] == other[i][0])
    if ref_only + other_only == 0:
        return 1.0
    return float(binomtest(ref_only, ref_only + other_only, 0.5).pvalue)


def class_f1(pred: dict[str, tuple[int, int]], names: list[str]) -> dict[str, dict[str, float]]:
    """Each class's F1 and support from (label, pred) pairs: for a run whose metrics.json predates per_class."""
    from sklearn.metrics import precision_recall_fscore_support

    pairs = list(pred.values())
    _, _, f1, support = precision_recall_fscore_support([y for y, _ in pairs], [p for _, p in pairs],
                                                        labels=list(range(len(names))), zero_division=0)
    return {name: {"f1": float(f1[i]), "support": int(support[i])} for i, name in enumerate(names)}


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
            "seed": cfg.train.seed, "n": test.get("n"), "accuracy": test.get("accuracy"),
            "accuracy_ci_low": low, "accuracy_ci_high": high, "precision": test.get("precision"),
            "recall": test.get("recall"), "f1": test.get("f1"), "macro_f1": macro_f1, "per_class": per_class,
            "roc_auc": test.get("roc_auc"),
            "trainable_parameters": par.get("trainable"), "total_parameters": par.get("total"),
            "train_seconds": metrics.get("train_seconds"), "test_seconds": metrics.get("test_seconds"),
            "wall_seconds": metrics.get("wall_seconds"),
            "train_tokens_per_second": metrics.get("train_tokens_per_second"), "mcnemar_p_vs_tfidf": None,
            "published_accuracy": (bench_row.published or {}).get("accuracy"),
            "published_source": (bench_row.published or {}).get("source"),
        })
        preds[bench_row.name], configs[bench_row.name] = pred, cfg
    reference = next((r["name"] for r in rows if r["method"] == "tfidf"), None)
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
            "seed_groups": seeds, "not_reported": not_reported}


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


def _cell(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


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
        ci = f"[{_cell(r['accuracy_ci_low'], 3)}, {_cell(r['accuracy_ci_high'], 3)}]"
        params = (f"{r['trainable_parameters']:,} / {r['total_parameters']:,}"
                  if r["trainable_parameters"] is not None and r["total_parameters"] is not None else "")
        cells = [r["name"], r["model"], r["method"], _cell(r["seed"]), _cell(r["n"]), _cell(r["accuracy"]), ci,
                 _cell(r["precision"]), _cell(r["recall"]), _cell(r["f1"]), _cell(r.get("macro_f1")),
                 _cell(r["roc_auc"]), params,
                 _cell(r["train_seconds"], 1), _cell(r["test_seconds"], 1), md.duration(r.get("wall_seconds")),
                 _cell(r["train_tokens_per_second"], 0),
                 _cell(r["mcnemar_p_vs_tfidf"], 3)]
        if published:
            cells.append(f"{_cell(r.get('published_accuracy'))} ({r['published_source']})"
                         if r.get("published_accuracy") is not None else "")
        table.append(cells)
    lines += md.table(head, table)  # every cell escaped: names and sources are the bench author's text
    if classes:
        lines += ["", "## F1 per class", ""]
        lines += md.table(["run", *class_heads(results), "macro-F1"],
                          ([r["name"], *(_cell(class_cell(r, n)) for n in classes), _cell(r["macro_f1"])]
                           for r in results["rows"]))
    if results["seed_groups"]:
        lines += ["", "## Across seeds (mean ± sd)", "", "Rows that differ only in train.seed (which also draws "
                  "the data subsamples).", ""]
        lines += md.table(["runs", "seeds", "accuracy", "macro-F1", "ROC AUC"],
                          ([g["group"], _cell(g["seeds"]),
                            *(f"{_cell(g.get(f'{m}_mean'))} ± {_cell(g.get(f'{m}_sd'))}" for m in SEED_METRICS)]
                           for g in results["seed_groups"]))
    if results["not_reported"]:
        lines += ["", "Not reported:", ""] + [f"- {md.cell(name)}: {md.cell(why)}"
                                              for name, why in results["not_reported"].items()]
    return "\n".join(lines) + "\n"


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

    write_csv(out / "results.csv", columns, ([_cell(value(r, c), 6) for c in columns] for r in results["rows"]))
    write_text(out / "results.md", markdown(results))
    return results
