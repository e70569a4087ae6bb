"""The Python API: what `sentitune train`, `bench` and `predict` do, for a notebook or a script.

    import sentitune

    run = sentitune.train("configs/experiments/quickstart.yaml", out="runs/quickstart", train__epochs=2)
    run.metrics["test"]["accuracy"], run.predict(["A wonderful film."])[0].label
    run = sentitune.load("runs/quickstart")  # a run trained earlier, by the CLI or here
    bench = sentitune.bench("configs/benches/methods.yaml", rows=["lora-seed1"])

Why a thin layer: the CLI and this call the same recipes (recipes.py), so a run made here is an ordinary run
directory, and errors are the same SentituneError subclasses the CLI prints in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentitune.config import ExperimentConfig, to_dict
from sentitune.data.sources import load_experiment
from sentitune.inference import Prediction, Predictor
from sentitune.recipes import run_recipe
from sentitune.runs import open_saved

ConfigLike = str | Path | dict[str, Any] | ExperimentConfig | None


def overrides_of(values: dict[str, Any]) -> list[str]:
    """`key.sub=value` items from keyword arguments: `train__epochs=2` (or `**{"train.epochs": 2}`); values are
    written as JSON, which the config reader parses as YAML (strings stay strings, lists lists)."""
    return [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in values.items()]


def experiment(config: ConfigLike = None, **overrides: Any) -> ExperimentConfig:
    """A checked config from a YAML path, a dict (a YAML file's content), an ExperimentConfig or the defaults,
    with `overrides` applied (see `overrides_of`)."""
    items = overrides_of(overrides)
    if isinstance(config, ExperimentConfig):
        config = to_dict(config)
    if isinstance(config, dict):
        flat: list[str] = []
        _flatten(config, "", flat)
        return load_experiment(None, flat + items)
    return load_experiment(config, items)


def _flatten(data: dict[str, Any], prefix: str, out: list[str]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            _flatten(value, f"{prefix}{key}.", out)
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")


@dataclass
class Run:
    """A finished run directory: its config, its metrics (metrics.json) and, on first use, a Predictor."""

    path: Path
    config: ExperimentConfig
    metrics: dict[str, Any]
    _predictor: Predictor | None = field(default=None, repr=False)

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = Predictor(self.path)
        return self._predictor

    @property
    def accuracy(self) -> float | None:
        return ((self.metrics or {}).get("test") or {}).get("accuracy")

    def predict(self, texts: Iterable[str], targets: list[str] | None = None, batch_size: int = 32
                ) -> list[Prediction]:
        """Class probabilities and label for each text (with one target each, for a target-dependent run)."""
        return self.predictor.predict(list(texts), batch_size, targets)


def train(config: ConfigLike = None, out: str | Path | None = None, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, quiet: bool = False, **overrides: Any) -> Run:
    """Run any kind of experiment (fine-tuning, zero-shot, TF-IDF: the recipe registry knows how) into `out`
    (default runs/<name>), as `sentitune train` does, and return it."""
    cfg = experiment(config, **overrides)
    path = Path(out) if out is not None else Path("runs") / cfg.name
    report = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    metrics = run_recipe(cfg, path, resume, overwrite, progress, report)
    return Run(path, cfg, metrics)


def load(run: str | Path | Run) -> Run:
    """A run directory written earlier (by `train`, `sentitune train` or a bench row)."""
    if isinstance(run, Run):
        return run
    path, cfg, _ = open_saved(Path(run))
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    return Run(path, cfg, metrics)


@dataclass
class BenchResult:
    """A bench's output folder: the results (results.json: rows, statistics, learning curve), each finished
    row as a Run, and the rows that failed (name -> one-line reason)."""

    path: Path
    results: dict[str, Any]
    runs: dict[str, Run]
    failed: dict[str, str]


def bench(bench_file: str | Path, out: str | Path | None = None, *, rows: Iterable[str] | None = None,
          progress: bool = True) -> BenchResult:
    """Run a bench YAML (every row, or those named in `rows`) as `sentitune bench` does; finished rows are kept,
    checkpointed ones resumed."""
    from sentitune.benching import BenchError, load_bench, run_bench, write_results

    spec = load_bench(bench_file)
    folder = Path(out) if out is not None else Path("runs") / "bench" / spec.name
    only = set(rows) if rows is not None else None
    if only and (unknown := sorted(only - {r.name for r in spec.rows})):
        raise BenchError(f"{bench_file}: no row named {unknown[0]!r}")
    outcomes = run_bench(spec, folder, progress=progress, only=only)
    results = write_results(spec, folder)
    done = {o.row: load(folder / o.row) for o in outcomes  # ran, resumed, skipped (done before), or another's
            if o.status != "failed" and (folder / o.row / "metrics.json").is_file()}
    return BenchResult(folder, results, done, {o.row: o.message or "" for o in outcomes if o.status == "failed"})
