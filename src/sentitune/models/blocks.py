"""A backbone's structure, on any architecture: its transformer blocks, its frozen prefix, its parameters.

Freezing is by structure, not by parameter-name lists: the transformer blocks are the ModuleList
with `num_hidden_layers` entries; what sits outside them is either embedding (frozen with the
prefix) or the final norm (trains with the top blocks). The methods themselves (what each trains) are in
models/methods.py, built on these helpers; LoRA adapters are models/lora.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from sentitune.errors import ModelError

EMBEDDING_NAMES = {"embeddings", "wte", "wpe", "embed_tokens", "embed_positions", "drop", "relative_attention_bias"}


def base_model(backbone: nn.Module) -> nn.Module:
    """The plain transformer under a PEFT wrapper (or the backbone itself)."""
    get = getattr(backbone, "get_base_model", None)
    return get() if callable(get) else backbone


def blocks_of(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the transformer blocks."""
    model = base_model(backbone)
    config = model.config
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name:
            return name, module
    raise ModelError(f"{type(model).__name__}: cannot find its {n} transformer blocks")


def _is_embedding(name: str) -> bool:
    return any(part in EMBEDDING_NAMES for part in name.split("."))


def frozen_prefix(backbone: nn.Module, first_trainable_block: int) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """Parameters of embeddings + blocks[:k] (the frozen prefix), and the prefix modules."""
    model = base_model(backbone)
    block_name, blocks = blocks_of(backbone)
    prefix_params = []
    for name, param in model.named_parameters():
        if name.startswith(block_name + "."):
            index = int(name[len(block_name) + 1 :].split(".")[0])
            if index < first_trainable_block:
                prefix_params.append(param)
        elif _is_embedding(name):
            prefix_params.append(param)
    modules = [m for n, m in model.named_modules() if n.split(".")[-1] in EMBEDDING_NAMES]
    modules += list(blocks[:first_trainable_block])
    return prefix_params, modules


def num_blocks(backbone: nn.Module) -> int:
    return len(blocks_of(backbone)[1])


def linear_module_names(backbone: nn.Module) -> list[str]:
    """Short names of the layers LoRA can adapt (Linear and GPT-2's Conv1D)."""
    names = set()
    for name, module in base_model(backbone).named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.split(".")[-1])
    return sorted(names)


def count_parameters(model: nn.Module, trainable: Iterable[str] | None = None) -> dict[str, float]:
    """Total, trainable (the parameters named in `trainable`; by default those with requires_grad), their
    ratio, and LoRA's: every parameter count sentitune reports comes from here."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    names = [n for n, p in params.items() if p.requires_grad] if trainable is None else list(trainable)
    counted = sum(params[n].numel() for n in names)
    lora = sum(p.numel() for n, p in params.items() if "lora_" in n)
    return {"total": total, "trainable": counted, "trainable_ratio": counted / total if total else 0.0, "lora": lora}
