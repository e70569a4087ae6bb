"""What bench and search share (sentitune.runset): `plan_run`, what a bench row or a search trial does with its run
directory. "done" when it finished with this config, "resume" when a checkpoint of this config is there, "start"
otherwise; a run directory of another config (or a config.yaml that cannot be read) is the caller's policy: an error
for a bench (someone else's result, never overwritten), trained again for a search (its out/best).

plan_run looks at whether metrics.json and checkpoint.pt are there, not at what they hold: they are written empty
here. config.yaml is written as a run writes it (`dump_yaml`), from configs built by `load_config`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sentitune.config import ExperimentConfig, dump_yaml, load_config
from sentitune.errors import SentituneError
from sentitune.runset import plan_run

POLICIES = ["error", "retrain"]
ROW = ["name=row", "model.spec=gpt2-tiny-random", "method.name=lora", "train.seed=1"]


class RowError(SentituneError):
    """Stands for the caller's own error class (a bench passes BenchError): plan_run raises the one it is given."""


@pytest.fixture
def cfg() -> ExperimentConfig:
    return load_config(None, ROW)


@pytest.fixture
def other_cfg() -> ExperimentConfig:
    """The same row with another seed: another config."""
    return load_config(None, [*ROW[:-1], "train.seed=2"])


def make_run(folder: Path, config: ExperimentConfig | str | None, *files: str) -> Path:
    """A run directory holding config.yaml (a config as a run writes it, raw text, or none) and empty `files`."""
    folder.mkdir(parents=True)
    if isinstance(config, str):
        (folder / "config.yaml").write_text(config, encoding="utf-8")
    elif config is not None:
        (folder / "config.yaml").write_text(dump_yaml(config), encoding="utf-8")
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def plan(run: Path, cfg: ExperimentConfig, other: str) -> str:
    return plan_run(run, cfg, other, RowError, "bench row")


@pytest.mark.parametrize("other", POLICIES)
def test_a_folder_with_neither_metrics_nor_checkpoint_is_started(tmp_path: Path, cfg: ExperimentConfig,
                                                                 other_cfg: ExperimentConfig, other: str) -> None:
    """Missing, empty, or what a run killed before its first checkpoint leaves (its config, a log line): whatever
    config it names, nothing there is worth keeping."""
    assert plan(tmp_path / "missing", cfg, other) == "start"
    assert plan(make_run(tmp_path / "empty", None), cfg, other) == "start"
    assert plan(make_run(tmp_path / "killed", cfg, "log.jsonl"), cfg, other) == "start"
    assert plan(make_run(tmp_path / "killed-other", other_cfg, "log.jsonl"), cfg, other) == "start"
    assert plan(make_run(tmp_path / "unreadable", "train: [0.1\n"), cfg, other) == "start"


@pytest.mark.parametrize("other", POLICIES)
def test_finished_with_this_config_is_done(tmp_path: Path, cfg: ExperimentConfig, other: str) -> None:
    assert plan(make_run(tmp_path / "run", cfg, "metrics.json"), cfg, other) == "done"
    # A checkpoint left beside metrics.json does not make a finished run resumable.
    assert plan(make_run(tmp_path / "both", cfg, "metrics.json", "checkpoint.pt"), cfg, other) == "done"
    # The same settings built again (a second `bench` over the same file) are the same config.
    assert plan(tmp_path / "run", load_config(None, list(ROW)), other) == "done"


@pytest.mark.parametrize("other", POLICIES)
def test_a_checkpoint_of_this_config_is_resumed(tmp_path: Path, cfg: ExperimentConfig, other: str) -> None:
    assert plan(make_run(tmp_path / "run", cfg, "checkpoint.pt", "log.jsonl"), cfg, other) == "resume"


def test_finished_with_another_config_is_an_error_for_a_bench(tmp_path: Path, cfg: ExperimentConfig,
                                                               other_cfg: ExperimentConfig) -> None:
    run = make_run(tmp_path / "run", other_cfg, "metrics.json")
    with pytest.raises(RowError) as info:
        plan(run, cfg, "error")
    assert type(info.value) is RowError
    assert str(info.value) == (f"{run}: finished with another config than this bench row; delete it or use "
                               "another --out")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.json"]  # nothing touched


def test_finished_with_another_config_is_started_again_by_a_search(tmp_path: Path, cfg: ExperimentConfig,
                                                                    other_cfg: ExperimentConfig) -> None:
    assert plan(make_run(tmp_path / "run", other_cfg, "metrics.json"), cfg, "retrain") == "start"
    assert plan(make_run(tmp_path / "both", other_cfg, "metrics.json", "checkpoint.pt"), cfg, "retrain") == "start"


def test_a_checkpoint_of_another_config(tmp_path: Path, cfg: ExperimentConfig, other_cfg: ExperimentConfig) -> None:
    """A bench resumes it, so that the run's own resume check refuses it naming the difference; a search starts its
    trial again."""
    run = make_run(tmp_path / "run", other_cfg, "checkpoint.pt")
    assert plan(run, cfg, "error") == "resume"
    assert plan(run, cfg, "retrain") == "start"


@pytest.mark.parametrize("config", [None, "train: [0.1\n", "- a\n- b\n", "no_such_key: 1\n", "train: {seed: x}\n"],
                         ids=["missing", "not-yaml", "not-a-mapping", "unknown-key", "bad-value"])
def test_a_config_yaml_that_cannot_be_read_counts_as_another_config(tmp_path: Path, cfg: ExperimentConfig,
                                                                     config: str | None) -> None:
    finished = make_run(tmp_path / "finished", config, "metrics.json")
    with pytest.raises(RowError, match="finished with another config than this bench row"):
        plan(finished, cfg, "error")
    assert plan(finished, cfg, "retrain") == "start"
    checkpointed = make_run(tmp_path / "checkpointed", config, "checkpoint.pt")
    assert plan(checkpointed, cfg, "error") == "resume"
    assert plan(checkpointed, cfg, "retrain") == "start"
