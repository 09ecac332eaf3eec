"""The ``ov`` backend's options: checked once, then turned into an OpenVINO compile configuration.

User-facing options (besides acceleron's common ``device``, ``dtype`` and ``num_threads``):

``performance_hint``        ``"latency"`` (default) or ``"throughput"`` -> ``PERFORMANCE_HINT``
``static_batch_size``       reshape the model to this batch size before compiling
``static_sequence_length``  reshape text and audio inputs to this length before compiling
``ov_config``               a dict passed to ``compile_model`` as is, after (so over) acceleron's settings
``compile_cache``           True (default): cache compiled models under the acceleron cache;
                            False: never; a path: cache there

This module does not import OpenVINO.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acceleron.errors import InvalidOptionError

#: acceleron dtype -> OpenVINO ``INFERENCE_PRECISION_HINT`` (None: leave OpenVINO's default).
PRECISION_HINTS: dict[str, str | None] = {"auto": None, "float32": "f32", "bfloat16": "bf16", "int8": None}
#: OpenVINO element type names -> acceleron dtype names.
PRECISION_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
PERFORMANCE_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}

EXTRA_OPTIONS = frozenset(
    {"performance_hint", "static_batch_size", "static_sequence_length", "ov_config", "compile_cache"}
)

#: Sub-folder of the acceleron cache root that holds OpenVINO's compiled-model blobs.
COMPILE_CACHE_FOLDER = "openvino-compiled"


@dataclass(frozen=True)
class RuntimeOptions:
    """Checked options, in the terms the OpenVINO runtime needs."""

    device: str = "CPU"
    dtype: str = "auto"
    num_threads: int | None = None
    performance_hint: str = "latency"
    static_batch_size: int | None = None
    static_sequence_length: int | None = None
    ov_config: Mapping[str, Any] = field(default_factory=dict)
    compile_cache: bool | str = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RuntimeOptions:
        """Build from options already filled in by :meth:`OpenVINOBackend.check_options`."""
        return cls(
            device=str(options.get("device") or "CPU"),
            dtype=str(options.get("dtype") or "auto"),
            num_threads=options.get("num_threads"),
            performance_hint=str(options.get("performance_hint") or "latency"),
            static_batch_size=options.get("static_batch_size"),
            static_sequence_length=options.get("static_sequence_length"),
            ov_config=dict(options.get("ov_config") or {}),
            compile_cache=options.get("compile_cache", True),
        )

    @property
    def static_shapes(self) -> bool:
        return self.static_batch_size is not None or self.static_sequence_length is not None

    @property
    def is_cpu(self) -> bool:
        return self.device.split(".")[0] == "CPU"

    def compile_config(self, precision_hint: str | None) -> dict[str, Any]:
        """The ``compile_model`` configuration, ``ov_config`` applied last."""
        config: dict[str, Any] = {"PERFORMANCE_HINT": PERFORMANCE_HINTS[self.performance_hint]}
        if self.num_threads is not None and self.is_cpu:
            config["INFERENCE_NUM_THREADS"] = self.num_threads
        if precision_hint is not None:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        config.update(self.ov_config)
        return config

    def compile_cache_dir(self) -> Path | None:
        """Where compiled models are cached, or None when caching is off."""
        if self.compile_cache is False:
            return None
        if isinstance(self.compile_cache, str):
            return Path(self.compile_cache).expanduser()
        from acceleron.cache import default_cache_dir

        return default_cache_dir() / COMPILE_CACHE_FOLDER


def _positive_int_or_none(options: Mapping[str, Any], name: str) -> None:
    value = options.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidOptionError(f"{name} must be a positive integer (or None for a dynamic size), got {value!r}.")


def check_extra_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the ``ov``-specific options; returns them with defaults filled in and names normalised."""
    checked = dict(options)
    hint = str(checked.get("performance_hint") or "latency").lower()
    if hint not in PERFORMANCE_HINTS:
        raise InvalidOptionError(
            f"performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, got {checked['performance_hint']!r}."
        )
    checked["performance_hint"] = hint
    _positive_int_or_none(checked, "static_batch_size")
    _positive_int_or_none(checked, "static_sequence_length")
    ov_config = checked.get("ov_config")
    if ov_config is not None and not isinstance(ov_config, Mapping):
        raise InvalidOptionError(
            f"ov_config must be a dict of OpenVINO properties such as {{'NUM_STREAMS': 2}}, got {ov_config!r}."
        )
    checked["ov_config"] = {str(key): value for key, value in (ov_config or {}).items()}
    cache = checked.get("compile_cache", True)
    if isinstance(cache, os.PathLike):
        cache = os.fspath(cache)
    if not isinstance(cache, (bool, str)):
        raise InvalidOptionError(f"compile_cache must be True, False or a folder path, got {cache!r}.")
    checked["compile_cache"] = cache
    return checked
