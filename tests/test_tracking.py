"""train.report_to (tracking.py): a run logged to a real MLflow tracking server this test starts on loopback
(read back with MlflowClient) and to TensorBoard (read back with tensorboard's event reader), each number the
same as log.jsonl's and metrics.json's; a bench as one experiment with a run per row, in the default file store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import LEARNS_NOTHING_OK, assert_one_line_error, run_cli, write_bench

from sentitune.tracking import local_store

SERVER_START_SECONDS = 180  # the first start creates its database tables (alembic migrations)
TINY = ["--model", "gpt2-tiny-random", "--method", "full", "--max-length", "32", "--train-size", "32",
        "--val-size", "8", "--eval-size", "16", "--epochs", "2", "--batch-size", "8", "--set", "train.log_every=1",
        "--set", "train.baseline=false", "--set", LEARNS_NOTHING_OK, "--no-progress"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a free loopback port, with an SQLite store and proxied artifacts."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (folder / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def records(run: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == event]


def test_a_run_reaches_an_mlflow_server_and_tensorboard(mlflow_server: str, imdb_slice_archive: Path,
                                                        tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tracked"
    code, out, err = run_cli(["train", *TINY, "--data", str(imdb_slice_archive), "--out", str(run),
                              "--set", "train.report_to=[tensorboard,mlflow]",
                              "--set", f"train.tracking_uri={mlflow_server}"])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [r["loss"] for r in records(run, "train")]
    assert len(losses) >= 8  # 2 epochs of 4 steps, one record each

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("sentitune")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "tracked" and found.info.status == "FINISHED"
    assert json.loads((run / "tracking.json").read_text())["mlflow_run_id"] == found.info.run_id
    assert found.data.params["method.name"] == "full" and found.data.params["data.max_length"] == "32"
    history = client.get_metric_history(found.info.run_id, "train_loss")
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(losses)
    assert len({h.step for h in history}) == len(losses)  # one step per record, increasing over the phases
    assert found.data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert found.data.metrics["validation_loss"] == pytest.approx(records(run, "validation")[-1]["loss"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"metrics.json", "README.md", "config.yaml"} <= artifacts
    copy = Path(client.download_artifacts(found.info.run_id, "metrics.json", str(tmp_path)))
    assert json.loads(copy.read_text()) == metrics

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["test"]["accuracy"])

    # --overwrite clears the trackers' files with the rest; a new MLflow run is started
    code, _, err = run_cli(["train", *TINY, "--data", str(imdb_slice_archive), "--out", str(run), "--overwrite",
                            "--set", "train.report_to=[mlflow]", "--set", f"train.tracking_uri={mlflow_server}"])
    assert code == 0, err
    assert not (run / "tensorboard").exists()
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_a_bench_is_one_experiment_with_a_run_per_row(imdb_slice_archive: Path, tmp_path: Path) -> None:
    """The default store: mlflow.db and mlartifacts/ beside the rows; the zero-shot row logs no records, only
    metrics.json."""
    from mlflow.tracking import MlflowClient

    bench = write_bench(tmp_path / "bench", {
        "name": "tracked-bench",
        "set": ["model.spec=gpt2-tiny-random", "data.max_length=32", "data.train_size=16", "data.eval_size=16",
                "data.val_size=8", "train.epochs=1", "train.baseline=false", "method.tfidf.min_df=1",
                f"data.path={imdb_slice_archive}", "train.report_to=[mlflow]", LEARNS_NOTHING_OK],
        "rows": [{"name": "full", "set": ["method.name=full"]},
                 {"name": "zero-shot", "set": ["method.name=zero-shot", "zero_shot.calibration_size=4"]}]})
    out = tmp_path / "bench" / "out"
    code, stdout, err = run_cli(["bench", str(bench), "--out", str(out), "--no-progress"])
    assert code == 0, stdout + err
    client = MlflowClient(tracking_uri=local_store(out))
    assert (out / "mlflow.db").is_file() and (out / "mlartifacts").is_dir()
    experiment = client.get_experiment_by_name("tracked-bench")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"full", "zero-shot"}
    for name, found in runs.items():
        test = json.loads((out / name / "metrics.json").read_text())["test"]
        assert found.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"]), name
    # where a run is reported is not what it computes: without the tracker the rows are the same, done rows
    spec = yaml.safe_load(bench.read_text())
    spec["set"].remove("train.report_to=[mlflow]")
    write_bench(tmp_path / "bench", spec)
    code, stdout, err = run_cli(["bench", str(bench), "--out", str(out), "--no-progress"])
    assert code == 0, stdout + err
    assert "full: skipped" in stdout and "zero-shot: skipped" in stdout, stdout


def test_a_missing_tracker_is_one_line_before_any_work(imdb_slice_archive: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", *TINY, "--data", str(imdb_slice_archive), "--out", str(run),
                            "--set", "train.report_to=[mlflow]"])
    assert_one_line_error(code, err, ["train.report_to: mlflow needs mlflow: pip install 'sentitune[tracking]'"])
    assert not (run / "config.yaml").exists()
    code, _, err = run_cli(["train", *TINY, "--out", str(run), "--set", "train.report_to=[wandb]"])
    assert_one_line_error(code, err, ["train.report_to", "wandb"])


def test_a_resumed_run_continues_its_mlflow_run(tmp_path: Path) -> None:
    """tracking.json keeps the MLflow run id: a run stopped by an error (FAILED) and resumed logs into the same run,
    its steps continuing, and ends FINISHED; without --resume the same folder starts a new run."""
    from mlflow.tracking import MlflowClient

    from sentitune.config import load_config
    from sentitune.runs import RunDir
    from sentitune.tracking import tracked

    cfg = load_config(None, ["train.report_to=[mlflow]", "name=resumed"])
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt), tracked(cfg, out):
        run = RunDir.create(out, cfg)
        run.log({"event": "train", "phase": 1, "step": 1, "loss": 0.7})
        raise KeyboardInterrupt
    first = json.loads((out / "tracking.json").read_text())["mlflow_run_id"]
    with tracked(cfg, out, resume=True):
        RunDir(out).log({"event": "train", "phase": 1, "step": 2, "loss": 0.5})
    client = MlflowClient(tracking_uri=local_store(out.parent))
    assert json.loads((out / "tracking.json").read_text())["mlflow_run_id"] == first
    assert client.get_run(first).info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(first, "train_loss")] == [(1, 0.7), (2, 0.5)]
    with tracked(cfg, out):
        RunDir(out).log({"event": "train", "phase": 1, "step": 1, "loss": 0.6})
    assert json.loads((out / "tracking.json").read_text())["mlflow_run_id"] != first
    # a search's trials (SEARCH/trials/NAME) and its best run (SEARCH/best) share the search's store
    trial = tmp_path / "search" / "trials" / "t1"
    with tracked(cfg, trial, "a-search", store=tmp_path / "search"):
        RunDir.create(trial, cfg).log({"event": "train", "phase": 1, "step": 1, "loss": 0.4})
    assert (tmp_path / "search" / "mlflow.db").is_file() and not (trial.parent / "mlflow.db").exists()
