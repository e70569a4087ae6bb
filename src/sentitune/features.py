"""Frozen-prefix feature cache: compute embeddings + the first N blocks once, train the rest from disk.

When the embeddings and the first N blocks are frozen (probe, partial, LoRA on the top layers only),
their output for a review never changes, yet the usual pipeline recomputes it on every step of every
epoch. Here it is computed once (eval mode, no grad), stored as bf16 in one memory-mapped file, and
the top blocks run from it.

Running a backbone in two parts (prefix, then top from given states) is models/split.py: this module
is only the cache, which the training recipe reads; the model layer never calls up into it.

What changes: frozen layers run in eval mode (no dropout) — as they do in sentitune without the
cache — and the cached states are rounded to bf16, so results differ slightly from recomputing the
prefix in fp32 each step. `train.feature_cache` turns it on. Keys hash the prefix weights and every
token id, so runs that share a frozen prefix (partial-10 and LoRA-top-2 of one model) share the cache.
The cache holds rows: a review read as several windows (data.windows) has one row per window.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sentitune.atomic import atomic_dir
from sentitune.data.batching import Encoded, iterate, sorted_batches
from sentitune.models.blocks import base_model
from sentitune.models.split import Prefix, prefix_forward
from sentitune.paths import cache_dir
from sentitune.precision import autocast
from sentitune.precision import name as precision_name
from sentitune.runtime import to_device

# ---------------------------------------------------------------------------- the on-disk cache


def prefix_fingerprint(backbone: nn.Module, n: int) -> str:
    """A hash of the frozen prefix's weights (embeddings + blocks[:n], everything when n = all blocks).

    Values, not file names: a two-phase run whose first phase changed the prefix gets a new key.
    """
    from sentitune.models.blocks import frozen_prefix, num_blocks

    model = base_model(backbone)
    params = list(model.parameters()) if n >= num_blocks(backbone) else frozen_prefix(backbone, n)[0]
    h = hashlib.blake2b(f"{type(model).__name__}|{n}".encode(), digest_size=16)
    for param in params:
        h.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(fingerprint: str, n: int, data: Encoded, precision: str = "fp32") -> str:
    """Token ids fix tokenizer, cleaning, truncation side and max length; with weights, N and the precision
    the prefix ran in, the output (fp32 keys are those of caches built before the precision was chosen)."""
    tag = "" if precision == "fp32" else f"|{precision}"
    h = hashlib.sha256(f"{fingerprint}|{n}|{len(data.input_ids)}{tag}".encode())  # rows
    for ids in data.input_ids:
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:24]


class FeatureCache:
    """Per-row (review or window) hidden states in one bf16 memory-mapped file, with row offsets."""

    def __init__(self, folder: Path, fresh: bool = False) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.offsets = np.load(folder / "offsets.npy")
        self.hidden_size = int(meta["hidden_size"])
        # What building it took (0 for a cache written before this was recorded): a run that finds it built
        # counts it in its cost (metrics.json cost_seconds), as it counts a teacher's cached scores.
        self.seconds = float(meta.get("seconds") or 0.0)
        self.fresh = fresh  # built just now by build_cache, not found on disk
        shape = (int(self.offsets[-1]), self.hidden_size)
        self._raw = np.memmap(folder / "hidden.bin", dtype=np.uint16, mode="r", shape=shape)
        self._states: torch.Tensor | None = None  # every state on a device (see hold_on)
        self.folder = folder

    @property
    def nbytes(self) -> int:
        return int(self._raw.nbytes)

    def hold_on(self, dev: torch.device) -> None:
        """Keep every state in `dev`'s memory (a GPU's, when it fits: `fits`): batches are then gathered there,
        with no file read and no host-to-device copy per step. On a CPU the memory map already is RAM."""
        self._states = torch.from_numpy(np.array(self._raw)).view(torch.bfloat16).to(dev)  # a copy: writable

    def batch(self, indices: list[int], width: int) -> torch.Tensor:
        """Right-padded [batch, width, hidden] float32 states for rows `indices` (on the device holding them)."""
        held = self._states
        out = torch.zeros((len(indices), width, self.hidden_size), dtype=torch.float32,
                          device=held.device if held is not None else None)
        for row, i in enumerate(indices):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            chunk = held[a:b] if held is not None else torch.from_numpy(np.array(self._raw[a:b])).view(torch.bfloat16)
            out[row, : b - a] = chunk.float()
        return out


def fits(nbytes: int, free: int, share: float = 0.5) -> bool:
    """Whether a cache of `nbytes` may live in device memory with `free` bytes: at most half of it, so the
    model, its activations and the optimizer keep room (and another split's cache may join)."""
    return nbytes <= share * free


def hold_if_fits(cache: FeatureCache, dev: torch.device) -> bool:
    """On a GPU, move the cache into its memory when it fits; True when it did (a CPU never needs to)."""
    if dev.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(dev)
    if not fits(cache.nbytes, free):
        return False
    cache.hold_on(dev)
    return True


@torch.inference_mode()
def build_cache(backbone: nn.Module, data: Encoded, n: int, pad_id: int, fingerprint: str | None = None,
                batch_size: int = 32, progress: bool = False, root: Path | None = None,
                backbone_kwargs: Callable[[torch.Tensor], dict[str, Any]] | None = None,
                precision: torch.dtype | None = None) -> FeatureCache:
    """Compute (or reuse) the cache for `data`; written in a temp folder and renamed into place (atomic_dir).

    precision: the autocast dtype the prefix runs in (training's: bf16 where the CPU has it). The states are
    stored as bf16 whatever it is, so computing them in bf16 costs little accuracy and, on a CPU with bf16
    instructions, halves the time of the cache (most of a cached run's time)."""
    root = root or cache_dir("features")
    fingerprint = fingerprint or prefix_fingerprint(backbone, n)
    data = data.as_rows()  # windows are rows of their own here
    folder = root / cache_key(fingerprint, n, data, precision_name(precision))
    if (folder / "meta.json").exists():
        return FeatureCache(folder)
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in data.input_ids])
    hidden_size = base_model(backbone).config.hidden_size
    started = time.perf_counter()
    # Keys are content hashes: a folder another run finished meanwhile holds the same states, so keep theirs.
    with atomic_dir(folder, keep_theirs="meta.json") as tmp:
        out = np.memmap(tmp / "hidden.bin", dtype=np.uint16, mode="w+", shape=(int(offsets[-1]), hidden_size))
        was_training = backbone.training
        backbone.eval()
        dev = next(backbone.parameters()).device
        batches = sorted_batches([len(x) for x in data.input_ids], batch_size)
        for batch in tqdm(iterate(data, batches, pad_id), total=len(batches), desc="feature cache",
                          disable=not progress, leave=False, unit="batch"):
            mask = batch["attention_mask"].to(dev)
            extra = backbone_kwargs(mask) if backbone_kwargs else {}
            with autocast(dev, precision):
                states = prefix_forward(backbone, batch["input_ids"].to(dev), mask, n, **extra)
            states = states.to(torch.bfloat16).cpu()
            for row, i in enumerate(batch["index"].tolist()):
                a, b = int(offsets[i]), int(offsets[i + 1])
                out[a:b] = states[row, : b - a].view(torch.uint16).numpy()
        backbone.train(was_training)
        out.flush()
        del out
        np.save(tmp / "offsets.npy", offsets)
        (tmp / "meta.json").write_text(json.dumps({"hidden_size": hidden_size, "n": n, "reviews": len(data),
                                                   "tokens": int(offsets[-1]), "fingerprint": fingerprint,
                                                   # 4 decimals: a tiny cache builds in under 5 ms, and a
                                                   # run that finds it must still count it as found
                                                   "seconds": round(time.perf_counter() - started, 4)}))
    return FeatureCache(folder, fresh=True)


@dataclass
class Features:
    """A split's cached prefix states, and how deep the prefix is (embeddings + blocks[:n])."""

    n: int
    cache: FeatureCache
    build_seconds: float  # ~0 when the cache already existed

    @property
    def found_seconds(self) -> float:
        """What building the cache took when this run found it built (0 when it built it): part of its cost."""
        return 0.0 if self.cache.fresh else self.cache.seconds


def prefix_of(features: Features | None, batch: dict[str, torch.Tensor], dev: torch.device) -> Prefix | None:
    """The batch's cached prefix states, for SentimentClassifier.forward (None: run the whole model)."""
    if features is None:
        return None
    rows = batch["rows"] if "rows" in batch else batch["index"]  # windowed data: the rows of the batch's reviews
    with torch.profiler.record_function("sentitune.cache_read"):  # named in profiles (benchmarks/profile_training.py)
        states = features.cache.batch(rows.tolist(), batch["input_ids"].shape[1])
    return Prefix(features.n, to_device(states, dev))
