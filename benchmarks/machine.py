"""The machine a benchmark ran on, as its doc block names it: the one place the scripts ask what CPU, how
many cores and whether it has bf16 (they run as `python benchmarks/X.py`, so this folder is on sys.path)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), name)
    return name


def arch() -> str:
    """The instruction set's family: x86_64, aarch64..."""
    return platform.machine()


def cpus_online() -> int:
    """Every CPU the machine has online (os.cpu_count), whether or not this process may use it."""
    return os.cpu_count() or 1


def cores_used() -> int:
    """The cores this process may run on (its affinity: a container or taskset may limit it), as sentitune
    counts them when it sets torch's threads."""
    from sentitune.runtime import cores

    return cores()


def bf16_native() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX): where `train.precision: auto` picks bf16
    on a CPU."""
    from sentitune.precision import cpu_has_bf16

    return cpu_has_bf16()


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# Caps on the instruction set the kernels may use. With them a CPU that has bf16 runs as one without (oneDNN
# reports no native bf16, so `auto` picks fp32): the only such CPU some of us have.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def isa_caps() -> dict[str, str]:
    """The caps this process runs under (any value, not only AVX2's)."""
    return {k: os.environ[k] for k in AVX2_ONLY if os.environ.get(k)}


def facts() -> dict[str, Any]:
    """What the numbers depend on, to save beside them: the CPU, the cores this process may use of those
    online, native bf16, and any cap on the instruction set the kernels may use."""
    return {"cpu": cpu_name(), "cores": cores_used(), "cpus_online": cpus_online(), "bf16_native": bf16_native(),
            "isa_caps": isa_caps()}


def cores_line(m: dict[str, Any] | None = None) -> str:
    """"<CPU>, <used> of its <online> cores used", of `m` (saved `facts()`) or of this machine now."""
    m = m or facts()
    return f"{m['cpu']}, {m['cores']} of its {m['cpus_online']} cores used"
