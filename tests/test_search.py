"""`sentitune search`: Optuna trials of gpt2-tiny-random LoRA on a tiny real IMDb slice, chosen on validation
(the trials never score test), the best trained once on test; resumed, grown, and redone after a kill."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, assert_one_line_error, interrupt_after_steps, run_cli

from sentitune.config import ConfigError, load_config
from sentitune.errors import DataError
from sentitune.search import SearchError, load_search, objective, trial_dir_name, trial_overrides

COMMON = ["model.spec=gpt2-tiny-random", "data.max_length=32", "data.train_size=16", "data.eval_size=16",
          "data.val_size=8", "train.epochs=1"]
SPACE = {"train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "method.lora.r": [2, 4]}


def write_search(folder: Path, data: dict, name: str = "search.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tiny(archive: Path, trials: int = 2, **search: object) -> dict:
    return {"name": "tiny", "set": [*COMMON, f"data.path={archive}"], "trial_set": ["data.train_size=12"],
            "search": {"trials": trials, "seed": 0, "space": SPACE, **search}}


def lines(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


# ------------------------------------------------------------------------------ the file, no training


def test_space_kinds_and_trial_settings(tmp_path: Path) -> None:
    path = write_search(tmp_path, {"name": "s", "set": ["data.max_length=64"], "trial_set": ["data.train_size=100"],
                                   "search": {"space": {"train.lr": {"low": "1e-5", "high": 1.0e-3, "log": True},
                                                        "train.epochs": {"low": 1, "high": 3, "step": 1},
                                                        "train.warmup_ratio": {"low": 0, "high": 0.2},
                                                        "method.lora.r": [4, 8]}}})
    s = load_search(path)
    assert (s.trials, s.metric, s.seed, s.storage, s.direction) == (20, "loss", 0, None, "minimize")
    lr, epochs, warmup, r = s.space.values()
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log and lr.low == 1e-5  # YAML's "1e-5"
    assert isinstance(epochs, optuna.distributions.IntDistribution) and (epochs.low, epochs.high) == (1, 3)
    assert isinstance(warmup, optuna.distributions.FloatDistribution)  # one float end: a float range
    assert isinstance(r, optuna.distributions.CategoricalDistribution) and r.choices == (4, 8)
    overrides = trial_overrides(s, {"train.lr": 3e-4, "method.lora.r": 8})
    cfg = load_config(None, overrides)
    assert (cfg.data.max_length, cfg.data.train_size, cfg.train.lr, cfg.method.lora.r) == (64, 100, 3e-4, 8)
    assert not cfg.train.baseline and not cfg.train.evaluate_test
    name = trial_dir_name(overrides)
    assert name == trial_dir_name(list(overrides)) and len(name) == len("trial-") + 8
    assert name != trial_dir_name(trial_overrides(s, {"train.lr": 3e-4, "method.lora.r": 4}))


def test_the_objective_is_read_at_the_lowest_validation_loss() -> None:
    metrics = {"validation": [{"loss": 0.6, "accuracy": 0.7, "roc_auc": 0.8},
                              {"loss": 0.5, "accuracy": 0.6, "roc_auc": 0.9},
                              {"loss": 0.55, "accuracy": 0.9, "roc_auc": 0.95}]}
    assert (objective(metrics, "loss"), objective(metrics, "accuracy"), objective(metrics, "roc_auc")) == (
        0.5, 0.6, 0.9)
    with pytest.raises(SearchError, match="no validation"):
        objective({"validation": []}, "loss")


@pytest.mark.parametrize(("data", "expect"), [
    ({"search": {"space": {"train.lrr": [0.1]}}}, "search.space.train.lrr"),
    ({"search": {"space": {"train.lr": {"low": 0.0, "high": 0.1}}}}, "train.lr"),
    ({"search": {"space": {"train.lr": {"low": 0.0, "high": 0.1, "log": True}}}}, "search.space.train.lr"),
    ({"search": {"space": {"method.name": ["lora", "nope"]}}}, "method.name"),
    ({"search": {"space": {"train.lr": {"low": 0.1}}}}, "search.space.train.lr"),
    ({"search": {"space": {"train.lr": []}}}, "search.space.train.lr"),
    ({"search": {"space": {"train.evaluate_test": [True, False]}}}, "set by the search"),
    ({"search": {"space": {}}}, "search.space"),
    ({"search": {"metric": "f1", "space": SPACE}}, "search.metric"),
    ({"search": {"trials": 0, "space": SPACE}}, "search.trials"),
    ({"search": {"sapce": SPACE}}, "unknown key search.sapce"),
    ({"serach": {}}, "unknown key serach"),
    ({"set": ["method.name=tfidf"], "search": {"space": SPACE}}, "trained methods"),
    ({"set": ["data.val_size=0"], "search": {"space": SPACE}}, "data.val_size"),
    ({"trial_set": ["data.train_size=x"], "search": {"space": SPACE}}, "data.train_size"),
])
def test_bad_search_files_give_one_line_errors(tmp_path: Path, data: dict, expect: str) -> None:
    path = write_search(tmp_path, {"name": "s", **data})
    with pytest.raises(SearchError) as info:
        load_search(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expect in message and "\n" not in message


def test_a_bad_space_key_is_exit_2_through_the_cli(tmp_path: Path) -> None:
    path = write_search(tmp_path, {"name": "s", "search": {"space": {"train.lrr": {"low": 1, "high": 2}}}})
    code, _, err = run_cli(["search", str(path), "--out", str(tmp_path / "out")])
    assert_one_line_error(code, err, [str(path), "train.lrr"])
    assert not (tmp_path / "out").exists()


def test_the_example_search_file_validates() -> None:
    s = load_search(ROOT / "configs" / "searches" / "minilm-lora-lr.yaml")
    assert (s.name, s.trials, s.metric) == ("minilm-lora-lr", 12, "loss")
    assert s.base == ROOT / "configs" / "searches" / ".." / "experiments" / "minilm-lora-quickstart.yaml"
    lr, r, epochs = (s.space[k] for k in ("train.lr", "method.lora.r", "train.epochs"))
    assert (lr.low, lr.high, lr.log) == (1e-5, 2e-3, True) and r.choices == (4, 8, 16)
    assert (epochs.low, epochs.high) == (1, 2)
    assert load_config(s.base, trial_overrides(s, {})).data.train_size < load_config(s.base).data.train_size


# ------------------------------------------------------------------------------ train.evaluate_test


def test_a_run_without_the_test_pass_never_scores_test(tmp_path: Path, imdb_slice_archive: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = [*COMMON, f"data.path={imdb_slice_archive}", "train.evaluate_test=false", "train.baseline=false"]
    code, stdout, err = run_cli(["train", *(a for s in sets for a in ("--set", s)), "--out", str(tmp_path / "run"),
                                 "--no-progress"])
    assert code == 0 and "no test pass (train.evaluate_test=false)" in stdout and "test set," not in stdout, err
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"] is None and saved["test_seconds"] is None and saved["baseline"] is None
    assert saved["validation"]
    assert not (tmp_path / "run" / "predictions.csv").exists() and (tmp_path / "run" / "model").is_dir()
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("split") == "test"]
    with pytest.raises(ConfigError, match="evaluate_test"):
        load_config(None, ["method.name=tfidf", "train.evaluate_test=false"])


# ------------------------------------------------------------------------------ a real search


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, imdb_slice_archive: Path,
             monkeypatch_module: pytest.MonkeyPatch) -> tuple[Path, Path, int, str]:
    """Two trials and the final run, through the CLI: (search file, out, exit code, output)."""
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("search")
    path = write_search(folder, tiny(imdb_slice_archive))
    out = folder / "out"
    code, stdout, err = run_cli(["search", str(path), "--out", str(out), "--no-progress"])
    return path, out, code, stdout + err


def copy(searched: tuple[Path, Path, int, str], tmp_path: Path) -> Path:
    """A copy of the searched output (its study.db inside): each test continues its own."""
    out = tmp_path / "out"
    shutil.copytree(searched[1], out)
    return out


def load(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")


def test_two_trials_then_the_best_once_on_test(searched: tuple[Path, Path, int, str]) -> None:
    _, out, code, text = searched
    assert code == 0, text
    assert "Traceback" not in text and len(lines(text, "[trial ")) == 2, text
    study = load(out)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    result = json.loads((out / "search.json").read_text())
    assert result["best"]["params"] == study.best_params and result["best"]["value"] == study.best_value
    assert [t["value"] for t in result["trials"]] == [t.value for t in study.trials]
    for t in result["trials"]:
        run = out / t["run"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test"] is None and metrics["baseline"] is None and metrics["test_seconds"] is None
        assert not (run / "predictions.csv").exists()
        assert t["value"] == min(r["loss"] for r in metrics["validation"])
        cfg = load_config(run / "config.yaml")
        assert cfg.data.train_size == 12 and cfg.train.lr == t["params"]["train.lr"]  # trial_set applies
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert (out / "best" / "predictions.csv").is_file() and best["test"] == result["best"]["test"]
    assert best["test"]["n"] == 16
    cfg = load_config(out / "best" / "config.yaml")
    assert cfg.data.train_size == 16 and cfg.train.evaluate_test  # set without trial_set
    assert (cfg.train.lr, cfg.method.lora.r) == (study.best_params["train.lr"], study.best_params["method.lora.r"])
    md = (out / "search.md").read_text()
    assert md.count("| complete |") == 2 and f"accuracy {best['test']['accuracy']:.4f}" in md


def test_more_trials_run_only_the_missing_ones(searched: tuple[Path, Path, int, str], tmp_path: Path) -> None:
    path = searched[0]
    out = copy(searched, tmp_path)
    runs = sorted((out / "trials").iterdir())
    before = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in runs}
    code, stdout, err = run_cli(["search", str(path), "--out", str(out), "--trials", "3", "--no-progress"])
    assert code == 0, stdout + err
    new = lines(stdout, "[trial ")
    assert len(new) == 1 and new[0].startswith("[trial 2]") and ": ran, validation loss" in new[0], stdout
    assert {p: (out / "trials" / p / "metrics.json").stat().st_mtime_ns for p in before} == before
    study = load(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert json.loads((out / "search.json").read_text())["best"]["params"] == study.best_params
    # Nothing is missing now: no trial runs, the finished best is not trained again.
    best = (out / "best" / "metrics.json").stat().st_mtime_ns
    code, stdout, _ = run_cli(["search", str(path), "--out", str(out), "--trials", "3", "--no-progress"])
    assert code == 0 and not lines(stdout, "[trial ") and ": skipped;" in stdout, stdout
    assert (out / "best" / "metrics.json").stat().st_mtime_ns == best


def test_a_trial_left_running_is_failed_and_redone(searched: tuple[Path, Path, int, str], tmp_path: Path) -> None:
    path = searched[0]
    out = copy(searched, tmp_path)
    study = load(out)
    stale = study.ask(dict(load_search(path).space))  # a process killed mid-trial: never told
    code, stdout, err = run_cli(["search", str(path), "--out", str(out), "--trials", "3", "--no-progress"])
    assert code == 0, stdout + err
    assert f"trial {stale.number} was left running" in stdout
    study = load(out)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"], states
    assert study.trials[3].params == stale.params  # redone with the same settings
    (line,) = lines(stdout, "[trial ")
    assert line.startswith("[trial 3]") and ": ran," in line


def test_an_interrupted_trial_resumes_from_its_checkpoint(tmp_path: Path, imdb_slice_archive: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tiny(imdb_slice_archive, trials=1)
    data["set"] += ["train.batch_size=2", "train.checkpoint_every=1"]
    path, out = write_search(tmp_path, data), tmp_path / "out"
    step = interrupt_after_steps(monkeypatch, 2)
    code, _, err = run_cli(["search", str(path), "--out", str(out), "--no-progress"])
    assert code == 130 and "run the same command again" in err, err
    assert len(list(out.glob("trials/*/checkpoint.pt"))) == 1
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    code, stdout, err = run_cli(["search", str(path), "--out", str(out), "--no-progress"])
    assert code == 0, stdout + err
    (line,) = lines(stdout, "[trial ")
    assert line.startswith("[trial 1]") and ": resumed," in line, stdout
    study = load(out)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == study.trials[0].params
    assert not list(out.glob("trials/*/checkpoint.pt"))


def test_a_failing_trial_is_reported_and_the_search_goes_on(tmp_path: Path, imdb_slice_archive: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import sentitune.training

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real, calls = sentitune.training.train, {"n": 0}

    def first_fails(*args: object, **kwargs: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 1:
            raise DataError("boom: the first trial's data")
        return real(*args, **kwargs)

    monkeypatch.setattr(sentitune.training, "train", first_fails)
    path = write_search(tmp_path, tiny(imdb_slice_archive))
    storage = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    code, stdout, err = run_cli(["search", str(path), "--out", str(tmp_path / "out"), "--storage", storage,
                                 "--no-progress"])
    assert code == 0, stdout + err
    first, second = lines(stdout, "[trial ")
    assert first.startswith("[trial 0]") and ": failed: boom: the first trial's data (trials/trial-" in first
    assert second.startswith("[trial 1]") and ": ran," in second
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "out" / "study.db").exists()
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]  # a failure counts: 2 trials in all
    trials = json.loads((tmp_path / "out" / "search.json").read_text())["trials"]
    assert trials[0]["error"] == "boom: the first trial's data" and trials[0]["state"] == "FAIL"


def test_no_completed_trial_is_exit_1(tmp_path: Path, imdb_slice_archive: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sentitune.training

    def fails(*args: object, **kwargs: object) -> dict:
        raise DataError("always")

    monkeypatch.setattr(sentitune.training, "train", fails)
    path = write_search(tmp_path, tiny(imdb_slice_archive, trials=1))
    code, stdout, err = run_cli(["search", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 1 and "best: failed: no trial completed" in stdout and "Traceback" not in err, stdout + err
    assert json.loads((tmp_path / "out" / "search.json").read_text())["best"] is None


def test_a_study_from_other_settings_is_refused(searched: tuple[Path, Path, int, str], tmp_path: Path,
                                                imdb_slice_archive: Path) -> None:
    out = copy(searched, tmp_path)
    data = tiny(imdb_slice_archive)
    data["trial_set"] = ["data.train_size=14"]
    path = write_search(tmp_path, data, "changed.yaml")
    code, _, err = run_cli(["search", str(path), "--out", str(out), "--no-progress"])
    assert_one_line_error(code, err, ["study 'tiny'", "other settings"])
    assert len(load(out).trials) == 2


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    path = write_search(tmp_path, {"name": "s", "search": {"space": SPACE}})
    code, _, err = run_cli(["search", str(path), "--out", str(tmp_path / "out"),
                            "--storage", f"sqlite:///{tmp_path}/no/such/folder/x.db"])
    assert_one_line_error(code, err, ["storage sqlite:///", "cannot open"])
    code, _, err = run_cli(["search", str(path), "--out", str(tmp_path / "out"), "--trials", "0"])
    assert_one_line_error(code, err, ["--trials"])


def test_search_help_explains_the_file_and_resume() -> None:
    code, stdout, _ = run_cli(["search", "--help"])
    assert code == 0
    for part in ("trial_set", "--trials", "--storage", "study.db", "search.json", "validation", "killed"):
        assert part in stdout, part


# ------------------------------------------------------------------------------ macro-F1 as the objective


def _macro_f1_of(confusion: list[list[int]]) -> float:
    """scikit-learn's macro-F1 of the (label, prediction) pairs a confusion matrix counts."""
    from sklearn.metrics import f1_score

    pairs = [(i, j) for i, row in enumerate(confusion) for j, n in enumerate(row) for _ in range(n)]
    return float(f1_score([i for i, _ in pairs], [j for _, j in pairs], average="macro",
                          labels=list(range(len(confusion)))))


def test_validation_records_hold_macro_f1(searched: tuple[Path, Path, int, str]) -> None:
    """Every trial's validation record has macro-F1, and it is scikit-learn's on that validation pass."""
    _, out, _, _ = searched
    for t in json.loads((out / "search.json").read_text())["trials"]:
        run = out / t["run"]
        logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        logged = [r for r in logged if r.get("event") == "validation"]
        history = json.loads((run / "metrics.json").read_text())["validation"]
        assert len(history) == len(logged)
        for kept, record in zip(history, logged, strict=True):
            assert kept["macro_f1"] == record["macro_f1"] == pytest.approx(_macro_f1_of(record["confusion_matrix"]))
    with pytest.raises(SearchError, match="no macro_f1"):
        objective({"validation": [{"loss": 0.5, "accuracy": 0.6, "roc_auc": 0.7}]}, "macro_f1")


def test_a_search_can_choose_on_validation_macro_f1(tmp_path: Path, imdb_slice_archive: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_search(tmp_path, tiny(imdb_slice_archive, trials=1, metric="macro_f1"))
    assert load_search(path).direction == "maximize"
    code, stdout, err = run_cli(["search", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, stdout + err
    result = json.loads((tmp_path / "out" / "search.json").read_text())
    (trial,) = result["trials"]
    metrics = json.loads((tmp_path / "out" / trial["run"] / "metrics.json").read_text())
    kept = min(metrics["validation"], key=lambda r: r["loss"])
    assert result["metric"] == "macro_f1" and trial["value"] == kept["macro_f1"] == objective(metrics, "macro_f1")
    assert "validation macro_f1 (maximized)" in (tmp_path / "out" / "search.md").read_text()
