"""LoRA parameter accounting for r = 4, 8, 16, 32 on decoder and encoder backbones (no training).

Builds each classifier through the same code a run uses (load_backbone -> SentimentClassifier ->
add_lora with the per-architecture default targets -> the lora method's apply) and counts. Parameter
counts depend only on the architecture, so `gpt2` and `bert-base-uncased` are built from their
default configs (GPT2Config() is GPT-2 small, BertConfig() is bert-base-uncased) when the hub is
out of reach; the packaged models are loaded for real.

    .venv/bin/python benchmarks/lora_rank_sweep.py            # print the markdown table
    .venv/bin/python benchmarks/lora_rank_sweep.py --write    # and put it into docs/METHODS.md
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from docs_block import write_block

from sentitune.config import LoraSettings, MethodConfig
from sentitune.errors import ModelError
from sentitune.models.blocks import count_parameters
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.lora import add_lora
from sentitune.models.methods import method
from sentitune.models.registry import default_lora_targets, load_backbone, resolve

RANKS = (4, 8, 16, 32)
MODELS = ("gpt2", "smollm2-135m", "bert-base-uncased", "minilm")
DOC = Path(__file__).resolve().parents[1] / "docs" / "METHODS.md"
COMMAND = ".venv/bin/python benchmarks/lora_rank_sweep.py --write"


def backbone_for(spec: str) -> tuple[Any, str, str]:
    """(backbone, model_type, where the weights came from)."""
    try:
        resolved = resolve(spec)
        return load_backbone(resolved.source), resolved.model_type, "loaded"
    except ModelError:
        from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

        if spec == "gpt2":
            return GPT2Model(GPT2Config()), "gpt2", "built from config, offline"
        if spec == "bert-base-uncased":
            return BertModel(BertConfig(), add_pooling_layer=False), "bert", "built from config, offline"
        raise


def sweep(spec: str) -> list[dict[str, Any]]:
    rows = []
    for r in RANKS:
        backbone, model_type, origin = backbone_for(spec)
        model = SentimentClassifier(backbone, backbone.config.hidden_size, "mean", 2, 0.0)
        add_lora(model, LoraSettings(r=r, alpha=2 * r), model_type)
        method("lora").apply(model, MethodConfig(lora=LoraSettings(r=r, alpha=2 * r)))
        counts = count_parameters(model)
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        rows.append({"model": spec, "type": model_type, "origin": origin, "r": r, "total": counts["total"],
                     "lora": lora, "trainable": counts["trainable"], "ratio": counts["trainable_ratio"]})
        del model, backbone
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | targets | r | total | LoRA | trainable (LoRA + head) | trainable % | LoRA / r |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        targets = ", ".join(default_lora_targets(row["type"]))
        per_r = row["lora"] // row["r"]
        lines.append(f"| {row['model']} ({row['origin']}) | {targets} | {row['r']} | {row['total']:,} | "
                     f"{row['lora']:,} | {row['trainable']:,} | {100 * row['ratio']:.3f} | {per_r:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC.name}")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [row for spec in args.models for row in sweep(spec)]
    text = table(rows)
    print(text)
    if args.write:
        write_block(DOC, "lora-rank-sweep", f"`{COMMAND}`\n\n{text}\n", require=True)


if __name__ == "__main__":
    main()
