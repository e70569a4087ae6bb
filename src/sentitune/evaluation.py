"""Scoring a classifier on encoded reviews: probabilities, loss, and the metrics of a split.

Used by training (baseline, validation, test) and by saved runs (evaluate, predict) alike, so a
number in metrics.json and the same number from `sentitune evaluate` come from one function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sentitune.data.batching import Encoded, iterate, sorted_batches
from sentitune.distributed import Cluster
from sentitune.features import Features, prefix_of
from sentitune.metrics import classification_metrics
from sentitune.models.classifier import SentimentClassifier
from sentitune.precision import autocast
from sentitune.runtime import to_device


def review_of(batch: dict[str, torch.Tensor], dev: torch.device) -> torch.Tensor | None:
    """Each row's review in a batch of windowed reviews (what the classifier pools by); None: a row a review."""
    return to_device(batch["review"], dev) if "review" in batch else None


def forward(net: torch.nn.Module, batch: dict[str, torch.Tensor], dev: torch.device,
            features: Features | None = None, embed: bool = False) -> torch.Tensor:
    """A collated batch through the classifier (or its data-parallel wrapper): its logits (embed: its pooled
    states). The one forward call of training and evaluation: token ids, mask, the cached prefix states, each
    row's review."""
    return net(to_device(batch["input_ids"], dev), to_device(batch["attention_mask"], dev),
               prefix_of(features, batch, dev), review_of(batch, dev), embed)


@torch.inference_mode()
def score(
    model: SentimentClassifier,
    data: Encoded,
    batch_size: int,
    pad_id: int,
    precision: torch.dtype | None = None,
    desc: str = "eval",
    progress: bool = False,
    features: Features | None = None,
    cluster: Cluster | None = None,
) -> tuple[np.ndarray, float]:
    """Probabilities in `data` order (two classes: the positive one's, shape [n]; more: every class's,
    shape [n, classes]), and the mean loss (from cached prefix states if given). One per review: a review
    read as several windows gets the probabilities of its pooled logits. With a `cluster` of several
    processes each scores its share of the batches and every process gets all the scores."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    classes = getattr(model, "num_classes", 2)
    scores = np.zeros((len(data),) if classes == 2 else (len(data), classes), dtype=np.float64)
    total_loss = 0.0
    batches = sorted_batches(data.lengths(), batch_size)  # batches of reviews (with all their windows)
    if cluster is not None:
        batches = cluster.batches(batches)
    for batch in tqdm(iterate(data, batches, pad_id), total=len(batches), desc=desc, disable=not progress,
                      leave=False, unit="batch"):
        with autocast(dev, precision):
            logits = forward(model, batch, dev, features)
        labels = to_device(batch["labels"], dev)
        total_loss += model.loss(logits, labels).item() * len(labels)
        scores[batch["index"].numpy()] = model.scores(logits).cpu().numpy()
    model.train(was_training)
    if cluster is not None and cluster.world > 1:
        mine = np.asarray([i for b in batches for i in b], dtype=np.int64)
        parts = cluster.gather((mine, scores[mine], total_loss))
        for index, part, _ in parts:
            scores[index] = part
        total_loss = sum(loss for _, _, loss in parts)
    return scores, total_loss / max(1, len(data))


def evaluate(model: SentimentClassifier, data: Encoded, batch_size: int, pad_id: int,
             precision: torch.dtype | None, desc: str, progress: bool,
             features: Features | None = None, cluster: Cluster | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics (accuracy, F1, ROC AUC, loss, confusion matrix...) of `data`, and its scores."""
    scores, loss = score(model, data, batch_size, pad_id, precision, desc, progress, features, cluster)
    return classification_metrics(data.labels, scores, loss=loss, names=model.labels), scores
