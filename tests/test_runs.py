"""The run directory (sentitune.runs): created, resumed, overwritten, checkpointed, and what a finished run holds.

--overwrite must never delete what is not a sentitune run (nor the working or home folder, nor a user's file inside
a run); --resume must never execute a crafted checkpoint, nor silently retrain a finished run, nor continue a run of
another config; leftovers of killed writes go away; outputs follow the umask; a refused command leaves the run
directory as it was. Most cases go through the real CLI (`sentitune.cli.main`, in-process) on the tiny random GPT-2
with a few synthetic reviews; the layout of a finished run is read from the session's MiniLM LoRA run
(`conftest.minilm_lora_run`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import (
    LEARNS_NOTHING_OK,
    MAX_LENGTH,
    archive_members,
    assert_one_line_error,
    run_cli,
    train_args,
    write_tar,
)
from conftest import TINY_LORA as MODEL

from sentitune.config import dump_yaml, load_config

OUTPUTS = ("metrics.json", "predictions.csv", "model", "checkpoint.pt", "log.jsonl")


def write_reviews(path: Path, n: int = 40) -> Path:
    """Synthetic labelled reviews: the run-directory code under test does not care what they say."""
    rows = ["text,label"] + [f'"Review {i}: {"a fine, moving film" if i % 2 else "a dull, clumsy film"}.",{i % 2}'
                             for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def train_argv(data: Path, out: Path | str, *extra: str) -> list[str]:
    return ["train", "--model", "gpt2-tiny-random", "--method", "lora", "--source", str(data), "--max-length", "32",
            "--train-size", "16", "--val-size", "4", "--batch-size", "8", "--epochs", "1", "--no-progress",
            "--set", "train.threads=1", "--set", LEARNS_NOTHING_OK, "--out", str(out), *extra]


def one_line_error(code: int, err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("sentitune: error: "), err
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.csv")


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run; tests copy it rather than train their own."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code, _, err = run_cli(train_argv(data, out))
    assert code == 0, err
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


# ------------------------------------------------------------------ 1. --overwrite deletes only sentitune runs


def test_overwrite_refuses_a_folder_of_user_files(data: Path, tmp_path: Path) -> None:
    """Even one with a config.yaml that sentitune could read: a fragment is not the config a run writes."""
    mine = tmp_path / "mine"
    (mine / "drafts").mkdir(parents=True)
    (mine / "config.yaml").write_text("name: draft\n")
    (mine / "notes.txt").write_text("two years of notes\n")
    (mine / "drafts" / "chapter1.md").write_text("# One\n")
    before = snapshot(mine)
    code, _, err = run_cli(train_argv(data, mine, "--overwrite"))
    one_line_error(code, err, str(mine), "not a sentitune run directory (contains config.yaml, drafts, notes.txt)",
                   "refusing to delete it with --overwrite")
    assert snapshot(mine) == before


def test_overwrite_refuses_the_current_directory_and_its_parents(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "thesis.tex").write_text("\\begin{document}\n")
    before = snapshot(tmp_path)
    monkeypatch.chdir(work)
    code, _, err = run_cli(train_argv(data, ".", "--overwrite"))
    one_line_error(code, err, "is the current directory", "refusing to delete anything in it with --overwrite")
    monkeypatch.chdir(work / "sub")
    code, _, err = run_cli(train_argv(data, "..", "--overwrite"))
    one_line_error(code, err, "is a parent of the current directory")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_finished_run_and_keeps_user_files(data: Path, run: Path) -> None:
    """Only what sentitune writes is deleted: a stale evaluation goes, the user's notes stay."""
    (run / "notes.txt").write_text("why this run\n")
    (run / "eval-validation.json").write_text("{}\n")
    (run / "predictions-validation.csv").write_text("id,label,prob_positive,pred\n")
    old_metrics = (run / "metrics.json").stat().st_mtime_ns
    code, _, err = run_cli(train_argv(data, run, "--overwrite", "--seed", "7"))
    assert code == 0, err
    assert (run / "notes.txt").read_text() == "why this run\n"
    assert not (run / "eval-validation.json").exists() and not (run / "predictions-validation.csv").exists()
    assert (run / "metrics.json").stat().st_mtime_ns != old_metrics
    assert "seed: 7" in (run / "config.yaml").read_text()
    assert (run / "model" / "sentitune.json").exists()


# ------------------------------------------------------------------ 2. a crafted checkpoint is never executed


class RunsCode:
    """What an attacker would pickle: loading it with weights_only=False runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_resume_refuses_a_crafted_checkpoint_without_running_it(data: Path, run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (run / "metrics.json").unlink()  # an interrupted run, as --resume expects
    torch.save({"state": RunsCode(marker), "params": {}, "optimizer": {}, "scheduler": {},
                "rng": torch.get_rng_state()}, run / "checkpoint.pt")
    code, _, err = run_cli(train_argv(data, run, "--resume"))
    assert not marker.exists(), "loading the checkpoint executed code"
    one_line_error(code, err, str(run / "checkpoint.pt"), "refused", "posix.system", "nothing in it was run")


@pytest.mark.parametrize("damage", ["torn", "not-a-checkpoint"])
def test_resume_reports_an_unloadable_checkpoint_on_one_line(damage: str, data: Path, run: Path) -> None:
    (run / "metrics.json").unlink()
    checkpoint = run / "checkpoint.pt"
    torch.save({"state": {"step": 1}, "params": {}, "optimizer": {}, "scheduler": {}, "rng": torch.get_rng_state()},
               checkpoint)
    if damage == "torn":  # what a failing disk (not a kill: writes are atomic) could leave
        checkpoint.write_bytes(checkpoint.read_bytes()[:300])
        expect = "unreadable checkpoint"
    else:
        torch.save({"weights": torch.zeros(2)}, checkpoint)
        expect = "not a sentitune checkpoint (missing or malformed: state, params, optimizer, scheduler, rng)"
    code, _, err = run_cli(train_argv(data, run, "--resume"))
    one_line_error(code, err, str(checkpoint), expect)


def test_checkpoints_hold_plain_values_and_old_ones_still_load(tmp_path: Path) -> None:
    """The State dataclass is stored as a dict (weights_only loads it); a checkpoint written before
    this change, holding a pickled State, is still resumed (that one class is allowed, nothing else)."""
    from sentitune.loop import State
    from sentitune.runs import RunDir

    run = RunDir(tmp_path)
    state = State(step=3, best_params={"w": torch.arange(3.0)}, history=[{"loss": 0.5}])
    rest = {"params": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {}, "rng": torch.get_rng_state()}
    run.save_checkpoint({"state": state, **rest})
    assert torch.load(run.checkpoint_path, weights_only=True)["state"]["step"] == 3
    for _ in ("new format", "old format"):
        loaded = run.load_checkpoint(State)
        assert loaded is not None and isinstance(loaded["state"], State)
        assert (loaded["state"].step, loaded["state"].history) == (3, [{"loss": 0.5}])
        assert torch.equal(loaded["state"].best_params["w"], torch.arange(3.0))
        torch.save({"state": state, **rest}, run.checkpoint_path)  # how checkpoints were written before


# ------------------------------------------------------------------ 3. --resume of a finished run


def test_resume_refuses_a_finished_run(data: Path, run: Path) -> None:
    before = snapshot(run)
    code, _, err = run_cli(train_argv(data, run, "--resume"))
    one_line_error(code, err, f"{run}: this run already finished (metrics.json); nothing to resume",
                   "use --overwrite to run it again or another --out")
    assert snapshot(run) == before


# ------------------------------------------------------------------ 4. leftovers of killed writes


def test_resume_removes_leftovers_of_killed_writes(data: Path, run: Path) -> None:
    """What a kill during a checkpoint write or the final model save leaves; look-alikes stay."""
    (run / "metrics.json").unlink()  # killed before the run finished
    (run / ".checkpoint.pt.k1ll3d00.tmp").write_bytes(b"\0" * 4096)
    (run / ".metrics.json.a1b2c3d4.tmp").write_text("{")
    for folder in (".model.x7y8z9w0", ".model.q1w2e3r4.tmp", "model.old"):  # staged, new-style, renamed away
        shutil.copytree(run / "model", run / folder)
    mine = [".notes.txt.draft1.tmp", ".model.notes", "model.older"]
    for name in mine:
        (run / name).write_text("mine\n")
    code, _, err = run_cli(train_argv(data, run, "--resume"))
    assert code == 0, err
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(["config.yaml", "log.jsonl", "metrics.json", "model", "predictions.csv", *mine])


# ------------------------------------------------------------------ 5. modes follow the umask


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_outputs_follow_the_umask(umask: int, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    old = os.umask(umask)
    try:
        code, _, err = run_cli(train_argv(data, out))
    finally:
        os.umask(old)
    assert code == 0, err
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    want = {name: (0o777 if (out / name).is_dir() else 0o666) & ~umask for name in modes}
    assert modes == want
    assert {"config.yaml", "metrics.json", "predictions.csv", "log.jsonl", "model", "model/head.safetensors",
            "model/adapter"} <= modes.keys()


# ------------------------------------------------------------------ 6. a refused command leaves the run as it was


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _started_run(tmp: Path, *overrides: str) -> tuple[Path, list[str]]:
    """A run directory as a killed run leaves it (config.yaml and a log line), and the argv that made it."""
    data = write_tar(tmp / "aclImdb_v1.tar.gz", archive_members())
    run = tmp / "run"
    argv = ["train", *MODEL, "--data", str(data), "--out", str(run), *overrides]
    cfg = load_config(None, ["model.spec=gpt2-tiny-random", f"data.path={data}", "data.max_length=32",
                             LEARNS_NOTHING_OK, *[o for o in overrides if "=" in o]])
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "log.jsonl").write_text('{"event": "baseline"}\n')
    return run, argv


RUN_CASES = ["resume-other-config", "resume-without-config", "out-exists-not-empty", "out-is-a-file",
             "evaluate-not-a-run", "predict-not-a-run", "predict-file-missing"]


@pytest.mark.parametrize("which", RUN_CASES)
def test_bad_run_directory_fails_cleanly(which: str, tmp_path: Path) -> None:
    run, argv = _started_run(tmp_path, "--set", "train.seed=1")
    if which == "resume-other-config":
        argv = [a if a != "train.seed=1" else "train.seed=2" for a in argv] + ["--resume"]
        expect = [str(run), "another config", "train.seed: 1 then, 2 now"]
    elif which == "resume-without-config":
        (run / "config.yaml").unlink()
        expect = [str(run), "nothing to resume", "config.yaml"]
        argv = [*argv, "--resume"]
    elif which == "out-exists-not-empty":
        expect = [str(run), "not empty", "--overwrite"]
    elif which == "out-is-a-file":
        run = tmp_path / "run.txt"
        run.write_text("my notes\n")
        argv = [*argv[:-2], "--out", str(run)]
        expect = [str(run), "not a directory"]
    elif which == "evaluate-not-a-run":
        run = tmp_path / "elsewhere"
        run.mkdir()
        argv, expect = ["evaluate", str(run), "--no-progress"], [str(run), "not a run directory"]
    elif which == "predict-not-a-run":
        run = tmp_path / "elsewhere"
        run.mkdir()
        argv, expect = ["predict", str(run), "great film"], [str(run), "not a run directory"]
    else:
        argv, expect = ["predict", str(run), "--file", str(tmp_path / "new.txt")], [str(tmp_path / "new.txt")]
    before = _snapshot(run) if run.is_dir() else run.read_bytes()
    code, _, err = run_cli(argv)
    assert_one_line_error(code, err, expect)
    assert (_snapshot(run) if run.is_dir() else run.read_bytes()) == before, "a refused command changed the run"
    assert not any((run / name).exists() for name in OUTPUTS[:3]) if run.is_dir() else True


def test_resume_after_a_kill_before_the_config_was_written(tmp_path: Path) -> None:
    """A kill between creating the run directory and renaming config.yaml into it leaves only our
    temporary file: --resume (or a plain new run) starts the run; real content is still refused."""
    from sentitune.config import load_config, to_dict
    from sentitune.errors import RunError
    from sentitune.runs import RunDir

    cfg = load_config(None, ["model.spec=gpt2-tiny-random", "train.seed=3"])
    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.yaml.k1ll3d.tmp").write_text("name: half-writ")
    RunDir.create(run, cfg, resume=True)
    assert to_dict(load_config(run / "config.yaml")) == to_dict(cfg)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    (run / "config.yaml").unlink()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="nothing to resume"):
        RunDir.create(run, cfg, resume=True)
    with pytest.raises(RunError, match="not empty"):
        RunDir.create(run, cfg)
    with pytest.raises(RunError, match="nothing to resume"):  # a mistyped --resume path is not a new run
        RunDir.create(tmp_path / "typo", cfg, resume=True)


# ------------------------------------------------------------------ 7. a finished run's directory


@pytest.fixture(scope="module")
def run_dir(minilm_lora_run: tuple[Path, str]) -> Path:
    return minilm_lora_run[0]


@pytest.mark.numeric  # `make test` checks the run trained under the other precision too
def test_run_directory_layout(run_dir: Path) -> None:
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    for name in ("config.yaml", "log.jsonl", "metrics.json", "predictions.csv", "model/sentitune.json",
                 "model/head.safetensors", "model/adapter/adapter_config.json",
                 "model/adapter/adapter_model.safetensors", "model/tokenizer.json", "model/tokenizer_config.json"):
        assert name in files, name
    assert "checkpoint.pt" not in files  # removed when the run completes
    assert not any(Path(f).name.startswith(".") for f in files)  # no temporary files left behind
    meta = json.loads((run_dir / "model" / "sentitune.json").read_text())
    assert meta["config"] == yaml.safe_load((run_dir / "config.yaml").read_text())  # the folder predicts alone
    assert meta["preprocessing"]["max_length"] == MAX_LENGTH
    assert {k: v for k, v in meta.items() if k not in ("config", "preprocessing", "sentitune_version")} == {
        "format": "sentitune-model", "format_version": 2, "base": "sentence-transformers/all-MiniLM-L6-v2",
        "packaged": "minilm", "base_weights": "hub", "model_type": "bert", "weights": "adapter", "pooling": "mean",
        "num_logits": 2, "hidden_size": 384, "labels": ["negative", "positive"], "dropout": 0.1, "pad_token_id": 0,
        "precision": "fp32"}


@pytest.mark.numeric  # `make test` checks the run trained under the other precision too
def test_existing_run_directory_is_not_overwritten(run_dir: Path, imdb_slice_archive: Path) -> None:
    before = (run_dir / "metrics.json").read_text()
    code, _, err = run_cli(train_args(imdb_slice_archive, run_dir))
    assert code == 2 and "run directory exists and is not empty" in err
    assert (run_dir / "metrics.json").read_text() == before
