"""The process-wide OpenVINO ``Core`` and what it says about devices.

Imports OpenVINO on first use only.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

from acceleron.errors import InvalidOptionError
from acceleron_openvino.options import PRECISION_NAMES

if TYPE_CHECKING:
    import openvino

#: Devices that stand for a choice among others; what follows their colon is checked instead.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")

_core: openvino.Core | None = None
_core_lock = threading.Lock()


def get_core() -> openvino.Core:
    """The shared ``openvino.Core`` (its methods are thread-safe; creating one per model wastes time)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


def available_devices() -> list[str]:
    """What ``Core().available_devices`` reports here, e.g. ``['CPU', 'GPU.0']``."""
    return list(get_core().available_devices)


def normalize_device(device: str) -> str:
    """OpenVINO's spelling of a device name (``cpu`` -> ``CPU``); raises when no such device is here.

    Virtual devices (``AUTO``, ``MULTI:...``, ``HETERO:...``, ``BATCH:...``) pass through, with the
    devices they list checked.
    """
    name = device.strip().upper()
    if name == "CPU":  # always there; checking it would import OpenVINO
        return name
    if not name:
        raise InvalidOptionError("device must not be empty; use 'CPU', 'GPU', 'NPU' or 'AUTO'.")
    kind, _, listed = name.partition(":")
    if kind in VIRTUAL_DEVICES:
        for part in filter(None, listed.split(",")):
            _check_physical(part.split("(")[0], original=device)
        return name
    _check_physical(name, original=device)
    return name


def _check_physical(name: str, original: str) -> None:
    available = available_devices()
    if name in available or any(found.split(".")[0] == name for found in available):
        return
    raise InvalidOptionError(
        f"OpenVINO has no device {original!r} here; available: {', '.join(available) or 'none'} "
        f"(and the virtual devices {', '.join(VIRTUAL_DEVICES)}). Pass device='CPU', or install the "
        f"driver that makes {original!r} visible to OpenVINO."
    )


@functools.cache
def default_precision(device: str) -> str:
    """The precision OpenVINO computes in on ``device`` when not told otherwise, as an acceleron dtype.

    CPUs with native bfloat16 (AMX, AVX512-BF16) default to bfloat16, others to float32; GPUs to float16.
    """
    kind = device.split(":")[0].split(".")[0]
    if kind in VIRTUAL_DEVICES:
        return "float32"  # the device is chosen at compile time; describe() reports the real one
    try:
        hint = get_core().get_property(device, "INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return "float32"
    return PRECISION_NAMES.get(hint.get_type_name(), "float32")


@functools.cache
def has_native_bfloat16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (OpenVINO emulates it, very slowly, otherwise)."""
    try:
        capabilities = get_core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return True  # nothing to go by: leave it to the device
    return "BF16" in capabilities


def native_bfloat16(device: str) -> bool:
    """False only for a CPU that would emulate bfloat16; other devices decide for themselves."""
    return not device.startswith("CPU") or has_native_bfloat16(device)
