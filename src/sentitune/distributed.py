"""Data-parallel training across processes: `accelerate launch -m sentitune train ...` (or torchrun).

Why this shape: `train.batch_size` stays the *global* batch. Every process walks the same seeded batch
order, takes its contiguous share of each batch, and weights its loss by the share's size, so DDP's
gradient average is exactly the full batch's mean gradient: N processes take the same optimizer steps as
one (up to the order floats are summed in), and a config means the same thing on a laptop and on 8 GPUs.
Evaluation gives each process whole batches of reviews and gathers their scores by index: no review is
duplicated or dropped, whatever the split's size and the world size.

Accelerate (its launcher and `PartialState`) starts the processes and the process group (gloo on CPU,
NCCL on GPUs); the model is wrapped in torch's DistributedDataParallel per phase, because each phase
trains another set of parameters. One process (the default) is `Cluster()`: every method a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sentitune.errors import SentituneError


class DistributedError(SentituneError):
    """A distributed launch sentitune cannot train under (FSDP, DeepSpeed), or a resume with another world size."""


def launched() -> bool:
    """Whether a launcher (accelerate launch, torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Cluster:
    """This process's place among the processes of one run (rank 0 of 1 when not launched)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes the run directory and prints."""
        return self.rank == 0

    def share(self, batch: Sequence[int]) -> tuple[list[int], float]:
        """This process's contiguous part of a global batch, and the weight of its mean loss that makes
        DDP's average the full batch's mean: len(part) / len(batch) * world. A process whose part is
        empty (a batch smaller than the world) runs the batch's first review with weight 0: every
        process must take part in each gradient all-reduce."""
        n = len(batch)
        start, stop = self.rank * n // self.world, (self.rank + 1) * n // self.world
        if start == stop:
            return [batch[0]], 0.0
        return list(batch[start:stop]), (stop - start) / n * self.world

    def batches(self, batches: Sequence[list[int]]) -> list[list[int]]:
        """Evaluation: every world-th batch, starting at this rank (batches come longest first, so the
        work is dealt round-robin and each review is scored by exactly one process)."""
        return list(batches[self.rank :: self.world])

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order (a picklable object; small: scores of a split)."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the processes (token counts, loss sums for the log)."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64)
        torch.distributed.all_reduce(tensor)  # gloo and NCCL both take float64 on CPU/GPU tensors alike
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process of this machine runs the block first (it builds a shared file, e.g. the feature
        cache), the others after it (they read that file)."""
        if self.world > 1 and self.local_rank != 0:
            self.barrier()
        yield
        if self.world > 1 and self.local_rank == 0:
            self.barrier()

    def wrap(self, model: nn.Module, dev: torch.device) -> nn.Module:
        """The model under DDP (gradients averaged across processes in backward); itself for one process.
        Every trainable parameter must take part in each forward (backbones load without their unused
        pooler; registry.load_backbone): DDP stops with an error naming the one that does not."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # broadcast_buffers off: the only buffers are constants (position ids), identical in every process
        return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                       broadcast_buffers=False)

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the all-reduce on micro-batches that only accumulate (the step's last one syncs)."""
        if self.world == 1 or sync:
            return contextlib.nullcontext()
        return model.no_sync()  # type: ignore[operator]


def cluster() -> Cluster:
    """The processes of this run: initialises the process group through Accelerate when launched."""
    if not launched():
        return Cluster()
    for flag, what in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(flag, "").lower() in ("1", "true", "yes"):
            raise DistributedError(f"accelerate config: {what} shards a model across processes; sentitune trains "
                                   "models that fit one device and runs data parallel (DDP): launch with a multi-GPU "
                                   "or multi-CPU config without it (docs/SCALING.md)")
    from accelerate import PartialState

    # The process group: NCCL on GPUs, gloo on CPUs (Accelerate needs cpu=True to pick it); sets this process's GPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != int(os.environ["WORLD_SIZE"]):
        raise DistributedError(f"launched as one of {os.environ['WORLD_SIZE']} processes, but Accelerate set up "
                               f"{state.num_processes} ({state.distributed_type.value})")
    return Cluster(state.process_index, state.num_processes, state.local_process_index)
