"""fp32 vs bf16 on this machine: why train.precision=auto picks bf16 only where the hardware has it.

Times a square matmul in fp32 and bf16, and a MiniLM forward pass in fp32 and under bf16 autocast
(what a run with train.precision=bf16 does), and prints what `auto` would choose here.

    .venv/bin/python benchmarks/precision_speed.py [--size 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from machine import bf16_native

from sentitune.precision import autocast, pick_precision
from sentitune.runtime import device


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="matmul size n (n x n @ n x n)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-model", action="store_true", help="skip the MiniLM forward pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = device()
    print(f"device {dev}, threads {args.threads}, CPU bf16 instructions: {bf16_native()}, "
          f"auto picks: {pick_precision('auto', dev) or 'fp32'}")
    a = torch.randn(args.size, args.size, device=dev)
    b = a.to(torch.bfloat16)
    fp32 = best_of(lambda: a @ a)
    bf16 = best_of(lambda: b @ b)
    print(f"matmul {args.size}x{args.size}: fp32 {fp32 * 1e3:.2f} ms, bf16 {bf16 * 1e3:.2f} ms, "
          f"bf16/fp32 time ratio {bf16 / fp32:.1f}x")
    if args.no_model:
        return
    from sentitune.models.registry import load_backbone, resolve

    model = load_backbone(resolve("minilm").source).eval().to(dev)
    ids = torch.randint(1000, 20000, (8, 128), device=dev)
    mask = torch.ones_like(ids)

    def forward(dtype: torch.dtype | None) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), autocast(dev, dtype):
                return model(input_ids=ids, attention_mask=mask)
        return run

    fp32 = best_of(forward(None), repeat=2)
    bf16 = best_of(forward(torch.bfloat16), repeat=1)
    print(f"MiniLM forward, batch 8 x 128 tokens: fp32 {fp32:.3f} s, bf16 autocast {bf16:.3f} s, "
          f"bf16/fp32 time ratio {bf16 / fp32:.1f}x")


if __name__ == "__main__":
    main()
