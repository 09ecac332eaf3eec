"""What the CPU computes fast: native bfloat16 (AMX or AVX-512-BF16) or not.

Without native bfloat16, oneDNN emulates it and bfloat16 runs *slower* than float32 (measured:
about 2x slower on an AVX-512 VNNI Cascade Lake), so ``dtype="auto"`` means bfloat16 only where
the CPU has it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

#: /proc/cpuinfo flags of CPUs that compute bfloat16 natively.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU feature flags from ``/proc/cpuinfo``, or None where it cannot be read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return None


@functools.lru_cache(maxsize=1)
def has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (Sapphire Rapids and later, Cooper Lake, Zen 4)."""
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & BF16_FLAGS)
    if "torch" not in sys.modules:  # no /proc (macOS, Windows): ask torch, but only if it is loaded already
        return False
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_amx_tile_supported", None), getattr(cpu, "_is_avx512_bf16_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def auto_dtype() -> str:
    """The precision ``dtype="auto"`` stands for on this CPU."""
    return "bfloat16" if has_native_bf16() else "float32"
