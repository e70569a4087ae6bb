"""A trained classifier on disk, in formats Hugging Face tools read, and loaded back.

    model/sentitune.json     format version, base model (its hub id), backbone form, pooling, head size, class
                             names, pad id, inference precision, the preprocessing predictions depend on, and the
                             run's whole config: the folder alone is enough to predict (copied anywhere)
    model/README.md          a model card: what it is, its metrics, how to load it with and without sentitune
    model/head.safetensors   the classification head
    model/window_scorer.safetensors  (attention pooling of windows only) the scorer of each window
    model/adapter/           a PEFT LoRA adapter (PeftModel.from_pretrained on the base, named by its hub id), or
    model/backbone/          a transformers folder (fine-tuned or LoRA merged), or neither (base untouched)
    model/tokenizer*         the tokenizer, with the pad token, max length and truncation side the run used

A folder is written with atomic_dir (temp folder, renamed into place). Loading checks every file
first and names the one that is missing or damaged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from sentitune import __version__
from sentitune.atomic import atomic_dir
from sentitune.errors import RunError, SentituneError
from sentitune.models.card import model_card
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.registry import base_record, base_source, ensure_pad_token, load_backbone

MODEL_META = "sentitune.json"
FORMAT_VERSION = 2  # 1: no version key (base as sentitune named it, preprocessing only in ../config.yaml)
# What `predict` needs besides the weights, from the run's DataConfig (the rest of the config rides along).
PREPROCESSING_KEYS = ("clean_html", "max_length", "truncation", "head_tokens", "target_input", "target_markers",
                      "target_prompt", "labels")
WINDOW_KEYS = ("windows", "window_stride")  # recorded only for a windowed run (data.windows > 1)
WINDOW_SCORER = "window_scorer.safetensors"


def save_model(model: SentimentClassifier, tokenizer: Any, spec: str, weights: str, dest: Path,
               precision: str = "fp32", config: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None,
               extra: Callable[[Path], dict[str, Any]] | None = None) -> None:
    """Write the classifier so Hugging Face tools can read it, into a temp folder renamed to `dest`.

    weights: "adapter" (PEFT LoRA adapter, loadable with PeftModel.from_pretrained on the base),
    "merged" (LoRA folded into the base, saved as a transformers folder), "backbone" (a fine-tuned
    transformers folder) or "base" (backbone untouched: only the head is new). precision: what
    `predict` computes in, recorded in sentitune.json (see sentitune.precision). config: the run's config
    (as a dict), so the folder predicts on its own; metrics: the run's, for the model card. extra: writes more
    into the folder being written (an ensemble's n-gram model) and returns its sentitune.json entries.
    """
    base = base_record(spec)
    data = (config or {}).get("data", {})
    with atomic_dir(dest) as tmp:
        backbone = model.backbone
        backbone.config.pad_token_id = tokenizer.pad_token_id
        if weights == "adapter":
            backbone.save_pretrained(tmp / "adapter")
            _name_base(tmp / "adapter" / "adapter_config.json", str(base["base"]))
        elif weights == "merged":
            backbone.merge_and_unload().save_pretrained(tmp / "backbone")
        elif weights == "backbone":
            backbone.save_pretrained(tmp / "backbone")
        save_file({k: v.detach().float().contiguous() for k, v in model.head.state_dict().items()},
                  str(tmp / "head.safetensors"))
        if model.window_scorer is not None:
            save_file({k: v.detach().float().contiguous() for k, v in model.window_scorer.state_dict().items()},
                      str(tmp / WINDOW_SCORER))
        save_tokenizer(tokenizer, tmp, data.get("max_length"), data.get("truncation"))
        meta = {
            "format": "sentitune-model",
            "format_version": FORMAT_VERSION,
            "sentitune_version": __version__,
            **base,  # base: the hub id (or folder); packaged: the offline copy sentitune loads it from
            "model_type": backbone.config.model_type,
            "weights": "backbone" if weights == "merged" else weights,
            "pooling": model.pooling,
            "num_logits": model.num_logits,
            "labels": model.labels,  # class names in logit order
            "hidden_size": model.head.in_features,
            "dropout": model.dropout.p,
            "pad_token_id": tokenizer.pad_token_id,
            "precision": precision,  # what predict computes in (sentitune.precision: fp32 is the same anywhere)
            "preprocessing": preprocessing_of(data),
            "config": config,
        }
        if model.window_pooling is not None:  # a one-window model's folder stays as it always was
            meta["window_pooling"] = model.window_pooling
        if extra is not None:
            meta.update(extra(tmp))
        (tmp / MODEL_META).write_text(json.dumps(meta, indent=2))
        (tmp / "README.md").write_text(model_card(meta, metrics), encoding="utf-8")


def preprocessing_of(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's data settings (as a dict) that its predictions depend on (window settings only when
    the run read several windows: absent, a review is one window)."""
    keys = PREPROCESSING_KEYS + (WINDOW_KEYS if (data.get("windows") or 1) > 1 else ())
    return {key: data[key] for key in keys if key in data}


def save_tokenizer(tokenizer: Any, dest: Path, max_length: int | None, truncation: str | None) -> None:
    """The tokenizer with the run's own limits, and nothing left over from the base model's.

    Why: a base tokenizer.json may carry its own truncation (MiniLM's: 128 tokens), which
    save_pretrained writes into tokenizer_config.json as `max_length`; a reader would take it for the
    run's. model_max_length and truncation_side are what `tokenizer(text, truncation=True)` obeys.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    for stray in ("max_length", "stride", "truncation_strategy", "pad_to_multiple_of", "is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(stray, None)
    if max_length is not None:
        tokenizer.model_max_length = int(max_length)
        tokenizer.init_kwargs["model_max_length"] = int(max_length)
    if truncation in ("head", "tail"):  # head+tail has no tokenizer setting: sentitune.json records it
        side = "right" if truncation == "head" else "left"
        tokenizer.truncation_side = tokenizer.init_kwargs["truncation_side"] = side
    tokenizer.save_pretrained(dest)


# LoraConfig fields PEFT holds as sets and writes as list(set): their order follows string hashing, which
# differs between processes, so two runs of one config would write different adapter_config.json files.
SET_FIELDS = ("target_modules", "exclude_modules")


def _name_base(adapter_config: Path, base: str) -> None:
    """PEFT writes the base's load path (a folder in the creator's cache); a hub id loads anywhere. Its
    set-valued fields are written sorted, so the same run writes the same bytes."""
    record = json.loads(adapter_config.read_text())
    record["base_model_name_or_path"] = base
    for key in SET_FIELDS:
        if isinstance(record.get(key), list):
            record[key] = sorted(record[key])
    adapter_config.write_text(json.dumps(record, indent=2, sort_keys=True))


def saved_config(model_dir: Path) -> dict[str, Any] | None:
    """The run config a model folder carries (format 2 on), so the folder predicts without its run."""
    meta_file = Path(model_dir) / MODEL_META
    config = _read_model_meta(meta_file).get("config") if meta_file.exists() else None
    return config if isinstance(config, dict) else None


def saved_entry(model_dir: Path, key: str) -> Any:
    """One entry of a model folder's sentitune.json (None when absent), e.g. an ensemble's weights."""
    meta_file = Path(model_dir) / MODEL_META
    return _read_model_meta(meta_file).get(key) if meta_file.exists() else None


def saved_precision(model_dir: Path) -> str:
    """The inference precision a saved model records (fp32 for models saved before it was recorded)."""
    try:
        return str(json.loads((model_dir / MODEL_META).read_text()).get("precision", "fp32"))
    except (OSError, ValueError, AttributeError):
        return "fp32"  # load_model reports an unreadable sentitune.json with its own message


# Characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").


# Keys load_model reads from sentitune.json (later versions add more; older runs lack those).
_META_KEYS = ("base", "weights", "pooling", "num_logits", "hidden_size", "dropout", "pad_token_id")
_DAMAGED = "the run's model folder is damaged"


class _Loading:
    """`with _Loading(file):` turns what a library raises on a damaged file into one RunError naming it.

    Why: a truncated safetensors file, a broken adapter or tokenizer surface as SafetensorError,
    HFValidationError, ValueError... with 30-line tracebacks that never say which file of the run is bad.
    """

    def __init__(self, path: Path | str, damaged: str = _DAMAGED) -> None:
        self.path, self.damaged = path, damaged

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if not isinstance(error, Exception) or isinstance(error, (SentituneError, MemoryError)):
            return  # no error, one with a message already, or not about the file: propagate unchanged
        detail = " ".join(str(error).split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise RunError(f"{self.path}: cannot load ({type(error).__name__}: {detail}) — {self.damaged}") from error


def _read_model_meta(meta_file: Path) -> dict[str, Any]:
    """sentitune.json, checked: a truncated or hand-edited file is one RunError, not a KeyError later."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunError(f"{meta_file}: not valid JSON ({e.msg}, line {e.lineno}) — {_DAMAGED}") from None
    except UnicodeDecodeError:
        raise RunError(f"{meta_file}: not UTF-8 text — {_DAMAGED}") from None
    except OSError as e:
        raise RunError(f"{meta_file}: cannot read ({e.strerror})") from None
    if not isinstance(meta, dict):
        raise RunError(f"{meta_file}: expected a JSON object, got {type(meta).__name__} — {_DAMAGED}")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise RunError(f"{meta_file}: missing key {missing[0]!r} — {_DAMAGED}")
    return meta


def load_model(model_dir: Path) -> tuple[SentimentClassifier, Any]:
    """Load a saved classifier through the same registry and PEFT code a user would use.

    A model folder copied half-way or edited by hand fails with a RunError naming the file: every file
    is checked before the (slow) loads start, and every load is wrapped (see _Loading).
    """
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    meta_file = model_dir / MODEL_META
    if not meta_file.exists():
        raise RunError(f"{model_dir}: no saved model ({MODEL_META} missing)")
    meta = _read_model_meta(meta_file)
    needed = [model_dir / "head.safetensors", model_dir / "tokenizer_config.json"]
    if meta["weights"] == "backbone":
        needed.append(model_dir / "backbone" / "config.json")
    elif meta["weights"] == "adapter":
        needed.append(model_dir / "adapter" / "adapter_config.json")
    elif meta["weights"] != "base":
        raise RunError(f"{meta_file}: weights {meta['weights']!r} is not one of adapter, backbone, base — {_DAMAGED}")
    window_pooling = meta.get("window_pooling")
    if window_pooling not in (None, "mean", "max", "attention"):
        raise RunError(f"{meta_file}: window_pooling {window_pooling!r} is not one of mean, max, attention — "
                       f"{_DAMAGED}")
    if window_pooling == "attention":
        needed.append(model_dir / WINDOW_SCORER)
    for path in needed:
        if not path.exists():  # name the folder when the whole folder is gone
            gone = path.parent if path.parent != model_dir and not path.parent.exists() else path
            raise RunError(f"{gone}: missing — the run's model folder is incomplete")
    with _Loading(model_dir / "tokenizer_config.json"):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # without tokenizer.json it loads, with no vocabulary
        vocabulary = model_dir / "tokenizer.json"
        raise RunError(f"{vocabulary}: missing — the run's model folder is incomplete" if not vocabulary.exists()
                       else f"{model_dir}: the tokenizer has no vocabulary — {_DAMAGED}")
    ensure_pad_token(tokenizer, str(model_dir), meta["pad_token_id"])
    if meta["weights"] == "backbone":
        with _Loading(model_dir / "backbone"):
            backbone = load_backbone(str(model_dir / "backbone"))
    else:
        with _Loading(str(meta["base"]), f"it is the base model of the run in {model_dir.parent}"):
            source = base_source(meta)
        with _Loading(source, f"it is the base model of the run in {model_dir.parent}"):
            backbone = load_backbone(source)
        if meta["weights"] == "adapter":
            from peft import PeftModel

            with _Loading(model_dir / "adapter"):
                backbone = PeftModel.from_pretrained(backbone, model_dir / "adapter")
    with _Loading(meta_file):
        model = SentimentClassifier(backbone, meta["hidden_size"], meta["pooling"], meta["num_logits"],
                                    meta["dropout"], window_pooling)
        if "labels" in meta:  # runs saved before N-class labels are binary: the classifier's default names
            if not isinstance(meta["labels"], list) or len(meta["labels"]) != model.num_classes:
                raise ValueError(f"labels {meta['labels']!r} do not match num_logits {meta['num_logits']}")
            model.labels = [str(x) for x in meta["labels"]]
    with _Loading(model_dir / "head.safetensors"):
        model.head.load_state_dict(load_file(str(model_dir / "head.safetensors")))
    if model.window_scorer is not None:
        with _Loading(model_dir / WINDOW_SCORER):
            model.window_scorer.load_state_dict(load_file(str(model_dir / WINDOW_SCORER)))
    model.eval()
    return model, tokenizer
