"""Token batches: truncate by tokens, group by length, pad each batch only to its own longest review.

Padding every review to 512 tokens wastes most of the compute on IMDb (median ~230 tokens);
length-grouped batches measured 1.6-1.8x faster on CPU. Training stays random: reviews are shuffled,
sorted only within large windows, and the resulting batches are shuffled again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sentitune.data.records import Example
from sentitune.data.text import truncate_ids


@dataclass
class Encoded:
    """A tokenized split: one id list per review, in the split's order."""

    ids: list[str]
    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    def num_tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


def encode(
    examples: Sequence[Example],
    tokenizer: Any,
    max_length: int,
    side: str = "head",
    head_tokens: int | None = None,
    chunk: int = 1000,
) -> Encoded:
    """Tokenize without truncation, cut the review's tokens (not the special ones) to fit."""
    out: list[list[int]] = []
    for start in range(0, len(examples), chunk):
        texts = [e.text for e in examples[start : start + chunk]]
        enc = tokenizer(texts, add_special_tokens=True, truncation=False, return_special_tokens_mask=True,
                        return_attention_mask=False, verbose=False)
        for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True):
            lead = 0
            while lead < len(ids) and special[lead]:
                lead += 1
            trail = 0
            while trail < len(ids) - lead and special[len(ids) - 1 - trail]:
                trail += 1
            body = ids[lead : len(ids) - trail]
            kept = truncate_ids(body, max_length - lead - trail, side, head_tokens)
            out.append(ids[:lead] + kept + ids[len(ids) - trail :])
    return Encoded([e.id for e in examples], out, [e.label for e in examples])


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, window: int = 50) -> list[list[int]]:
    """Shuffled batches of similar-length reviews: shuffle, sort within windows of `window` batches."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span].tolist(), key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches, longest first (so an out-of-memory shows at once), minimal padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(data: Encoded, batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad one batch to its longest member; pooling reads the mask, so the side is free."""
    width = max(len(data.input_ids[i]) for i in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, i in enumerate(batch):
        ids = data.input_ids[i]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    labels = torch.tensor([data.labels[i] for i in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "index": torch.tensor(batch)}


def iterate(data: Encoded, batches: list[list[int]], pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    for batch in batches:
        yield collate(data, batch, pad_id)
