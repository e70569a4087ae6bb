"""Running a search: trials from an Optuna study shared by any number of workers, each trained on validation
only into its own run directory (runset.plan_run: read back, resumed or trained), then the best once on test."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sentitune.claims import GRACE_SECONDS, Beat, Claims, ClaimsError, heartbeat_interval, local_and_gone, safe_url
from sentitune.config import ExperimentConfig
from sentitune.data.sources import load_experiment
from sentitune.errors import SentituneError
from sentitune.extras import require
from sentitune.runset import one_line, plan_run, run_planned
from sentitune.search.space import Search, SearchError, final_overrides, fingerprint, trial_dir_name, trial_overrides
from sentitune.search.summary import write_summary


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


def _train(cfg: ExperimentConfig, run_dir: Path, progress: bool, experiment: str, store: Path
           ) -> tuple[str, dict[str, Any]]:
    """Read a finished run back, resume a checkpointed one, or train it; a run directory of another config
    (out/best once a better trial turned up) is ours and is trained again."""
    action = plan_run(run_dir, cfg, "retrain", SearchError, "search run")
    if action == "done":
        try:
            return "read back", json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            action = "start"  # unreadable: train it again
    metrics = run_planned(cfg, run_dir, action, progress, experiment, store)
    return ("resumed" if action == "resume" else "ran"), metrics


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

    if url.startswith("postgresql"):
        require("postgres", f"storage {safe_url(url)}")
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
                cfg = load_experiment(search.base, [*overrides, f"name={search.name}-{name}"])
                status, metrics = _train(cfg, out / run, progress, search.name, out)
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
    from sentitune.training import Interrupted

    search, study = w.search, w.study

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return FinalOutcome("failed", message="no trial completed: nothing to train")
    best = study.best_trial
    outcome = FinalOutcome("", dict(best.params), best.number, best.value)
    try:
        cfg = load_experiment(search.base, final_overrides(search, best.params))
        with w.claims.hold(w.key("best")) as held:
            status, outcome.metrics = _train(cfg, out / "best", progress, search.name, out)
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
