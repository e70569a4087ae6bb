"""Numeric precision: what training autocasts to, and what inference computes in.

Training (`train.precision`): "auto" autocasts to bf16 only where the hardware runs it natively (a
GPU with bf16, a CPU with AVX512-BF16/AMX); elsewhere bf16 is emulated and ~100x slower than fp32
(measured), and fp16 on a CPU is slower still. `$SENTITUNE_PRECISION` (fp32 | bf16) overrides what
"auto" picks, so one machine can run the test suite under both.

Inference (`train.eval_precision`: the untrained baseline, the final test pass, `evaluate`,
`predict`) is fp32 by default, deliberately. bf16 results depend on the kernel: native and emulated
bf16 differ, and oneDNN blocks a matmul by its shape, so the same review gets a different probability
alone than in a batch, and on another CPU (benchmarks/precision_consistency.py: up to 3.6e-4 and
3.0e-4 in bf16, 9e-8 in fp32). In fp32 a saved run gives the same probability (within 1e-5) on any
CPU and with any batch neighbours; the choice is written into the saved model (`sentitune.json`) and
`metrics.json`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from sentitune.config import ConfigError

ENV = "SENTITUNE_PRECISION"


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _auto(dev: torch.device) -> torch.dtype | None:
    forced = os.environ.get(ENV, "").strip().lower()
    if forced and forced != "auto":
        if forced not in ("fp32", "bf16"):
            raise ConfigError(f"${ENV}: {forced!r} is not one of fp32, bf16, auto")
        return torch.bfloat16 if forced == "bf16" else None
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def pick_precision(requested: str, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype for `requested` (auto | bf16 | fp16 | fp32) on `dev`, or None for fp32."""
    if requested == "fp32":
        return None
    if requested == "auto":
        return _auto(dev)
    if requested == "fp16":
        if dev.type != "cuda":
            raise ConfigError("precision fp16 is for GPUs: it is ~50x slower than fp32 on CPU; use bf16 or fp32")
        return torch.float16
    if requested == "bf16":
        return torch.bfloat16
    raise ConfigError(f"precision: {requested!r} is not one of auto, bf16, fp16, fp32")


def name(dtype: torch.dtype | None) -> str:
    """"fp32", "bf16" or "fp16": how configs, metrics.json and sentitune.json spell a precision."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(dev: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for `dtype`; fp32 (None) runs the plain forward, no autocast at all."""
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
