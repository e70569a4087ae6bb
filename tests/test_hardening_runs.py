"""Regression tests of the hardening issue for run directories: one test per case.

--overwrite must never delete what is not a sentitune run (nor the working or home folder, nor a
user's file inside a run); --resume must never execute a crafted checkpoint, nor silently retrain a
finished run; leftovers of killed writes go away; outputs follow the umask; renames are fsynced in
their folder. Every case goes through the real CLI (`sentitune.cli.main`, in-process) on the tiny
random GPT-2 with a few synthetic reviews, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli


def write_reviews(path: Path, n: int = 40) -> Path:
    """Synthetic labelled reviews: the run-directory code under test does not care what they say."""
    rows = ["text,label"] + [f'"Review {i}: {"a fine, moving film" if i % 2 else "a dull, clumsy film"}.",{i % 2}'
                             for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def train_argv(data: Path, out: Path | str, *extra: str) -> list[str]:
    return ["train", "--model", "gpt2-tiny-random", "--method", "lora", "--source", str(data), "--max-length", "32",
            "--train-size", "16", "--val-size", "4", "--batch-size", "8", "--epochs", "1", "--no-progress",
            "--set", "train.threads=1", "--out", str(out), *extra]




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


# ------------------------------------------------------------------ 6. renames are durable


def test_renames_are_followed_by_an_fsync_of_their_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename lives in the folder's entry: without fsyncing the folder a power cut can undo it."""
    from sentitune.atomic import write_text
    from sentitune.models.classifier import SentimentClassifier
    from sentitune.models.registry import load_backbone, load_tokenizer, resolve
    from sentitune.models.saving import save_model

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst, *args, **kwargs)

    source = resolve("gpt2-tiny-random").source
    tokenizer, backbone = load_tokenizer(source), load_backbone(source)
    model = SentimentClassifier(backbone, backbone.config.hidden_size, "last", 2, 0.0)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run = tmp_path / "run"
    write_text(run / "config.yaml", "name: x\n")
    save_model(model, tokenizer, "gpt2-tiny-random", "base", run / "model")
    monkeypatch.undo()

    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    assert [events[i][1] for i in renames] == [str(run / "config.yaml"), str(run / "model")]
    for i in renames:
        assert events[i + 1:i + 2] == [("fsync", str(run.resolve()))], f"no fsync of {run} right after {events[i]}"
    staged = [path for kind, path in events[:renames[1]] if kind == "fsync"]
    assert any(p.endswith("/head.safetensors") for p in staged), "the model's files are fsynced before the rename"


def test_a_cache_folder_another_process_finished_first_is_kept(tmp_path: Path) -> None:
    """atomic_dir(keep_theirs=...): two runs building the same cache key end with one folder, never an error."""
    from sentitune.atomic import atomic_dir

    dest = tmp_path / "key"
    with atomic_dir(dest, keep_theirs="meta.json") as tmp:
        (tmp / "meta.json").write_text("ours")
        dest.mkdir()
        (dest / "meta.json").write_text("theirs")  # the other run renames its folder into place first
    assert (dest / "meta.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["key"], "ours is dropped, no temporary folder left"
    # A folder there that is not a finished one (no meta.json) is not taken for theirs.
    other = tmp_path / "other"
    with pytest.raises(OSError), atomic_dir(other, keep_theirs="meta.json") as tmp:
        (tmp / "meta.json").write_text("ours")
        other.mkdir()
        (other / "half-written.bin").write_text("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "other"]
