"""The supervised contrastive loss (Khosla et al. 2020) over one batch: what method.name=contrastive tunes with.

Why batch-wise: SetFit tunes a sentence encoder on pairs of reviews (same class: similar, else dissimilar), so
each review is encoded once per pair it is in. Here every review in a batch is encoded once, and each one is
pulled toward all the batch's reviews of its class and pushed from the rest, through one softmax over the batch:
a batch of 16 gives 16 x 15 pairs for 16 encodings. The head does not take part (a later phase fits it).
"""

from __future__ import annotations

import torch
from torch.nn import functional


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over anchors of -mean log p(positive | anchor), p a softmax over the anchor's cosine similarities to
    every other review in the batch, divided by `temperature`. Anchors with no other review of their class are
    left out; a batch with none at all gives 0 (still connected to the graph, so backward runs)."""
    z = functional.normalize(embeddings.float(), dim=1)
    n = len(z)
    itself = torch.eye(n, dtype=torch.bool, device=z.device)
    similarity = (z @ z.T / temperature).masked_fill(itself, -torch.inf)
    log_p = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive = (labels.view(-1, 1) == labels.view(1, -1)) & ~itself
    count = positive.sum(1)
    anchors = count > 0
    if not anchors.any():
        return z.sum() * 0.0
    per_anchor = log_p.masked_fill(~positive, 0.0).sum(1)[anchors] / count[anchors]
    return -per_anchor.mean()
