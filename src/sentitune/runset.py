"""What bench and search share: the header of their files (name, base, set), `key=value` lists, the YAML reading,
what to do with a row's or trial's run directory (skip, resume, or train it) and the one-line form of a run's
failure. Each file type passes its own error class, so its messages stay its own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from sentitune.config import ExperimentConfig, load_config
from sentitune.errors import SentituneError
from sentitune.runs import identity

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a bench, search or row name: one folder under --out


def one_line(error: BaseException) -> str:
    """Our errors are one line already; anything else gets its type in front (it may be a bug)."""
    first = next(iter(str(error).strip().splitlines()), "")
    if isinstance(error, SentituneError):
        return first or type(error).__name__
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def override(key: str, value: Any) -> str:
    """`key=value` with the value as JSON (which is YAML): a string such as `yes` stays a string."""
    return f"{key}={json.dumps(value)}"


def strings(value: Any, where: str, error: type[SentituneError]) -> list[str]:
    """A list of `key=value` strings (a file's `set`), or `error` naming where."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise error(f"{where}: expected a list of key=value strings, got {value!r}")
    return list(value)


def read_header(path: Path, data: Any, keys: tuple[str, ...], error: type[SentituneError],
                shape: str) -> tuple[str, Path | None, list[str]]:
    """name, base (resolved next to the file) and set: what bench and search files share, checked."""
    if not isinstance(data, dict):
        raise error(f"{path}: top level must be a mapping with {shape}")
    if unknown := sorted(set(data) - set(keys)):
        raise error(f"{path}: unknown key {unknown[0]} (known: {', '.join(keys)})")
    name = data.get("name")
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise error(f"{path}: name: {name!r} is not a folder-safe name (letters, digits, . _ -)")
    base = data.get("base")
    if base is not None and not isinstance(base, str):
        raise error(f"{path}: base: expected a path to an experiment YAML, got {base!r}")
    base_path = (path.parent / base) if base else None
    if base_path is not None and not base_path.is_file():
        raise error(f"{path}: base: {base_path} not found")
    return name, base_path, strings(data.get("set"), f"{path}: set", error)


Action = Literal["done", "resume", "start"]


def plan_run(run_dir: Path, cfg: ExperimentConfig, other: Literal["error", "retrain"], error: type[SentituneError],
             what: str) -> Action:
    """What a bench row or a search trial does with its run directory: "done" (finished with this config: skip
    it, or read it back), "resume" (a checkpoint is there) or "start". A run directory of another config is
    the policy's: `other="error"` (a bench: someone else's result, never overwritten; a checkpoint of another
    config is refused by the run's own resume check, which names the difference) or `other="retrain"` (a
    search's out/best, rewritten once a better trial turned up: ours to train again)."""
    finished, checkpointed = (run_dir / "metrics.json").is_file(), (run_dir / "checkpoint.pt").is_file()
    if not finished and not checkpointed:
        return "start"
    same = same_config(run_dir, cfg)
    if finished and same:
        return "done"
    if other == "retrain":
        return "resume" if same else "start"
    if finished:
        raise error(f"{run_dir}: finished with another config than this {what}; delete it or use another --out")
    return "resume"


def run_planned(cfg: ExperimentConfig, run_dir: Path, action: Action, progress: bool,
                experiment: str | None = None, store: Path | None = None) -> dict[str, Any]:
    """Run `cfg` by its recipe (recipes.py) into `run_dir`: resumed, or started afresh (clearing what a run
    of another config or a run killed before its first checkpoint left there); `experiment` groups the runs of
    one bench or search in a tracker, `store` the folder of its default local MLflow store."""
    from sentitune.recipes import run_recipe

    resume = action == "resume"
    return run_recipe(cfg, run_dir, resume, not resume, progress, experiment=experiment, store=store)


def same_config(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """The run directory's config.yaml is `cfg` (an unreadable one is not)."""
    try:
        return identity(load_config(run_dir / "config.yaml")) == identity(cfg)
    except SentituneError:
        return False
