"""Classifier = backbone + pooling + head, for encoders and decoders alike.

Pooling works from the attention mask, so it is right whatever the padding side:
`mean` averages real tokens only (never padding), `cls` takes the first token, `last` the last
real token (what a left-to-right decoder has read the whole review by). Decoders also get
position ids counted from the mask, so a left-padded review sees the same positions as a
right-padded one (GPT-2 and Llama otherwise number pad slots too).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from sentitune.models.registry import is_decoder
from sentitune.models.split import Prefix, top_forward


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).bool()
        # where(), not a product: a fully masked pad row may hold NaN, and NaN * 0 is NaN.
        return torch.where(m, hidden, 0).sum(1) / m.sum(1).clamp(min=1).to(hidden.dtype)
    if how == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * positions).argmax(dim=1)  # index of the last 1, left or right padding
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {how!r}")


class SentimentClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, pooling: str, num_logits: int, dropout: float) -> None:
        super().__init__()
        if num_logits < 1:
            raise ValueError("num_logits must be 1 (sigmoid, two classes) or the number of classes (softmax)")
        self.backbone = backbone
        self.pooling = pooling
        self.num_logits = num_logits
        self.labels: list[str] = ["negative", "positive"] if num_logits <= 2 else [f"class_{i}" for i in
                                                                                   range(num_logits)]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_logits)
        self.frozen_modules: list[nn.Module] = []  # kept in eval mode: no dropout, nothing to learn
        config = getattr(backbone, "config", None)
        base = backbone.get_base_model() if callable(getattr(backbone, "get_base_model", None)) else backbone
        self.mask_positions = (config is not None and is_decoder(config)
                               and "position_ids" in inspect.signature(base.forward).parameters)

    def backbone_kwargs(self, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoders number positions from the mask, so left and right padding give the same result."""
        if not self.mask_positions:
            return {}
        return {"position_ids": (attention_mask.long().cumsum(1) - 1).clamp(min=0)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                prefix: Prefix | None = None) -> torch.Tensor:
        """Logits; with a `prefix` (states after embeddings + blocks[:depth]) only the top blocks run."""
        backbone_trains = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and backbone_trains):
            kwargs = self.backbone_kwargs(attention_mask)
            if prefix is not None:
                hidden = top_forward(self.backbone, input_ids, attention_mask, prefix.states, prefix.depth, **kwargs)
            else:
                hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return self.head(self.dropout(pool(hidden, attention_mask, self.pooling)).to(self.head.weight.dtype))

    def train(self, mode: bool = True) -> SentimentClassifier:
        super().train(mode)
        for module in self.frozen_modules:
            module.eval()
        return self

    @property
    def num_classes(self) -> int:
        return max(2, self.num_logits)

    def positive_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability of the positive class (class 1 of two)."""
        logits = logits.float()
        return torch.sigmoid(logits[:, 0]) if self.num_logits == 1 else torch.softmax(logits, -1)[:, 1]

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps per example: the positive probability for two classes (shape [n]), the
        probability of every class otherwise (shape [n, classes])."""
        return self.positive_score(logits) if self.num_classes == 2 else torch.softmax(logits.float(), -1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.num_logits == 1:
            return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
        return nn.functional.cross_entropy(logits, labels.long())
