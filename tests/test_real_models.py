"""Real pretrained models learn sentiment from a small real IMDb slice, and the packaged ones load.

Sizes are chosen to fit about a minute each on 2 CPU cores: the shortest reviews, one or two
epochs. The bars sit well above chance (accuracy 0.5, AUC 0.5) with a margin below what these
settings reach (accuracy / AUC: MiniLM partial 0.850 / 0.915, SmolLM2 LoRA 0.690 / 0.787, from
`benchmarks/real_model_checks.py`, which runs the same settings; see docs/METHODS.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import take, write_archive

from sentitune.config import LoraSettings, MethodConfig, load_config
from sentitune.models.blocks import count_parameters
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.lora import add_lora
from sentitune.models.methods import method
from sentitune.models.registry import load_backbone, load_tokenizer, resolve
from sentitune.models.saving import load_model
from sentitune.training import train


@pytest.fixture(scope="module")
def real_slice(imdb_full: dict[str, list[Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 + 100 training and 50 + 50 test reviews, the shortest of each class (cheap to run)."""
    splits = {"train": take(imdb_full["train"], 100, shortest=True), "test": take(imdb_full["test"], 50, shortest=True)}
    return write_archive(tmp_path_factory.mktemp("real") / "aclImdb_v1.tar.gz", splits)


def run(archive: Path, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    common = [f"data.path={archive}", "data.val_size=0", "train.batch_size=16", "train.baseline=false",
              "train.checkpoint_every=null", "train.threads=2"]
    return train(load_config(None, common + overrides), run_dir)


@pytest.mark.slow
def test_minilm_partial_beats_chance(real_slice: Path, tmp_path: Path) -> None:
    metrics = run(real_slice, tmp_path / "run", [
        "model.spec=minilm", "method.name=partial", "method.freeze_layers=4", "data.max_length=128",
        "train.epochs=1", "train.lr=0.0005",
    ])
    assert metrics["test"]["n"] == 100
    assert metrics["test"]["accuracy"] >= 0.72 and metrics["test"]["roc_auc"] >= 0.8, metrics["test"]
    # top 2 of 6 blocks + head train: the frozen part (embeddings + 4 blocks) is most of MiniLM
    assert 0.1 < metrics["parameters"]["trainable_ratio"] < 0.2


@pytest.mark.slow
def test_smollm2_lora_beats_chance(real_slice: Path, tmp_path: Path) -> None:
    metrics = run(real_slice, tmp_path / "run", [
        "model.spec=smollm2-135m", "method.name=lora", "method.lora.top_layers=2", "data.train_size=100",
        "data.max_length=48", "train.epochs=2", "train.lr=0.003",
    ])
    assert metrics["test"]["n"] == 100
    assert metrics["test"]["accuracy"] >= 0.6 and metrics["test"]["roc_auc"] >= 0.7, metrics["test"]
    # Adapters on q_proj/v_proj of the top 2 of 30 Llama blocks: the saved adapter reloads and agrees.
    model, tokenizer = load_model(tmp_path / "run" / "model")
    assert sorted({n.split(".")[4] for n, _ in model.named_parameters() if "lora_" in n}) == ["28", "29"]
    assert tokenizer.pad_token is not None


def test_mpnet_packaged_resolves_once_and_loads() -> None:
    first = resolve("mpnet")
    stamp = os.stat(Path(first.source) / "config.json").st_mtime_ns
    again = resolve("mpnet")  # the converted folder in the cache is reused, not rebuilt
    assert again.source == first.source and os.stat(Path(again.source) / "config.json").st_mtime_ns == stamp
    assert (first.model_type, first.is_decoder) == ("mpnet", False)
    tokenizer = load_tokenizer(first.source)
    backbone = load_backbone(first.source)
    assert backbone.config.num_hidden_layers == 12 and backbone.config.hidden_size == 768
    torch.manual_seed(0)
    model = SentimentClassifier(backbone, 768, "mean", 2, 0.0)
    add_lora(model, LoraSettings(r=4), first.model_type)  # default targets for MPNet: q and v
    method("lora").apply(model, MethodConfig(lora=LoraSettings(r=4)))
    counts = count_parameters(model)
    assert counts["trainable"] == 12 * 2 * 4 * (768 + 768) + 768 * 2 + 2  # r * (in + out) per adapted layer, + head
    enc = tokenizer(["A wonderful, moving film.", "Dull."], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(enc["input_ids"], enc["attention_mask"])
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
