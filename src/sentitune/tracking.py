"""Experiment tracking through the trackers' own libraries (train.report_to: tensorboard, mlflow), so a run or a
bench shows up next to a user's Trainer and Lightning experiments.

Why a listener on the run's log: log.jsonl already records every training-loss step, validation, baseline and
test pass of every kind of run; each record is forwarded as it is written, so the trackers see the run live and
nothing is logged in two places by hand. Params are the resolved config (dotted keys); at the end, metrics.json
and the model card are uploaded as artifacts. One MLflow run per run directory (a resumed run continues it,
its id kept in tracking.json); a bench is one experiment with a run per row.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sentitune.atomic import write_json
from sentitune.config import ExperimentConfig, dump_yaml, to_dict
from sentitune.extras import require
from sentitune.runs import listening

STATE_FILE = "tracking.json"  # the MLflow run id of a run directory, so --resume logs into the same run
DEFAULT_EXPERIMENT = "sentitune"
# Without a tracking URI: an SQLite store and an artifact folder beside the run folders (MLflow 3 retired the
# ./mlruns file store). `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows them.
LOCAL_STORE, LOCAL_ARTIFACTS = "mlflow.db", "mlartifacts"
_MAX_PARAM = 500  # MLflow's older servers refuse longer param values


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"train": {"lr": 0.1}}` -> `{"train.lr": "0.1"}`: what a tracker's params table shows."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            out[f"{prefix}{key}"] = text[:_MAX_PARAM]
    return out


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A log.jsonl record's numbers, named `<event>/<metric>` (train/loss, validation/accuracy, test/roc_auc)."""
    event = record.get("event")
    name = {"final": record.get("split", "test"), "baseline": "baseline"}.get(event, event)
    out = {}
    for key, value in record.items():
        if key not in ("event", "phase", "step", "split") and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            out[f"{name}/{key}"] = float(value)
    return out


class _Step:
    """One increasing step over a run's phases (each phase counts its optimizer steps from 0)."""

    def __init__(self) -> None:
        self.offset, self.phase, self.last = 0, 1, 0

    def __call__(self, record: dict[str, Any]) -> int:
        phase, step = int(record.get("phase", self.phase)), record.get("step")
        if phase != self.phase:
            self.offset, self.phase = self.offset + self.last, phase
        if step is not None:
            self.last = int(step)
        return self.offset + self.last


def local_store(folder: Path) -> str:
    """The default MLflow tracking URI: mlflow.db in `folder` (the one that holds the run folder, or a bench's or
    search's own folder)."""
    return f"sqlite:///{(folder / LOCAL_STORE).resolve()}"


class _TensorBoard:
    def __init__(self, cfg: ExperimentConfig, out: Path) -> None:
        require("tracking", "train.report_to: tensorboard", only=("tensorboard",))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", f"```yaml\n{dump_yaml(cfg)}```")

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def end(self, out: Path, failed: bool) -> None:
        self.writer.close()


class _MLflow:
    """One MLflow run through an MlflowClient of its own: the process's global MLflow state (mlflow.set_tracking_uri
    sets $MLFLOW_TRACKING_URI) is left as the user had it."""

    def __init__(self, cfg: ExperimentConfig, out: Path, experiment: str | None, resume: bool, store: Path) -> None:
        require("tracking", "train.report_to: mlflow", only=("mlflow",))
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        local = not (cfg.train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        uri = cfg.train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store(store)
        self.client = client = MlflowClient(tracking_uri=uri)
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = client.get_experiment_by_name(name)
        if found is None:
            artifacts = (store / LOCAL_ARTIFACTS).resolve().as_uri() if local else None  # not in the cwd
            try:
                experiment_id = client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # another worker of the bench created it first
                experiment_id = client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = found.experiment_id
        state = out / STATE_FILE
        run_id = json.loads(state.read_text())["mlflow_run_id"] if resume and state.is_file() else None
        if run_id is None:
            run_id = client.create_run(experiment_id, run_name=out.name, tags={
                "sentitune.run_dir": str(out.resolve()), "sentitune.method": cfg.method.name,
                "sentitune.model": cfg.model.spec}).info.run_id
            params = [Param(k, v) for k, v in flat_params(to_dict(cfg)).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                client.log_batch(run_id, params=params[start:start + 100])
        else:
            client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        write_json(state, {"mlflow_run_id": run_id, "tracking_uri": uri})

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k.replace("/", "_"), v, now, step)
                                                    for k, v in values.items()])

    def end(self, out: Path, failed: bool) -> None:
        for artifact in (out / "metrics.json", out / "model" / "README.md", out / "config.yaml"):
            if artifact.is_file():
                self.client.log_artifact(self.run_id, str(artifact))
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class _Session:
    """The trackers of one run directory, started at its first log record: by then the recipe has checked and
    written the folder (config.yaml), so a refused start leaves no tracker run and no file behind."""

    def __init__(self, cfg: ExperimentConfig, out: Path, experiment: str | None, resume: bool, store: Path) -> None:
        self.cfg, self.out, self.experiment, self.resume, self.store = cfg, out, experiment, resume, store
        self.trackers: list[Any] | None = None
        self.step, self.tested = _Step(), False

    def __call__(self, record: dict[str, Any]) -> None:
        if self.trackers is None:
            wanted = self.cfg.train.report_to
            self.trackers = ([_TensorBoard(self.cfg, self.out)] if "tensorboard" in wanted else []) + (
                [_MLflow(self.cfg, self.out, self.experiment, self.resume, self.store)] if "mlflow" in wanted else [])
        self.tested = self.tested or record.get("event") == "final"
        values, at = scalars(record), self.step(record)
        for tracker in self.trackers:
            tracker.log(values, at)

    def finish(self, failed: bool) -> None:
        """A run that logs no test record (zero-shot writes metrics.json only): its test metrics, then the ends."""
        metrics = self.out / "metrics.json"
        if not failed and not self.tested and metrics.is_file():
            test = json.loads(metrics.read_text(encoding="utf-8")).get("test")
            if isinstance(test, dict):
                self({"event": "final", "split": "test", **test})
        for tracker in self.trackers or []:
            tracker.end(self.out, failed)


@contextlib.contextmanager
def tracked(cfg: ExperimentConfig, out: Path, experiment: str | None = None, resume: bool = False,
            store: Path | None = None) -> Iterator[None]:
    """Run the body with cfg.train.report_to's trackers listening to the run's log (`experiment`: MLflow's, e.g.
    the bench's name; `store`: where the default local MLflow store lives, else the folder holding `out`). Only the
    main process of a data-parallel run reports (the others write no log either)."""
    if not cfg.train.report_to or int(os.environ.get("RANK", "0")):
        yield
        return
    for tracker in cfg.train.report_to:  # before any work, not at the first record
        require("tracking", f"train.report_to: {tracker}", only=(tracker,))
    session, failed = _Session(cfg, out, experiment, resume, store or out.parent), True
    try:
        with listening(session):
            yield
        failed = False
    finally:
        session.finish(failed)
