"""The adaptation methods, one class each: what trains, how deep the frozen prefix is, how it is saved.

The recipe (training.py), the feature cache (how much of the forward pass can be computed once) and
saving (which form of the backbone to write) all read these classes, so a method is described in one
place. Freezing is by structure (models/blocks.py): the embeddings and the first N transformer blocks.
Methods are pure: `trainable` and `frozen_modules` only look at the model; `apply` is the one call
that sets requires_grad, so counting parameters never changes what trains.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from sentitune.config import PHASE_METHODS, ExperimentConfig, MethodConfig
from sentitune.errors import ModelError
from sentitune.models.blocks import frozen_prefix, num_blocks
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.lora import add_lora, has_lora
from sentitune.models.registry import ResolvedModel, load_backbone


class Method:
    """A way of adapting a pretrained classifier; subclasses set the class attributes."""

    name: ClassVar[str]
    trains: ClassVar[str]  # one line for docs and --help
    uses_lora: ClassVar[bool] = False  # LoRA adapters are added to the backbone before training
    changes_base: ClassVar[bool] = False  # base weights change: saved as a full backbone folder

    def frozen_depth(self, model: SentimentClassifier, settings: MethodConfig) -> int:
        """Leading blocks (with the embeddings) left frozen: what a feature cache can hold (0: none)."""
        return 0

    def trainable(self, model: SentimentClassifier, settings: MethodConfig) -> set[str]:
        """Names of the parameters this method trains (the head always trains)."""
        raise NotImplementedError

    def frozen_modules(self, model: SentimentClassifier, settings: MethodConfig) -> list[nn.Module]:
        """Modules that stay in eval mode while training (no dropout in what does not learn)."""
        return []

    def apply(self, model: SentimentClassifier, settings: MethodConfig) -> None:
        """Set requires_grad and the eval-mode modules of `model` for this method."""
        names = self.trainable(model, settings)
        for name, param in model.named_parameters():
            param.requires_grad = name in names
        model.frozen_modules = self.frozen_modules(model, settings)


def _head(model: SentimentClassifier) -> set[str]:
    """The head, and the window scorer of attention pooling: it trains whenever the head does."""
    names = {f"head.{name}" for name, _ in model.head.named_parameters()}
    if model.window_scorer is not None:
        names |= {f"window_scorer.{name}" for name, _ in model.window_scorer.named_parameters()}
    return names


def _backbone(model: SentimentClassifier, keep: set[int] | None = None, lora_only: bool = False) -> set[str]:
    """Backbone parameter names, optionally only those not in `keep` (ids) or only LoRA adapters."""
    return {f"backbone.{name}" for name, p in model.backbone.named_parameters()
            if (keep is None or id(p) not in keep) and (not lora_only or "lora_" in name)}


class Probe(Method):
    name = "probe"
    trains = "the head only; the whole backbone is frozen"

    def frozen_depth(self, model: SentimentClassifier, settings: MethodConfig) -> int:
        return num_blocks(model.backbone)

    def trainable(self, model: SentimentClassifier, settings: MethodConfig) -> set[str]:
        return _head(model)

    def frozen_modules(self, model: SentimentClassifier, settings: MethodConfig) -> list[nn.Module]:
        return [model.backbone]


class Partial(Method):
    name = "partial"
    trains = "the head and the backbone above the embeddings + first method.freeze_layers blocks"
    changes_base = True

    def frozen_depth(self, model: SentimentClassifier, settings: MethodConfig) -> int:
        n = num_blocks(model.backbone)
        if settings.freeze_layers > n:
            raise ModelError(f"method.freeze_layers={settings.freeze_layers} but the model has only {n} blocks")
        return settings.freeze_layers

    def trainable(self, model: SentimentClassifier, settings: MethodConfig) -> set[str]:
        prefix, _ = frozen_prefix(model.backbone, self.frozen_depth(model, settings))
        return _head(model) | _backbone(model, keep={id(p) for p in prefix})

    def frozen_modules(self, model: SentimentClassifier, settings: MethodConfig) -> list[nn.Module]:
        return frozen_prefix(model.backbone, self.frozen_depth(model, settings))[1]


class Full(Method):
    name = "full"
    trains = "everything: the backbone and the head"
    changes_base = True

    def trainable(self, model: SentimentClassifier, settings: MethodConfig) -> set[str]:
        return _head(model) | _backbone(model)


class Lora(Method):
    name = "lora"
    trains = "LoRA adapters (method.lora: rank, alpha, dropout, targets, top layers) and the head"
    uses_lora = True

    def frozen_depth(self, model: SentimentClassifier, settings: MethodConfig) -> int:
        top = settings.lora.top_layers
        return 0 if top is None else max(0, num_blocks(model.backbone) - top)

    def trainable(self, model: SentimentClassifier, settings: MethodConfig) -> set[str]:
        if not has_lora(model):
            raise ModelError("method lora: adapters were not added (call add_lora first)")
        return _head(model) | _backbone(model, lora_only=True)

    def frozen_modules(self, model: SentimentClassifier, settings: MethodConfig) -> list[nn.Module]:
        depth = self.frozen_depth(model, settings)
        return frozen_prefix(model.backbone, depth)[1] if settings.lora.top_layers is not None else []


METHODS: dict[str, Method] = {m.name: m for m in (Probe(), Partial(), Full(), Lora())}
assert set(METHODS) == set(PHASE_METHODS), "config.PHASE_METHODS and the method classes must agree"


def method(name: str) -> Method:
    if name not in METHODS:
        raise ModelError(f"unknown method {name!r}; one of {', '.join(METHODS)}")
    return METHODS[name]


def saved_form(names: list[str], settings: MethodConfig) -> str:
    """Which form of the backbone a run with these phase methods saves (see models/saving.py):
    "adapter" (PEFT LoRA only), "merged" (LoRA folded in), "backbone" (fine-tuned) or "base" (untouched)."""
    methods = [method(n) for n in names]
    changes_base = any(m.changes_base for m in methods)
    if any(m.uses_lora for m in methods):
        return "merged" if settings.lora.merge or changes_base else "adapter"
    return "backbone" if changes_base else "base"


def build_classifier(cfg: ExperimentConfig, resolved: ResolvedModel, pad_token_id: int) -> SentimentClassifier:
    """The classifier a run starts from: backbone + pooling + a seeded head, with LoRA adapters if a phase uses them."""
    backbone = load_backbone(resolved.source, attention_dropout=cfg.model.attention_dropout)
    backbone.config.pad_token_id = pad_token_id
    pooling = cfg.model.pooling if cfg.model.pooling != "auto" else ("last" if resolved.is_decoder else "mean")
    torch.manual_seed(cfg.train.seed)  # the head's initial weights are part of the experiment
    model = SentimentClassifier(backbone, backbone.config.hidden_size, pooling,
                                1 if cfg.model.head == "sigmoid" else len(cfg.data.labels), cfg.model.dropout,
                                cfg.model.window_pooling if cfg.data.windows > 1 else None)
    model.labels = list(cfg.data.labels)
    if any(method(p.method).uses_lora for p in cfg.phases()):
        add_lora(model, cfg.method.lora, resolved.model_type)
    return model
