"""A search file -> its search space: the base config with `set` and `trial_set`, and an Optuna distribution per
config key. Every key is tried in a real config (each end of a range, every choice) before anything runs, and a
trial's settings name its folder, so a redone trial resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from sentitune.coerce import read_yaml
from sentitune.config import ExperimentConfig, to_dict
from sentitune.data.sources import load_experiment
from sentitune.errors import SentituneError
from sentitune.kinds import kind_of
from sentitune.runset import override, read_header, strings

METRICS = {"loss": "minimize", "accuracy": "maximize", "macro_f1": "maximize", "roc_auc": "maximize"}
TRIAL_FORCED = ["train.baseline=false", "train.evaluate_test=false"]  # trials never score test
FINAL_FORCED = ["train.evaluate_test=true"]
SEARCH_FILE_KEYS = ("name", "base", "set", "trial_set", "search")
SEARCH_KEYS = ("trials", "metric", "seed", "storage", "space")


class SearchError(SentituneError):
    """A search file is missing or malformed, its space does not validate, or its study does not fit it."""


@dataclass
class Search:
    name: str
    path: Path
    base: Path | None
    common: list[str]  # `set`: the trials and the final run
    trial_set: list[str]  # the trials only
    trials: int
    metric: str
    seed: int
    storage: str | None
    space: dict[str, BaseDistribution]

    @property
    def direction(self) -> str:
        return METRICS[self.metric]


def _number(value: Any, where: str) -> int | float:
    """A YAML number; also `1e-5`, which YAML 1.1 reads as a string (no dot, no exponent sign)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    raise SearchError(f"{where}: expected a number, got {value!r}")


def distribution(spec: Any, where: str) -> BaseDistribution:
    """{low, high[, step][, log]} -> an int (all integers) or float range; a list -> categorical choices."""
    if isinstance(spec, list):
        if not spec or not all(v is None or isinstance(v, (bool, int, float, str)) for v in spec):
            raise SearchError(f"{where}: expected a non-empty list of plain values (numbers, strings, booleans)")
        if len({json.dumps(v) for v in spec}) != len(spec):
            raise SearchError(f"{where}: a choice is listed twice in {spec!r}")
        return CategoricalDistribution(spec)
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "step", "log"}:
        raise SearchError(f"{where}: expected {{low, high, step?, log?}} or a list of choices, got {spec!r}")
    low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
    step = None if spec.get("step") is None else _number(spec["step"], f"{where}.step")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SearchError(f"{where}.log: expected true or false, got {log!r}")
    try:
        if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)):
            return IntDistribution(low, high, log=log, step=step or 1)
        return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))
    except ValueError as e:
        raise SearchError(f"{where}: {e}") from None


def samples(dist: BaseDistribution) -> list[Any]:
    """Values that stand for the whole range when a key is checked up front: both ends, or every choice."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def load_search(path: str | Path) -> Search:
    """Read and check a search file; every space key is tried in a real config before anything runs."""
    path = Path(path)
    data = read_yaml(path, SearchError, "search file")
    name, base_path, common = read_header(path, data, SEARCH_FILE_KEYS, SearchError, "name and search")
    trial_set = strings(data.get("trial_set"), f"{path}: trial_set", SearchError)
    s = data.get("search")
    if not isinstance(s, dict):
        raise SearchError(f"{path}: search: expected a mapping with trials, metric, seed, storage and space")
    if unknown := sorted(set(s) - set(SEARCH_KEYS)):
        raise SearchError(f"{path}: unknown key search.{unknown[0]} (known: {', '.join(SEARCH_KEYS)})")
    trials, metric, seed, storage = s.get("trials", 20), s.get("metric", "loss"), s.get("seed", 0), s.get("storage")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SearchError(f"{path}: search.trials: expected a whole number >= 1, got {trials!r}")
    if metric not in METRICS:
        raise SearchError(f"{path}: search.metric: {metric!r} is not one of {', '.join(METRICS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SearchError(f"{path}: search.seed: expected a whole number, got {seed!r}")
    if storage is not None and not (isinstance(storage, str) and storage):
        raise SearchError(f"{path}: search.storage: expected an Optuna storage URL or null, got {storage!r}")
    space_data = s.get("space")
    if not isinstance(space_data, dict) or not space_data:
        raise SearchError(f"{path}: search.space: expected a mapping of config key -> range or choices")
    space = {str(k): distribution(v, f"{path}: search.space.{k}") for k, v in space_data.items()}
    search = Search(name, path, base_path, common, trial_set, trials, metric, seed, storage, space)
    check(search)
    return search


def _config(search: Search, overrides: list[str], where: str) -> ExperimentConfig:
    try:
        return load_experiment(search.base, overrides)
    except SentituneError as e:
        raise SearchError(f"{search.path}: {where}: {e}") from None


def check(search: Search) -> None:
    """Build the trial and final configs with each end (or choice) of every space key: a typo or an
    impossible value is one line now, not a failed trial an hour in."""
    cfg = _config(search, [*search.common, *search.trial_set], "base, set and trial_set")
    if not kind_of(cfg).trains:
        raise SearchError(f"{search.path}: method.name={cfg.method.name}: a search tunes trained methods only")
    if cfg.data.val_size == 0:
        raise SearchError(f"{search.path}: data.val_size is 0: a search chooses on validation and needs one")
    _config(search, trial_overrides(search, {}), "trial config")
    _config(search, final_overrides(search, {}), "final config")
    forced = {o.split("=", 1)[0] for o in TRIAL_FORCED + FINAL_FORCED} | {"name"}
    for key, dist in search.space.items():
        if key in forced:
            raise SearchError(f"{search.path}: search.space.{key}: set by the search itself, cannot be searched")
        for value in samples(dist):
            for overrides in (trial_overrides(search, {key: value}), final_overrides(search, {key: value})):
                _config(search, overrides, f"search.space.{key}={json.dumps(value)}")


def _param_overrides(params: dict[str, Any]) -> list[str]:
    return [override(k, params[k]) for k in sorted(params)]


def trial_overrides(search: Search, params: dict[str, Any]) -> list[str]:
    return [*search.common, *search.trial_set, *_param_overrides(params), *TRIAL_FORCED]


def final_overrides(search: Search, params: dict[str, Any]) -> list[str]:
    return [*search.common, *_param_overrides(params), *FINAL_FORCED, f"name={search.name}-best"]


def trial_dir_name(overrides: list[str]) -> str:
    """trial-<8 hex>: the same settings always land in the same folder (a redone trial resumes there)."""
    return "trial-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]


def fingerprint(search: Search) -> str:
    """What a stored study's values depend on, besides the trial count: the trial config, space and metric."""
    cfg = to_dict(_config(search, trial_overrides(search, {}), "trial config"))
    space = {k: optuna.distributions.distribution_to_json(d) for k, d in search.space.items()}
    text = json.dumps({"config": cfg, "space": space, "metric": search.metric}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
