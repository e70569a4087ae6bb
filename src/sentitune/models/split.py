"""Run a backbone in two parts: embeddings + blocks[:n] (the prefix), then the top blocks from given states.

Architecture-agnostic: the block ModuleList is temporarily swapped for a slice of itself, block n's
input is captured with a forward pre-hook (the forward stops there), and for the top part a pre-hook
on block n replaces its input with the given states. The model still builds its own attention masks
and position embeddings, so GPT-2, Llama, BERT, MPNet and DistilBERT all work unchanged. The feature
cache (sentitune.features) stores prefix states; the classifier runs the top from them (`Prefix`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sentitune.models.blocks import base_model, blocks_of


@dataclass(frozen=True)
class Prefix:
    """Hidden states of one batch after embeddings + blocks[:depth]: the classifier runs only the rest."""

    depth: int
    states: torch.Tensor


@contextlib.contextmanager
def _blocks_slice(backbone: nn.Module, start: int, stop: int) -> Iterator[nn.ModuleList]:
    """Temporarily make the model see only blocks[start:stop]."""
    model = base_model(backbone)
    name, blocks = blocks_of(backbone)
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    attr = name.rsplit(".", 1)[-1]
    setattr(parent, attr, nn.ModuleList(list(blocks)[start:stop]))
    try:
        yield blocks
    finally:
        setattr(parent, attr, blocks)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the prefix output is captured."""


def _hidden_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def prefix_forward(backbone: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, n: int,
                   **kwargs: Any) -> torch.Tensor:
    """Hidden states after embeddings + blocks[:n] (n = all blocks: the backbone's final output).

    Captured as the input of block n, and the forward stops there: the top is never computed.
    """
    _, blocks = blocks_of(backbone)
    if n >= len(blocks):
        return backbone(input_ids=input_ids, attention_mask=mask, **kwargs).last_hidden_state
    captured: list[torch.Tensor] = []

    def grab(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append(_hidden_arg(args, kwargs))
        raise _Stop

    hook = blocks[n].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        backbone(input_ids=input_ids, attention_mask=mask, **kwargs)
    except _Stop:
        pass
    finally:
        hook.remove()
    return captured[0]


def top_forward(backbone: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor,
                n: int, **kwargs: Any) -> torch.Tensor:
    """The backbone's last_hidden_state computed from `hidden`, the output of blocks[:n]."""
    _, blocks = blocks_of(backbone)
    if n >= len(blocks):
        return hidden

    def swap(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict]:
        if args:
            return (hidden.to(args[0].dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden.to(kwargs["hidden_states"].dtype)}

    hook = blocks[n].register_forward_pre_hook(swap, with_kwargs=True)
    try:
        with _blocks_slice(backbone, n, len(blocks)):
            return backbone(input_ids=input_ids, attention_mask=mask, **kwargs).last_hidden_state
    finally:
        hook.remove()
