"""The machine a benchmark ran on, as its doc block names it (the scripts run as `python benchmarks/X.py`,
so this folder is on sys.path)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), name)
    return name


# Caps on the instruction set the kernels may use. With them a CPU that has bf16 runs as one without (oneDNN
# reports no native bf16, so `auto` picks fp32): the only such CPU some of us have.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def isa_caps() -> dict[str, str]:
    """The caps this process runs under (any value, not only AVX2's)."""
    return {k: os.environ[k] for k in AVX2_ONLY if os.environ.get(k)}
