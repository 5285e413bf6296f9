"""What a result depends on beyond the code: the machine. Data made by the same command differs between CPUs (float
rounding, amplified by contact dynamics and by training a teacher), so files and runs record the machine that made
them beside their versions."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_simd_targets() -> list[str]:
    """The SIMD targets numpy dispatches to on this CPU (each can round some functions differently)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        return []
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def machine_description() -> str:
    """One line naming the machine, e.g. 'AMD EPYC (x86_64; numpy SIMD X86_V3 X86_V4 AVX512_ICL)'."""
    targets = " ".join(numpy_simd_targets()) or "baseline only"
    return f"{cpu_model()} ({platform.machine()}; numpy SIMD {targets})"
