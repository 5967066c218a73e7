"""What the CPU can do, read from /proc/cpuinfo: the code picks bf16 or fp32, and benchmarks name the CPU."""

from __future__ import annotations

from pathlib import Path

# Read at call time, so a test can point it at another machine's cpuinfo.
CPUINFO_PATH = Path("/proc/cpuinfo")


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo; empty where there is no such file."""
    if not CPUINFO_PATH.is_file():
        return set()
    for line in CPUINFO_PATH.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo, for benchmark reports."""
    if CPUINFO_PATH.is_file():
        for line in CPUINFO_PATH.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AMX or AVX512-BF16). Elsewhere bf16 autocast is emulated and
    slower than fp32, so the caller should stay in fp32."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
