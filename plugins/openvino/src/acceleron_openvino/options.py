"""The ``ov`` backend's options, parsed once into :class:`OpenVINOOptions`.

Besides acceleron's common ``device``, ``dtype`` and ``num_threads``:

``performance_hint``        ``"latency"`` (default) or ``"throughput"`` -> ``PERFORMANCE_HINT``
``static_batch_size``       reshape the model to this batch size before compiling
``static_sequence_length``  reshape the sequence axis to this length before compiling
``ov_config``               a dict passed to ``compile_model`` as is, after (so over) acceleron's settings
``compile_cache``           True (default): cache compiled models in this user's folder of the
                            acceleron cache (``acceleron.cache.compiled_cache_dir``); False: never;
                            a path: cache there

``device`` is normalised to OpenVINO's spelling and checked against its devices (which imports
OpenVINO, unless it is the CPU); nothing else here imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acceleron.backend import Options
from acceleron.errors import InvalidOptionError

#: acceleron dtype -> OpenVINO ``INFERENCE_PRECISION_HINT`` (None: leave OpenVINO's default).
PRECISION_HINTS: dict[str, str | None] = {
    "auto": None,
    "float32": "f32",
    "bfloat16": "bf16",
    "int8": None,
    "int4": None,
}
#: The CPU's dynamic quantisation of activations, per group of this many, in front of compressed
#: weights, by dtype. int4 weights come in groups of 32 and their activations are quantised in
#: groups of 32 too (OpenVINO 2026.4's CPU default, set so that it stays); int8 weights are per
#: output channel, where groups of 128 measured faster. SmolLM2-135M, one thread, process CPU ms per
#: decoded token, one process, interleaved (2026-12-06, quiet 2-core Xeon): int8 16.0 with 128 /
#: 23.4 with 32 / 31.6 with none (0); int4 16.2 with 32 / 19.7 with 128. Greedy agreement: the
#: plugin README.
DYNAMIC_QUANTIZATION_GROUP_SIZE = {"int8": 128, "int4": 32}
#: OpenVINO element type names -> acceleron dtype names.
PRECISION_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
PERFORMANCE_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
#: Name of OpenVINO's folder of compiled-model blobs in the per-user compiled cache.
COMPILE_CACHE_FOLDER = "openvino"


def precision_name(hint: Any) -> str:
    """The acceleron dtype of an ``INFERENCE_PRECISION_HINT`` (a string such as ``"bf16"`` or an ``openvino.Type``)."""
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint).lower()
    return PRECISION_NAMES.get(name, name)


@dataclass(frozen=True)
class OpenVINOOptions(Options):
    """Options of the ``ov`` backend. ``dtype`` keys the export: int8 and int4 compress the IR's weights, and
    every precision keeps its own validation report (bfloat16 and float32 are only compile hints)."""

    performance_hint: str = "latency"
    static_batch_size: int | None = None
    static_sequence_length: int | None = None
    ov_config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    compile_cache: bool | str = True

    def __post_init__(self) -> None:
        from acceleron_openvino.devices import normalize_device

        hint = str(self.performance_hint).lower()
        if hint not in PERFORMANCE_HINTS:
            raise InvalidOptionError(
                f"performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, got {self.performance_hint!r}."
            )
        for name in ("static_batch_size", "static_sequence_length"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidOptionError(
                    f"{name} must be a positive integer (or None for a dynamic size), got {value!r}."
                )
        if not isinstance(self.ov_config, Mapping):
            raise InvalidOptionError(
                f"ov_config must be a dict of OpenVINO properties such as {{'NUM_STREAMS': 2}}, got {self.ov_config!r}."
            )
        cache = os.fspath(self.compile_cache) if isinstance(self.compile_cache, os.PathLike) else self.compile_cache
        if not isinstance(cache, (bool, str)):
            raise InvalidOptionError(f"compile_cache must be True, False or a folder path, got {cache!r}.")
        object.__setattr__(self, "performance_hint", hint)
        object.__setattr__(self, "ov_config", {str(key): value for key, value in self.ov_config.items()})
        object.__setattr__(self, "compile_cache", cache)
        object.__setattr__(self, "device", normalize_device(self.device))

    def fixed_by_artifact(self, recorded: Mapping[str, Any]) -> frozenset[str]:
        # A float IR runs as float32, bfloat16, int8 or int4 (hints and load-time compression); a
        # compressed IR stays what it was compressed to.
        if recorded.get("dtype") in ("int8", "int4"):
            return self.artifact_fields
        return self.artifact_fields - {"dtype"}

    @property
    def static_shapes(self) -> bool:
        return self.static_batch_size is not None or self.static_sequence_length is not None

    @property
    def is_cpu(self) -> bool:
        return self.device.split(".")[0] == "CPU"

    def compile_config(self, precision_hint: str | None, weights: str | None = None) -> dict[str, Any]:
        """The ``compile_model`` configuration, ``ov_config`` applied last.

        ``weights``: what the IR's weights are compressed to (``int8``/``int4``; None: what ``dtype`` asks).
        """
        config: dict[str, Any] = {"PERFORMANCE_HINT": PERFORMANCE_HINTS[self.performance_hint]}
        if self.num_threads is not None and self.is_cpu:
            config["INFERENCE_NUM_THREADS"] = self.num_threads
        if precision_hint is not None:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        compressed = weights or self.compute_dtype
        if self.is_cpu and compressed in DYNAMIC_QUANTIZATION_GROUP_SIZE:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = DYNAMIC_QUANTIZATION_GROUP_SIZE[compressed]
        config.update(self.ov_config)
        return config

    def compile_cache_dir(self) -> Path | None:
        """Where compiled models are cached, or None when caching is off."""
        if self.compile_cache is False:
            return None
        if isinstance(self.compile_cache, str):
            return Path(self.compile_cache).expanduser()
        from acceleron.cache import compiled_cache_dir

        return compiled_cache_dir(COMPILE_CACHE_FOLDER)
