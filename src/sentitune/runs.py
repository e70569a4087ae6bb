"""The run directory: config, log, metrics, predictions, model, checkpoint — written atomically.

    RUN/config.yaml        the resolved ExperimentConfig (a run can be re-created from it alone)
    RUN/log.jsonl          one line per evaluation (baseline, validation during training, test)
    RUN/metrics.json       final metrics, baseline, parameter counts, timings
    RUN/predictions.csv    test predictions: id, label, prob_positive, pred, words
    RUN/model/             head.safetensors + sentitune.json + tokenizer, and the backbone as a PEFT
                           adapter (adapter/), a transformers folder (backbone/) or the untouched base
    RUN/model/onnx/KEY/    the model as ONNX graphs (evaluate/predict --backend onnx, --quantize int8), KEY a hash
                           of the model's files; eval-SPLIT-int8.json, predictions-SPLIT-int8.csv their results
    RUN/checkpoint.pt      resumable training state (removed when the run completes)

`--overwrite` deletes only these names (and the other outputs in OUTPUT_NAMES / OUTPUT_PATTERNS, and
leftovers of killed writes), and only in a folder whose config.yaml is a sentitune config: a user's
file that happens to sit in a run directory survives, and a folder that is not a run is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fnmatch
import json
import pickle
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from sentitune.atomic import append_line, write_atomic, write_csv, write_json, write_text
from sentitune.coerce import from_dict
from sentitune.config import ExperimentConfig, dump_yaml, load_config, to_dict
from sentitune.data.records import Example
from sentitune.errors import RunError, SentituneError
from sentitune.models.saving import MODEL_META, saved_config

# What sentitune writes into a run directory (train, evaluate, zero-shot): --overwrite deletes these only.
OUTPUT_NAMES = frozenset({"config.yaml", "log.jsonl", "metrics.json", "checkpoint.pt", "model", "zero_shot.json",
                          "tracking.json", "tensorboard"})  # the last two: train.report_to (tracking.py)
OUTPUT_PATTERNS = ("predictions*.csv", "eval-*.json", "margins*.csv")
# Leftovers of a killed write: `.NAME.XXXXXXXX.tmp` (atomic.py), `.model.XXXXXXXX` (model folders were
# once staged without the .tmp suffix), and `model.old` (a kill between the model folder's two renames).
_TEMP = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")
_OLD_MODEL_TEMP = re.compile(r"\.model\.[A-Za-z0-9_]{8}")
# Top-level sections every config.yaml sentitune writes has (a hand-written fragment may not).
_CONFIG_SECTIONS = ("name", "data", "model", "method", "train")
# Who hears each log record besides log.jsonl: a context variable, so only the run being tracked is heard.
_LISTENERS: contextvars.ContextVar[tuple[Callable[[dict[str, Any]], None], ...]] = contextvars.ContextVar(
    "sentitune_log_listeners", default=())

UNTRACKED = ("report_to", "tracking_uri")  # train settings that change where a run is reported, not what it computes


def identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """What makes two runs the same run (resume, a bench's finished row): the config, less where it is reported."""
    data = to_dict(cfg)
    for key in UNTRACKED:
        data["train"].pop(key, None)
    return data


@contextlib.contextmanager
def listening(listener: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """`listener` receives every record a RunDir logs while the body runs (tracking.py)."""
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ creation and resume
    @classmethod
    def create(cls, path: Path, cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> RunDir:
        run = cls(path)
        config_file = run.path / "config.yaml"
        if resume and run.path.is_dir() and not config_file.exists() and not run.has_content():
            resume = False  # killed before its config was written: nothing ran yet, so start it
        if resume:
            if not config_file.exists():
                raise RunError(f"{run.path}: nothing to resume (no config.yaml)")
            if (run.path / "metrics.json").exists() and not run.checkpoint_path.exists():
                raise RunError(f"{run.path}: this run already finished (metrics.json); nothing to resume — "
                               "use --overwrite to run it again or another --out")
            saved = load_config(config_file)
            if identity(saved) != identity(cfg):
                diff = _first_difference(identity(saved), identity(cfg))
                raise RunError(f"{run.path}: was started with another config ({diff}); resume with the same one")
            run.remove_leftovers()
            return run
        run.check_free(overwrite)
        if run.path.is_dir():  # --overwrite of a run, or only leftovers of a killed start
            run.remove_outputs()
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(config_file, dump_yaml(cfg))
        return run

    def has_content(self) -> bool:
        """Anything but the leftovers a killed write of ours leaves (`.NAME.XXXX.tmp`, see _TEMP)."""
        if not self.path.is_dir():
            return False
        return any(not _is_leftover(f.name) for f in self.path.iterdir())

    def check_free(self, overwrite: bool = False) -> None:
        """Refuse to start a new run over an existing one unless told to (checked before any work), and
        refuse --overwrite of anything that is not a sentitune run, or is the working or home folder."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: exists and is not a directory")
        if not self.has_content():
            return
        if not overwrite:
            raise RunError(f"{self.path}: run directory exists and is not empty (use --overwrite or --resume)")
        if where := _protected(self.path):
            raise RunError(f"{self.path}: is {where}; refusing to delete anything in it with --overwrite "
                           "(use another --out)")
        if not self.is_run():
            names = sorted(f.name for f in self.path.iterdir() if not _is_leftover(f.name))
            shown = ", ".join(names[:3]) + (f", ... ({len(names)} entries)" if len(names) > 3 else "")
            raise RunError(f"{self.path}: not a sentitune run directory (contains {shown}); "
                           "refusing to delete it with --overwrite")

    def is_run(self) -> bool:
        """config.yaml is a full sentitune config, as every run writes first (a marker would need one more file)."""
        file = self.path / "config.yaml"
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
            load_config(file)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, SentituneError):
            return False
        return isinstance(raw, dict) and all(k in raw for k in _CONFIG_SECTIONS)

    def remove_outputs(self) -> None:
        """Delete what sentitune wrote here (and leftovers of killed writes); anything else stays."""
        for f in self.path.iterdir():
            if _is_output(f.name) or _is_leftover(f.name):
                _remove(f)

    def remove_leftovers(self) -> None:
        """Delete the temporary files and folders that killed writes left (never anything else)."""
        for f in self.path.iterdir():
            if _is_leftover(f.name):
                _remove(f)

    def config(self) -> ExperimentConfig:
        if not (self.path / "config.yaml").exists():
            raise RunError(f"{self.path}: not a run directory (no config.yaml)")
        return load_config(self.path / "config.yaml")

    # ------------------------------------------------------------------ outputs
    def log(self, record: dict[str, Any]) -> None:
        append_line(self.path / "log.jsonl", json.dumps(record))
        for listener in _LISTENERS.get():  # experiment trackers (tracking.py), while a run is tracked
            listener(record)

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        write_json(self.path / name, metrics)

    def write_predictions(self, examples: Sequence[Example], scores: Sequence[Any], threshold: float = 0.5,
                          name: str = "predictions.csv", labels: Sequence[str] | None = None) -> None:
        """One row per example, in order: id, label, score, decision and `words` (whitespace-separated words of
        the cleaned text, the same for any tokenizer, so a report can compare models by review length). Ids
        can come from the user (data.id_column): written spreadsheet-safe (see atomic.write_csv).

        Two classes: one score, prob_positive. More: rows of class probabilities, one prob_<label> column
        each, and pred is the most probable class. Target-dependent examples add a `target` column."""
        scores = [s.tolist() if hasattr(s, "tolist") else s for s in scores]
        multi = bool(scores) and isinstance(scores[0], (list, tuple))
        names = list(labels or [])
        if multi and len(names) != len(scores[0]):
            names = [f"class_{i}" for i in range(len(scores[0]))]
        targets = any(e.target is not None for e in examples)
        header = ["id", *(["target"] if targets else []), "label",
                  *([f"prob_{n}" for n in names] if multi else ["prob_positive"]), "pred", "words"]

        def row(e: Example, s: Any) -> list[Any]:
            probs = [f"{p:.6f}" for p in s] if multi else [f"{s:.6f}"]
            pred = max(range(len(s)), key=s.__getitem__) if multi else int(s > threshold)
            return [e.id, *([e.target] if targets else []), e.label, *probs, pred, len(e.text.split())]

        rows = (row(e, s) for e, s in zip(examples, scores, strict=True))
        write_csv(self.path / name, header, rows)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A dataclass under "state" is stored as a dict of its fields, so that the file holds only
        tensors and plain values and loads with weights_only=True (no class is ever unpickled)."""
        state = checkpoint.get("state")
        if dataclasses.is_dataclass(state) and not isinstance(state, type):
            fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}  # shallow: no tensor copies
            checkpoint = {**checkpoint, "state": fields}
        write_atomic(self.checkpoint_path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, state_type: type | None = None) -> dict[str, Any] | None:
        """The checkpoint, loaded with weights_only=True: a crafted pickle is refused, never run.

        With `state_type`, checkpoint["state"] is rebuilt as that dataclass. Checkpoints written before
        the state was stored as a dict hold a pickled `state_type`: that one class (ours, a plain
        dataclass whose unpickling runs no code) is allowed, so such runs still resume.
        """
        path = self.checkpoint_path
        if not path.exists():
            return None
        try:
            with torch.serialization.safe_globals([state_type] if state_type is not None else []):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" in (detail := _load_failure(e)):  # it names a function or class: a crafted or foreign file
                raise RunError(f"{path}: refused: not only tensors and plain values ({detail}); nothing in it was "
                               "run — delete it, or start over with --overwrite") from None
            raise RunError(f"{path}: unreadable checkpoint ({detail})") from None
        except Exception as e:  # a torn file cannot exist (atomic writes), but a disk can still fail
            raise RunError(f"{path}: unreadable checkpoint ({type(e).__name__}: {_load_failure(e)})") from None
        missing = [k for k in ("state", "params", "optimizer", "scheduler", "rng")
                   if not isinstance(checkpoint, dict) or k not in checkpoint]
        old_format = not missing and state_type is not None and type(checkpoint["state"]) is state_type
        if missing or not (isinstance(checkpoint["state"], dict) or old_format):
            what = ", ".join(missing) or "state"
            raise RunError(f"{path}: not a sentitune checkpoint (missing or malformed: {what})")
        if state_type is not None:
            try:  # rebuilt through __init__ even from the old format: a field added since gets its default
                checkpoint["state"] = state_type(**(vars(checkpoint["state"]) if old_format else checkpoint["state"]))
            except TypeError as e:
                raise RunError(f"{path}: not a checkpoint of this sentitune version ({e})") from None
        return checkpoint

    def clear_checkpoint(self) -> None:
        """The run finished: drop its checkpoint, and whatever killed writes of earlier attempts left."""
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()
        self.remove_leftovers()

    @property
    def model_dir(self) -> Path:
        return self.path / "model"


class FollowerRun(RunDir):
    """The run directory as the other processes of a data-parallel run see it: they read its checkpoint to
    resume; only the main process writes (two writers of one log or one checkpoint would corrupt them)."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        pass

    def write_predictions(self, *args: Any, **kwargs: Any) -> None:
        pass

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pass

    def clear_checkpoint(self) -> None:
        pass


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
    return f"{where}: {a!r} then, {b!r} now"


def _is_output(name: str) -> bool:
    return name in OUTPUT_NAMES or any(fnmatch.fnmatchcase(name, p) for p in OUTPUT_PATTERNS)


def _is_leftover(name: str) -> bool:
    """A temporary file or folder of one of our killed writes (see _TEMP), or `model.old`."""
    temp = _TEMP.fullmatch(name)
    return bool(temp and _is_output(temp["name"])) or bool(_OLD_MODEL_TEMP.fullmatch(name)) or name == "model.old"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()  # a symlink is removed, never followed


def _protected(path: Path) -> str | None:
    """Which folder `path` is, if clearing it could hit the user's own work however it looks."""
    p, cwd = path.resolve(), Path.cwd().resolve()
    if p == Path(p.anchor):
        return "the root directory"
    if p == cwd:
        return "the current directory"
    if p in cwd.parents:
        return "a parent of the current directory"
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        home = None
    if home is not None and (p == home or p in home.parents):
        return "the home directory" if p == home else "a parent of the home directory"
    return None


def _load_failure(e: Exception) -> str:
    """torch.load's reason on one line (its weights_only message is a paragraph of advice around it)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = [x.removeprefix("WeightsUnpickler error:").strip() for x in lines[1:]
                 if not x.startswith(("Please file an issue", "Check the documentation"))] or lines[:1]
    first = lines[0].split(". ")[0].rstrip(".") if lines else type(e).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def open_saved(path: Path) -> tuple[Path, ExperimentConfig, Path]:
    """(path, config, model folder) of a run directory, or of a model folder on its own.

    Why both: a model folder copied away from its run (or shared) carries the run's config in
    sentitune.json, so it predicts exactly as the run did without ../config.yaml.
    """
    if (path / "config.yaml").exists() or not (path / MODEL_META).exists():
        run = RunDir(path)
        return run.path, run.config(), run.model_dir
    config = saved_config(path)
    if config is None:
        raise RunError(f"{path}: this model folder predates self-contained folders (no run config in {MODEL_META}); "
                       "use its run directory")
    return path, from_dict(ExperimentConfig, config, "sentitune.json config"), path
