"""Exports of a trained run for tools without sentitune: `hf` (a plain transformers folder) and `onnx`
(an ONNX graph for ONNX Runtime, optionally int8). Both folders carry the tokenizer with the run's limits,
a sentitune.json (provenance, preprocessing, the export check) and a model card."""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from pathlib import Path
from typing import Any

from sentitune.config import ExperimentConfig, to_dict
from sentitune.data.batching import target_input
from sentitune.data.sources import has_targets
from sentitune.ensemble import load_member
from sentitune.errors import RunError
from sentitune.export.common import SCORER_PROBES
from sentitune.kinds import kind_of
from sentitune.models.registry import is_decoder
from sentitune.models.saving import MODEL_META, load_model, preprocessing_of
from sentitune.runs import open_saved

FORMATS = ("hf", "onnx")


def check_trained(path: Path, cfg: ExperimentConfig) -> None:
    """Exports, the ONNX backend and quantize need a trained transformer classifier (not a prompt or tfidf)
    that reads a review as one window: a plain *ForSequenceClassification, or its ONNX graph, cannot cut a
    review into windows and pool their logits."""
    if not kind_of(cfg).exports:
        raise RunError(f"{path}: a {cfg.method.name} run has no trained classifier to export; export, the ONNX "
                       "backend and quantize are for trained transformer runs")
    if cfg.data.windows > 1:
        raise RunError(f"{path}: the run reads a review as up to {cfg.data.windows} windows and pools their logits "
                       f"({cfg.model.window_pooling}); an exported *ForSequenceClassification or ONNX graph reads one "
                       "window, so export, the ONNX backend and quantize are for runs with data.windows=1")


# Slow tokenizers' vocabularies, which save_pretrained writes beside tokenizer.json for the architectures an
# export takes (BERT/MPNet vocab.txt; GPT-2/RoBERTa vocab.json + merges.txt; XLM-R/CamemBERT/Llama sentencepiece).
_VOCABULARIES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


@cache
def export_entries() -> tuple[frozenset[str], frozenset[str]]:
    """(file name patterns, folder names) of everything an hf or onnx export writes at the top of its folder.

    Why from transformers' own constants: the tokenizer and the model are written by its save_pretrained, so a
    name it changes is followed here; the rest are what hf.py and onnx.py write themselves.
    """
    from transformers.tokenization_utils_base import (
        ADDED_TOKENS_FILE,
        FULL_TOKENIZER_FILE,
        SPECIAL_TOKENS_MAP_FILE,
        TOKENIZER_CONFIG_FILE,
    )
    from transformers.tokenization_utils_sentencepiece import VOCAB_FILES_NAMES as SENTENCEPIECE_FILES
    from transformers.tokenization_utils_tokenizers import VOCAB_FILES_NAMES as TOKENIZERS_FILES
    from transformers.utils import CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
    from transformers.utils.hub import CHAT_TEMPLATE_DIR, CHAT_TEMPLATE_FILE, LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE

    from sentitune.ensemble import NGRAM_FOLDER
    from sentitune.export.onnx import GRAPH_NAME, SCORER_FILE, int8_path

    weights = Path(SAFE_WEIGHTS_NAME)
    files = {
        MODEL_META, "README.md",  # export_record and the model card (hf.py, onnx.py)
        CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME,  # the hf model
        f"{weights.stem}-[0-9]*-of-[0-9]*{weights.suffix}",  # its shards, model-00001-of-00002.safetensors
        GRAPH_NAME, int8_path(Path(GRAPH_NAME)).name, SCORER_FILE,  # the onnx graph, fp32 or int8; its scorer
        TOKENIZER_CONFIG_FILE, FULL_TOKENIZER_FILE, SPECIAL_TOKENS_MAP_FILE, ADDED_TOKENS_FILE,  # the tokenizer
        CHAT_TEMPLATE_FILE, LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE,
        *TOKENIZERS_FILES.values(), *SENTENCEPIECE_FILES.values(), *_VOCABULARIES,
    }
    return frozenset(files), frozenset({CHAT_TEMPLATE_DIR, NGRAM_FOLDER})  # NGRAM_FOLDER: an ensemble's half


def foreign_entries(dest: Path) -> list[str]:
    """The names in `dest` that no export writes (sorted): what replacing the folder would delete."""
    files, folders = export_entries()
    foreign = []
    for entry in sorted(dest.iterdir(), key=lambda e: e.name):
        allowed = folders if entry.is_dir() and not entry.is_symlink() else files
        if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in allowed):
            foreign.append(entry.name)
    return foreign


def check_destination(dest: Path) -> None:
    """An export replaces its folder whole: only a new or empty folder, or an earlier export, may be it.

    Why: `--out ~/models` (a folder of other things) or `--out runs` would otherwise be swapped out and deleted,
    and so would a file of the user's put beside an earlier export (notes, an evaluation): any name that no
    export writes makes the folder not an earlier export's alone.
    """
    if not dest.exists():
        return
    if not dest.is_dir():
        raise RunError(f"export: --out {dest} is a file; give a folder to create")
    if not any(dest.iterdir()):
        return
    try:
        previous = json.loads((dest / MODEL_META).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous not in FORMATS:
        raise RunError(f"export: --out {dest} exists and is not an earlier sentitune export (it would be replaced "
                       "whole); choose a new or empty folder")
    if foreign := foreign_entries(dest):
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise RunError(f"export: --out {dest} holds files that are not an earlier export's ({foreign[0]}{more}); "
                       "they would be deleted: choose a new or empty folder")


def export_run(path: Path, dest: Path, fmt: str = "hf", quantize: str | None = None) -> dict[str, Any]:
    """Export the trained classifier of a run directory (or of a model folder) to `dest`; its sentitune.json."""
    if fmt not in FORMATS:
        raise RunError(f"export: format {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize not in (None, "none") and fmt != "onnx":
        raise RunError("export: --quantize int8 applies to --format onnx (ONNX Runtime's dynamic quantization)")
    run_path, cfg, model_dir = open_saved(Path(path))
    check_trained(run_path, cfg)
    if cfg.ensemble.ngram and fmt == "hf":
        raise RunError(f"{run_path}: an ensemble run answers with its transformer and an n-gram model together; a "
                       "transformers folder holds the transformer alone. Use --format onnx (the folder carries the "
                       "n-gram model and a scorer that needs no torch)")
    if cfg.ensemble.ngram and has_targets(cfg.data):
        raise RunError(f"{run_path}: a target-dependent ensemble has no export: its n-gram half reads each target's "
                       "context words, which the exported scorer does not build (export a run without ensemble.ngram)")
    if Path(dest).resolve() in (Path(run_path).resolve(), Path(model_dir).resolve()):
        raise RunError(f"export: --out {dest} would replace the run's own files; choose another folder")
    check_destination(Path(dest))
    meta = json.loads((model_dir / MODEL_META).read_text(encoding="utf-8"))
    meta["source_run"] = str(Path(run_path).resolve())
    meta["has_targets"] = has_targets(cfg.data)  # inputs are (sentence, target) pairs
    if "preprocessing" not in meta:  # a folder saved before format 2: the run's config says it
        meta["preprocessing"] = preprocessing_of(to_dict(cfg.data))
    metrics_file = Path(run_path) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    if fmt == "onnx":  # before minutes of model loading, not after
        from sentitune.extras import require

        require("onnx", "export --format onnx")
    model, tokenizer = load_model(model_dir)
    meta.setdefault("labels", list(model.labels))  # folders saved before class names were recorded: binary
    decoder = is_decoder(model.backbone.config)
    meta["target_input"] = target_input(cfg.data, decoder).how if meta["has_targets"] else None
    if fmt == "hf":
        from sentitune.export.hf import export_hf

        return export_hf(model, tokenizer, meta, Path(dest), metrics)
    from sentitune.export.common import pipeline_probabilities
    from sentitune.export.onnx import export_onnx_folder

    portable = None
    if not meta["has_targets"]:  # whole reviews: the folder gets sentitune_scorer.py (export/portable.py)
        ensemble = meta.get("ensemble")  # sentitune.json's entry, read above with the rest
        expected = pipeline_probabilities(model, tokenizer, cfg, load_member(model_dir, ensemble), SCORER_PROBES)
        portable = {"expected": expected, "ensemble": ensemble, "model_dir": model_dir,
                    "pad_token_id": tokenizer.pad_token_id}
    return export_onnx_folder(model, tokenizer, meta, Path(dest), metrics, quantize, portable)
