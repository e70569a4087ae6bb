"""The process a run executes in: seeds, threads, device, and Ctrl-C held across a training step."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

# How a recipe reports progress: one line at a time (the CLI prints it, a library caller may ignore it).
Report = Callable[[str], None]


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs from one seed: splits, initialisation and batch order follow it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cores() -> int:
    """The cores this process may run on (not every core of the machine: a container or taskset may limit it)."""
    return max(1, len(os.sched_getaffinity(0)))


def set_threads(threads: int | None) -> None:
    """torch threads: `threads`, or this process's part of the cores it may run on (all of them, unless a
    launcher started several processes on this machine: more threads than cores slows every one)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads or max(1, cores() // local))


def device() -> torch.device:
    """The GPU of this process (LOCAL_RANK: one per process under a launcher), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def to_device(tensor: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A batch tensor onto `dev`: to a GPU through pinned (page-locked) host memory, so the copy runs
    asynchronously beside the kernels already queued; a tensor already there (or on the CPU) as it is."""
    if dev.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(dev)
    return tensor.pin_memory().to(dev, non_blocking=True)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends: an optimizer step and the counters that describe it must
    change together, or a checkpoint would pair new weights with an old step (resume would redo it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
