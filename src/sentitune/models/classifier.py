"""Classifier = backbone + pooling + head, for encoders and decoders alike.

Pooling works from the attention mask, so it is right whatever the padding side:
`mean` averages real tokens only (never padding), `cls` takes the first token, `last` the last
real token (what a left-to-right decoder has read the whole review by). Decoders also get
position ids counted from the mask, so a left-padded review sees the same positions as a
right-padded one (GPT-2 and Llama otherwise number pad slots too).

A review read as several windows (data.windows) gets one row per window; `pool_windows` pools the
window logits of each review (mean, max, or attention: a learned score per window, softmax over the
review's windows), so the loss and the probabilities are per review.
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


def pool_windows(logits: torch.Tensor, review: torch.Tensor, how: str,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """[rows, k] window logits -> [reviews, k]: row i belongs to review `review[i]` (0 to reviews - 1, each
    with at least one row). `weights` ([rows], attention only): the windows' scores, softmaxed per review.

    Each review's value reads only its own rows, so which other reviews share a batch never changes it.
    """
    logits = logits.float()
    n = int(review.max()) + 1
    index = review.unsqueeze(1).expand_as(logits)
    empty = logits.new_zeros((n, logits.shape[1]))
    if how in ("mean", "max"):
        return empty.scatter_reduce(0, index, logits, "mean" if how == "mean" else "amax", include_self=False)
    if how != "attention" or weights is None:
        raise ValueError(f"unknown window pooling {how!r} (attention needs the windows' weights)")
    weights = weights.float()
    # softmax within each review: subtract the review's max (no gradient needed: softmax ignores a shift)
    top = weights.new_full((n,), -torch.inf).scatter_reduce(0, review, weights.detach(), "amax")
    e = torch.exp(weights - top[review])
    share = e / weights.new_zeros(n).index_add(0, review, e)[review]
    return empty.index_add(0, review, share.unsqueeze(1) * logits)


class SentimentClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, pooling: str, num_logits: int, dropout: float,
                 window_pooling: str | None = None) -> None:
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
        # None: one window per review (the model never pools windows); else how a review's windows are pooled.
        self.window_pooling = window_pooling
        if window_pooling == "attention":  # zero: every window weighs the same until training says otherwise
            self.window_scorer: nn.Linear | None = nn.Linear(hidden_size, 1)
            nn.init.zeros_(self.window_scorer.weight)
            nn.init.zeros_(self.window_scorer.bias)
        else:
            self.window_scorer = None
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
                prefix: Prefix | None = None, review: torch.Tensor | None = None, embed: bool = False) -> torch.Tensor:
        """Logits; with a `prefix` (states after embeddings + blocks[:depth]) only the top blocks run.

        review: each row's review (collate's `review`, windowed data): logits are then one row per review,
        its windows' logits pooled by `window_pooling`. embed: the pooled states instead of logits (a review's
        windows averaged), what a contrastive phase trains the encoder on; the head is not used.
        """
        backbone_trains = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and backbone_trains):
            kwargs = self.backbone_kwargs(attention_mask)
            if prefix is not None:
                hidden = top_forward(self.backbone, input_ids, attention_mask, prefix.states, prefix.depth, **kwargs)
            else:
                hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        states = pool(hidden, attention_mask, self.pooling)
        if embed:
            embedded = states.float()  # windows averaged in float32, as the loss reads them
            return embedded if review is None else pool_windows(embedded, review, "mean")
        pooled = self.dropout(states).to(self.head.weight.dtype)
        logits = self.head(pooled)
        if review is None:
            return logits
        weights = self.window_scorer(pooled)[:, 0] if self.window_scorer is not None else None
        return pool_windows(logits, review, self.window_pooling or "mean", weights)

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
