"""LoRA adapters (PEFT) on a classifier's backbone: in the blocks and modules the settings name, the head ours."""

from __future__ import annotations

from typing import Any

from sentitune.config import LoraSettings
from sentitune.errors import ModelError
from sentitune.models.blocks import blocks_of, linear_module_names
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.registry import default_lora_targets


def has_lora(model: SentimentClassifier) -> bool:
    return any("lora_" in name for name, _ in model.backbone.named_parameters())


def add_lora(model: SentimentClassifier, settings: LoraSettings, model_type: str) -> Any:
    """Wrap the backbone with PEFT LoRA adapters; the head stays ours and is saved beside them."""
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules or default_lora_targets(model_type)
    available = linear_module_names(model.backbone)
    missing = [t for t in targets if t not in available]
    if missing:
        raise ModelError(
            f"method.lora.target_modules: {', '.join(missing)} not in this {model_type} model; "
            f"it has: {', '.join(available)}"
        )
    block_name, blocks = blocks_of(model.backbone)
    layers = None
    if settings.top_layers is not None:
        if settings.top_layers > len(blocks):
            raise ModelError(f"method.lora.top_layers={settings.top_layers} but the model has {len(blocks)} blocks")
        layers = list(range(len(blocks) - settings.top_layers, len(blocks)))
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        layers_pattern=block_name.split(".")[-1] if layers else None,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
    )
    model.backbone = get_peft_model(model.backbone, config)
    return config
