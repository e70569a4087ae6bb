"""Hyper-parameter search: Optuna trials chosen on validation, then one run of the best on test.

Why this shape: every trial is an ordinary run directory (its config built with `load_config`, so
every value is validated as usual) trained with the test pass and the baseline off, so the choice
never sees test; only the best configuration is trained once more with the test pass on. The
study lives in an Optuna storage (an SQLite file under --out by default), so a search stopped
anywhere continues: finished trials stay finished, a trial killed mid-run is redone from its
checkpoint (its directory is named by a hash of its settings), and `--trials` can grow it later.

Many workers (the same command, started anywhere against one storage URL: SQLite on one machine,
PostgreSQL across several) share one study: the decision to start a trial, and its ask, happen under a
lock in the claims table of that same database, so together they run `--trials` and no more; each trial
is sampled with a seed of its own number; a trial directory (equal settings, equal folder) and `best/`
are claimed, so two workers never train into one folder at once. A trial whose worker died is failed by
Optuna's heartbeat after the grace period (at once when that worker was a process of this machine) and
its settings queued again.

    name: minilm-lora-lr
    base: ../minilm-lora-quickstart.yaml   # optional, relative to this file
    set: [data.train_size=2000]             # the trials and the final run
    trial_set: [data.train_size=500]        # optional: the trials only (a cheaper budget)
    search:
      trials: 20
      metric: loss       # loss (minimised) | accuracy | macro_f1 | roc_auc (maximised), read from the
                         # validation record whose weights the run keeps (its lowest validation loss);
                         # macro_f1: the mean of the classes' F1, what an unbalanced N-class task is read by
      seed: 0            # TPE sampler seed
      storage: null      # an Optuna storage URL; default sqlite:///<out>/study.db
      space:
        train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}   # float
        train.epochs: {low: 1, high: 3, step: 1}           # int: low, high (and step) are integers
        method.lora.r: [4, 8, 16, 32]                      # categorical
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from sentitune import markdown as md
from sentitune.atomic import write_json, write_text
from sentitune.claims import GRACE_SECONDS, Beat, Claims, ClaimsError, heartbeat_interval, local_and_gone
from sentitune.claims import safe_url as safe_url
from sentitune.config import ExperimentConfig, load_config, to_dict
from sentitune.errors import SentituneError
from sentitune.kinds import kind_of
from sentitune.runset import one_line, override, read_header, read_yaml, strings

METRICS = {"loss": "minimize", "accuracy": "maximize", "macro_f1": "maximize", "roc_auc": "maximize"}
TRIAL_FORCED = ["train.baseline=false", "train.evaluate_test=false"]  # trials never score test
FINAL_FORCED = ["train.evaluate_test=true"]
_KEYS = ("name", "base", "set", "trial_set", "search")
_SEARCH_KEYS = ("trials", "metric", "seed", "storage", "space")


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


@dataclass
class TrialOutcome:
    """One trial: ran, resumed, read back (finished earlier with the same settings) or failed (one line)."""

    number: int
    params: dict[str, Any]
    status: str
    run: str  # relative to --out
    value: float | None = None
    message: str = ""


@dataclass
class FinalOutcome:
    """The best configuration trained once with the test pass on."""

    status: str  # ran | resumed | skipped | failed
    params: dict[str, Any] = field(default_factory=dict)
    trial: int | None = None
    value: float | None = None
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ the search file


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
    name, base_path, common = read_header(path, data, _KEYS, SearchError, "name and search")
    trial_set = strings(data.get("trial_set"), f"{path}: trial_set", SearchError)
    s = data.get("search")
    if not isinstance(s, dict):
        raise SearchError(f"{path}: search: expected a mapping with trials, metric, seed, storage and space")
    if unknown := sorted(set(s) - set(_SEARCH_KEYS)):
        raise SearchError(f"{path}: unknown key search.{unknown[0]} (known: {', '.join(_SEARCH_KEYS)})")
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
        return load_config(search.base, overrides)
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


# ------------------------------------------------------------------------------------------ running


def objective(metrics: dict[str, Any], metric: str) -> float:
    """`metric` of the validation record with the lowest loss: the weights the run keeps."""
    records = metrics.get("validation") or []
    if not records:
        raise SearchError("the run has no validation records to choose on")
    best = min(records, key=lambda r: r["loss"])  # the first minimum, as training keeps it
    if metric not in best:
        raise SearchError(f"the run's validation records have no {metric} (trained before sentitune recorded it: "
                          "delete the run to train it again)")
    value = best.get(metric)
    if value is None or not math.isfinite(value):
        raise SearchError(f"validation {metric} is {value} (one class in validation?)")
    return float(value)


def _same_config(run_dir: Path, cfg: ExperimentConfig) -> bool:
    try:
        return to_dict(load_config(run_dir / "config.yaml")) == to_dict(cfg)
    except SentituneError:
        return False


def _train(cfg: ExperimentConfig, run_dir: Path, progress: bool) -> tuple[str, dict[str, Any]]:
    """Read a finished run back, resume a checkpointed one, or train it; a run directory of another config
    (out/best once a better trial turned up) is ours and is trained again."""
    from sentitune.train import train

    same = _same_config(run_dir, cfg)
    if same and (run_dir / "metrics.json").is_file() and not (run_dir / "checkpoint.pt").is_file():
        try:
            return "read back", json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # unreadable: train it again
    resume = same and (run_dir / "checkpoint.pt").is_file()
    metrics = train(cfg, run_dir, resume=resume, overwrite=not resume, progress=progress)
    return ("resumed" if resume else "ran"), metrics


class Requeue:
    """Optuna's callback for a trial failed by heartbeat (and ours for one whose worker is gone): its settings
    queued again, so the next ask redoes it (resuming from the checkpoint in its directory)."""

    def __init__(self) -> None:
        self.numbers: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.numbers.append(trial.number)
        if trial.params:
            study.enqueue_trial(trial.params)


def open_storage(url: str, grace: float = GRACE_SECONDS, requeue: Requeue | None = None) -> optuna.storages.RDBStorage:
    """The study's database with Optuna's heartbeat on: a RUNNING trial whose worker stopped beating for
    `grace` seconds is failed by the next worker that looks, and `requeue` queues its settings again."""
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval(grace),
                                                  grace_period=max(1, int(grace)),
                                                  heartbeat_stale_trial_callback=requeue)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            racing = not isinstance(e, sqlalchemy.exc.OperationalError) or "locked" in str(e)
            if attempt == 4 or not racing:  # workers started together race to create the schema: losers look again
                raise
            time.sleep(0.3 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(search: Search, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Create or load the study named after the search; refuse one made by a different search."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage if isinstance(storage, str) else storage.url  # type: ignore[attr-defined]
    try:
        study = optuna.create_study(study_name=search.name, storage=storage, direction=search.direction,
                                    load_if_exists=True)
    except Exception as e:  # noqa: BLE001 - a bad URL or driver surfaces as many types; one line either way
        raise SearchError(f"storage {safe_url(url)}: cannot open ({one_line(e)})") from None
    mark = fingerprint(search)
    made = study.user_attrs.get("fingerprint")
    if made is None and not study.trials:
        study.set_user_attr("fingerprint", mark)
    elif made != mark or study.direction.name.lower() != search.direction:
        raise SearchError(f"storage {safe_url(url)}: study {search.name!r} was made with other settings "
                          "(base, set, trial_set, space or metric); use another --out, --storage or name")
    return study


def seed_sampler(search: Search, study: optuna.Study) -> None:
    """Before each ask (under the study lock): a TPE sampler seeded with the number the next new trial gets.
    Numbers are unique in the storage, so workers started together draw different points, and one worker
    with a given seed draws the same ones every time."""
    study.sampler = optuna.samplers.TPESampler(seed=search.seed + len(study.get_trials(deepcopy=False)))


def fail_stale(study: optuna.Study, requeue: Requeue) -> list[int]:
    """Fail the RUNNING trials whose worker is gone and queue their settings again: by Optuna's heartbeat
    (no beat for the grace period), at once when the worker was a process of this machine that no longer
    runs, and a trial with no worker at all (left by a sentitune from before workers) once it is still
    without one a second later (a fresh ask gets its worker within milliseconds). Called under the lock."""
    requeue.numbers.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    gone = []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if any("worker" not in t.user_attrs for t in running):
        time.sleep(1.0)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        worker = t.user_attrs.get("worker")
        if worker is None or local_and_gone(worker):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            gone.append(t)
    for t in gone:
        requeue(study, t)
    return list(requeue.numbers)


def counted(trial: FrozenTrial) -> bool:
    """Trials that use up the budget: complete ones, and failures of the run itself (a failure that
    repeats must not loop forever); a trial cut short by a kill or a crash is redone instead."""
    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)


@dataclass
class Worker:
    """One worker's handles on the shared study: its storage (for heartbeats), claims and requeue callback."""

    search: Search
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    claims: Claims
    requeue: Requeue

    @property
    def lock(self) -> str:
        return f"search:{self.search.name}:ask"

    def key(self, run: str) -> str:
        return f"search:{self.search.name}:{run}"


def next_trial(w: Worker, total: int, report: Callable[[str], None]) -> optuna.Trial | None:
    """Under the study lock: fail stale trials, then ask for one more if the study's counted and running
    trials are fewer than `total`. None: the budget is used up and nobody is running a trial that may still
    fail; while others run the last trials, wait (one of them may die and its trial come back)."""
    while True:
        with w.claims.lock(w.lock):
            for number in fail_stale(w.study, w.requeue):
                report(f"trial {number} was left running (killed?): marked failed, its settings queued again")
            trials = w.study.get_trials(deepcopy=False)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if sum(counted(t) for t in trials) + running < total:
                seed_sampler(w.search, w.study)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "heartbeat ... supposed to be used with Study.optimize"
                    trial = w.study.ask(dict(w.search.space))
                # The heartbeat before the worker's name: a trial that names a worker always has a beat, so a
                # kill between the two leaves one that fail_stale can judge (no name: failed after a second).
                w.storage.record_heartbeat(trial._trial_id)
                trial.set_user_attr("worker", w.claims.worker)
                return trial
            if not running:
                return None
        time.sleep(min(5, heartbeat_interval(w.claims.grace)))


def run_trial(w: Worker, trial: optuna.Trial, out: Path, progress: bool) -> TrialOutcome:
    """Train on validation only, tell. Its directory is claimed first (a worker with the same settings
    training there: wait, then read it back). A SentituneError fails the trial (one line); anything else
    (Ctrl-C, a bug) fails it, queues its params again for the next start, and propagates."""
    search, study = w.search, w.study
    params = dict(trial.params)
    overrides = trial_overrides(search, params)
    name = trial_dir_name(overrides)
    run = f"trials/{name}"
    trial.set_user_attr("run", run)
    with Beat(heartbeat_interval(w.claims.grace), lambda: w.storage.record_heartbeat(trial._trial_id)):
        try:
            with w.claims.hold(w.key(run)) as held:
                cfg = load_config(search.base, [*overrides, f"name={search.name}-{name}"])
                status, metrics = _train(cfg, out / run, progress)
                held.done()
            value = objective(metrics, search.metric)
        except SentituneError as e:
            trial.set_user_attr("error", one_line(e))
            study.tell(trial, state=TrialState.FAIL)
            return TrialOutcome(trial.number, params, "failed", run, message=one_line(e))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(params)
            raise
    study.tell(trial, value)
    return TrialOutcome(trial.number, params, status, run, value)


def run_final(w: Worker, out: Path, progress: bool) -> FinalOutcome:
    """The best trial's params with `set` (not `trial_set`) trained once into out/best, test pass on. best/
    is claimed: a second worker waits, then reads the finished run back (skipped)."""
    from sentitune.train import Interrupted

    search, study = w.search, w.study

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return FinalOutcome("failed", message="no trial completed: nothing to train")
    best = study.best_trial
    outcome = FinalOutcome("", dict(best.params), best.number, best.value)
    try:
        cfg = load_config(search.base, final_overrides(search, best.params))
        with w.claims.hold(w.key("best")) as held:
            status, outcome.metrics = _train(cfg, out / "best", progress)
            held.done()
        outcome.status = "skipped" if status == "read back" else status
    except (Interrupted, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - reported as the search's failure (exit 1), like a bench row
        outcome.status, outcome.message = "failed", one_line(e)
    return outcome


def run_search(search: Search, out: Path, trials: int | None = None, storage: str | None = None,
               progress: bool = False, report: Callable[[str], None] = lambda s: None,
               finished: Callable[[TrialOutcome], None] = lambda o: None,
               grace: float = GRACE_SECONDS) -> tuple[dict[str, Any], FinalOutcome]:
    """Run trials until the study holds `trials` counted ones (decided before each ask, so several workers
    on one storage together run that many), wait for the other workers' last trials, then train the best
    once on test. search.json/search.md are rewritten after every trial and at the end."""
    out.mkdir(parents=True, exist_ok=True)
    url = storage or search.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    requeue = Requeue()
    try:
        rdb = open_storage(url, grace, requeue)
    except Exception as e:  # noqa: BLE001 - a bad URL or driver surfaces as many types; one line either way
        raise SearchError(f"storage {safe_url(url)}: cannot open ({one_line(e)})") from None
    study = open_study(search, rdb)
    try:
        claims = Claims(url, grace)
    except ClaimsError as e:
        raise SearchError(str(e)) from None
    w = Worker(search, study, rdb, claims, requeue)
    total = trials if trials is not None else search.trials
    done = sum(counted(t) for t in study.get_trials(deepcopy=False))
    report(f"search {search.name}: {max(0, total - done)} of {total} trials to run, chosen on validation "
           f"{search.metric} -> {out} (storage {safe_url(url)}; worker {claims.worker})")
    while (trial := next_trial(w, total, report)) is not None:
        outcome = run_trial(w, trial, out, progress)
        write_summary(search, study, out, url)
        finished(outcome)
    final = run_final(w, out, progress)
    return write_summary(search, study, out, url), final


# ------------------------------------------------------------------------------------------ results


def summary(search: Search, study: optuna.Study, out: Path, url: str) -> dict[str, Any]:
    """Every trial of the study and the best one; the test metrics of out/best when it ran with them."""
    trials = [{"number": t.number, "params": t.params, "state": t.state.name, "value": t.value,
               "run": t.user_attrs.get("run"), "error": t.user_attrs.get("error")} for t in study.trials]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best: dict[str, Any] | None = None
    if complete:
        b = study.best_trial
        best = {"trial": b.number, "params": b.params, "value": b.value, "run": "best", "test": None}
        metrics_file = out / "best" / "metrics.json"
        if metrics_file.is_file():
            try:
                same = to_dict(load_config(out / "best" / "config.yaml")) == to_dict(
                    load_config(search.base, final_overrides(search, b.params)))
                best["test"] = json.loads(metrics_file.read_text(encoding="utf-8")).get("test") if same else None
            except (OSError, ValueError, SentituneError):
                best["test"] = None
    return {"search": search.name, "file": str(search.path), "storage": safe_url(url), "metric": search.metric,
            "direction": search.direction, "trials": trials, "best": best}


def markdown(result: dict[str, Any]) -> str:
    """search.md: one row per trial, then the best and its test metrics."""
    keys = sorted({k for t in result["trials"] for k in t["params"]})
    lines = [f"# Search {result['search']}", "", f"Generated by `sentitune search`; validation {result['metric']} "
             f"({result['direction']}d) of the kept weights (lowest validation loss); storage "
             f"`{result['storage']}`.", ""]
    head = ["trial", "state", result["metric"], *keys, "run"]
    lines += md.table(head, ([str(t["number"]), t["state"].lower(), "" if t["value"] is None else f"{t['value']:.4f}",
                              *(_cell(t["params"].get(k)) for k in keys), t["run"] or ""] for t in result["trials"]))
    best = result["best"]
    if best:
        lines += ["", f"Best: trial {best['trial']}, validation {result['metric']} {best['value']:.4f}: "
                  + md.cell(", ".join(f"{k}={_cell(v)}" for k, v in best["params"].items())) + "."]
        test = best["test"]
        if test:
            lines += ["", f"Test ({test['n']} reviews, `best/`, trained once with these settings): accuracy "
                      f"{test['accuracy']:.4f}, F1 {test['f1']:.4f}, macro-F1 {_cell(test.get('macro_f1'))}, "
                      f"ROC AUC {_cell(test.get('roc_auc'))}."]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_summary(search: Search, study: optuna.Study, out: Path, url: str) -> dict[str, Any]:
    result = summary(search, study, out, url)
    write_json(out / "search.json", result)
    write_text(out / "search.md", markdown(result))
    return result
