"""The run directory: config, log, metrics, predictions, model, checkpoint — written atomically.

    RUN/config.yaml        the resolved ExperimentConfig (a run can be re-created from it alone)
    RUN/log.jsonl          one line per evaluation (baseline, validation during training, test)
    RUN/metrics.json       final metrics, baseline, parameter counts, timings
    RUN/predictions.csv    test predictions: id, label, prob_positive, pred
    RUN/model/             head.safetensors + sentitune.json + tokenizer, and the backbone as a PEFT
                           adapter (adapter/), a transformers folder (backbone/) or the untouched base
    RUN/checkpoint.pt      resumable training state (removed when the run completes)
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sentitune.atomic import append_line, write_atomic, write_json, write_text
from sentitune.config import ExperimentConfig, dump_yaml, load_config, to_dict
from sentitune.errors import RunError
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.registry import load_backbone, resolve

MODEL_META = "sentitune.json"


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
            saved = load_config(config_file)
            if to_dict(saved) != to_dict(cfg):
                diff = _first_difference(to_dict(saved), to_dict(cfg))
                raise RunError(f"{run.path}: was started with another config ({diff}); resume with the same one")
            return run
        run.check_free(overwrite)
        if run.path.exists() and any(run.path.iterdir()):  # --overwrite, or only leftover temporary files
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(config_file, dump_yaml(cfg))
        return run

    def has_content(self) -> bool:
        """Anything but the temporary files a killed atomic write leaves (`.NAME.XXXX.tmp`)."""
        if not self.path.is_dir():
            return False
        return any(not (f.name.startswith(".") and f.name.endswith(".tmp")) for f in self.path.iterdir())

    def check_free(self, overwrite: bool = False) -> None:
        """Refuse to start a new run over an existing one unless told to (checked before any work)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: exists and is not a directory")
        if self.has_content() and not overwrite:
            raise RunError(f"{self.path}: run directory exists and is not empty (use --overwrite or --resume)")

    def config(self) -> ExperimentConfig:
        if not (self.path / "config.yaml").exists():
            raise RunError(f"{self.path}: not a run directory (no config.yaml)")
        return load_config(self.path / "config.yaml")

    # ------------------------------------------------------------------ outputs
    def log(self, record: dict[str, Any]) -> None:
        append_line(self.path / "log.jsonl", json.dumps(record))

    def read_log(self) -> list[dict[str, Any]]:
        file = self.path / "log.jsonl"
        return [json.loads(x) for x in file.read_text().splitlines() if x.strip()] if file.exists() else []

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        write_json(self.path / name, metrics)

    def metrics(self) -> dict[str, Any]:
        file = self.path / "metrics.json"
        if not file.exists():
            raise RunError(f"{self.path}: no metrics.json (the run has not finished)")
        return json.loads(file.read_text())

    def write_predictions(self, ids: list[str], labels: list[int], scores: list[float], threshold: float = 0.5,
                          name: str = "predictions.csv") -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["id", "label", "prob_positive", "pred"])
        for i, y, s in zip(ids, labels, scores, strict=True):
            writer.writerow([i, y, f"{s:.6f}", int(s > threshold)])
        write_text(self.path / name, buf.getvalue())

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        write_atomic(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn file cannot exist (atomic writes), but a disk can still fail
            raise RunError(f"{self.checkpoint_path}: unreadable checkpoint ({type(e).__name__}: {e})") from None

    def clear_checkpoint(self) -> None:
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()

    @property
    def model_dir(self) -> Path:
        return self.path / "model"


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
    return f"{where}: {a!r} then, {b!r} now"


# ---------------------------------------------------------------------- saving and loading models


def save_model(model: SentimentClassifier, tokenizer: Any, spec: str, weights: str, dest: Path) -> None:
    """Write the classifier so Hugging Face tools can read it, into a temp folder renamed to `dest`.

    weights: "adapter" (PEFT LoRA adapter, loadable with PeftModel.from_pretrained on the base),
    "merged" (LoRA folded into the base, saved as a transformers folder), "backbone" (a fine-tuned
    transformers folder) or "base" (backbone untouched: only the head is new).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        backbone = model.backbone
        backbone.config.pad_token_id = tokenizer.pad_token_id
        if weights == "adapter":
            backbone.save_pretrained(tmp / "adapter")
        elif weights == "merged":
            backbone.merge_and_unload().save_pretrained(tmp / "backbone")
        elif weights == "backbone":
            backbone.save_pretrained(tmp / "backbone")
        save_file({k: v.detach().float().contiguous() for k, v in model.head.state_dict().items()},
                  str(tmp / "head.safetensors"))
        tokenizer.save_pretrained(tmp)
        if Path(spec).expanduser().is_dir():  # a relative folder would not resolve from another cwd
            spec = str(Path(spec).expanduser().resolve())
        meta = {
            "base": spec,
            "weights": "backbone" if weights == "merged" else weights,
            "pooling": model.pooling,
            "num_logits": model.num_logits,
            "hidden_size": model.head.in_features,
            "dropout": model.dropout.p,
            "pad_token_id": tokenizer.pad_token_id,
        }
        (tmp / MODEL_META).write_text(json.dumps(meta, indent=2))
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model(model_dir: Path) -> tuple[SentimentClassifier, Any]:
    """Load a saved classifier through the same registry and PEFT code a user would use."""
    from transformers import AutoTokenizer

    meta_file = model_dir / MODEL_META
    if not meta_file.exists():
        raise RunError(f"{model_dir}: no saved model ({MODEL_META} missing)")
    meta = json.loads(meta_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = meta["pad_token_id"]
    tokenizer.padding_side = "right"
    if meta["weights"] == "backbone":
        backbone = load_backbone(str(model_dir / "backbone"))
    else:
        backbone = load_backbone(resolve(meta["base"]).source)
        if meta["weights"] == "adapter":
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, model_dir / "adapter")
    model = SentimentClassifier(backbone, meta["hidden_size"], meta["pooling"], meta["num_logits"], meta["dropout"])
    model.head.load_state_dict(load_file(str(model_dir / "head.safetensors")))
    model.eval()
    return model, tokenizer
