"""Compiling an artifact into an :class:`~acceleron_openvino.session.OpenVINOSession`, once per model and device.

An unchanged IR is compiled from its path, which lets OpenVINO's model cache serve a warm start:
with ``CACHE_MODE=OPTIMIZE_SIZE`` the cached blob holds no weights (about 0.5 MB for MiniLM instead
of a second copy of its 90 MB). Measured on the 2-core Xeon (AVX-512, no AMX) this was built on, in
6 alternating pairs of fresh processes: compiling MiniLM took 0.15-0.21 s from the cache against
0.33-0.63 s without, and ``pipeline()`` started in 0.53-1.05 s against 0.70-1.47 s (faster in every
pair). A model changed in memory (static reshape, int8 compression at load, ONNX) is compiled
without the cache: OpenVINO hashes the whole model then, and the measured gain was nil.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.errors import AcceleronError, InvalidOptionError
from acceleron.tasks import BATCH
from acceleron_openvino.artifacts import IR_SUFFIX, error_reason, read_model
from acceleron_openvino.export import compress_weights_int8, is_weight_compressed
from acceleron_openvino.options import PRECISION_HINTS, PRECISION_NAMES, RuntimeOptions
from acceleron_openvino.session import OpenVINOSession

if TYPE_CHECKING:
    import openvino

    from acceleron.tasks import TaskSpec

logger = logging.getLogger(__name__)


def compile_session(artifact: Path, task: TaskSpec, runtime: RuntimeOptions) -> OpenVINOSession:
    """Read, adapt (reshape, compress) and compile ``artifact`` for ``runtime.device``."""
    from acceleron_openvino.devices import get_core

    model = read_model(artifact)
    notes: list[str] = []
    changed = artifact.suffix != IR_SUFFIX
    compressed = is_weight_compressed(model)
    if runtime.dtype == "int8" and not compressed:
        logger.warning(
            "acceleron[ov]: %s has uncompressed weights; compressing them to int8 now, on every load. "
            "save_pretrained() the model to keep the compressed IR.",
            artifact,
        )
        model = compress_weights_int8(model)
        compressed = changed = True
    if runtime.static_shapes:
        if task.generative:
            raise InvalidOptionError(
                "static_batch_size/static_sequence_length do not apply to text-generation (every step has "
                "other lengths); load the model without them."
            )
        _reshape(model, task, runtime)
        changed = True
    hint = precision_hint(runtime)
    if runtime.dtype == "bfloat16" and hint == "f32":
        message = (
            f"{runtime.device} has no native bfloat16 (OpenVINO would emulate it, ~40x slower than float32 "
            "here), so acceleron[ov] runs float32; force it with ov_config={'INFERENCE_PRECISION_HINT': 'bf16'}"
        )
        logger.warning("acceleron[ov]: %s", message)
        notes.append(message)
    config = runtime.compile_config(hint)
    cache_dir = None if changed or _being_built(artifact) else _prepare_cache(runtime, config)
    core = get_core()
    try:
        compiled = core.compile_model(model if changed else str(artifact), runtime.device, config)
    except RuntimeError as error:
        raise AcceleronError(
            f"OpenVINO could not compile {artifact} for {runtime.device} with {config}: {error_reason(error)}. "
            "Check the device and ov_config, or load with device='CPU'."
        ) from error
    return OpenVINOSession(
        compiled=compiled,
        artifact=artifact,
        device=runtime.device,
        config=config,
        weights="int8" if compressed else "float32",
        compile_cache=cache_dir,
        static_shape_options={
            "static_batch_size": runtime.static_batch_size,
            "static_sequence_length": runtime.static_sequence_length,
        },
        notes=notes,
    )


def precision_hint(runtime: RuntimeOptions) -> str | None:
    """The ``INFERENCE_PRECISION_HINT`` for these options (None: OpenVINO's default)."""
    from acceleron_openvino.devices import native_bfloat16

    if runtime.dtype == "bfloat16" and not native_bfloat16(runtime.device):
        return "f32"
    return PRECISION_HINTS[runtime.dtype]


def _reshape(model: openvino.Model, task: TaskSpec, runtime: RuntimeOptions) -> None:
    """Fix the batch and sequence axes of every input to the sizes asked for."""
    import openvino

    names = [port.get_any_name() for port in model.inputs]
    axes = task.dynamic_axes(names)
    shapes = {}
    for port, name in zip(model.inputs, names):
        shape = port.get_partial_shape()
        for axis, symbol in axes.get(name, {}).items():
            size = runtime.static_batch_size if symbol == BATCH else runtime.static_sequence_length
            if size is not None and axis < shape.rank.get_length():
                shape[axis] = openvino.Dimension(size)
        shapes[name] = shape
    try:
        model.reshape(shapes)
    except RuntimeError as error:
        raise AcceleronError(
            f"OpenVINO cannot reshape the model to {shapes}: {error_reason(error)}. "
            "Use other static sizes, or leave static_batch_size/static_sequence_length unset."
        ) from error


def _being_built(artifact: Path) -> bool:
    """Whether ``artifact`` sits in an export-cache entry still being built (``<root>/.tmp/<key>-<id>/``).

    The core loads it there once, to validate it; a compiled blob for that path would never be used again.
    """
    return artifact.parent.parent.name == ".tmp"


def _prepare_cache(runtime: RuntimeOptions, config: dict[str, Any]) -> Path | None:
    """Add the model cache to ``config`` when it is on and this OpenVINO has weightless caching."""
    import openvino.properties

    if "CACHE_DIR" in config:  # set through ov_config: the user's choice
        return Path(str(config["CACHE_DIR"]))
    folder = runtime.compile_cache_dir()
    if folder is None or not hasattr(openvino.properties, "cache_mode"):
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.info("acceleron[ov]: no compiled-model cache (%s is not writable: %s)", folder, error)
        return None
    config["CACHE_DIR"] = str(folder)
    config.setdefault("CACHE_MODE", "OPTIMIZE_SIZE")
    return folder


def describe_session(session: OpenVINOSession, runtime: RuntimeOptions) -> dict[str, Any]:
    """What the compiled model runs with, read back from OpenVINO rather than from the options."""
    from acceleron_openvino.devices import default_precision

    hint = session.property("INFERENCE_PRECISION_HINT")
    precision = PRECISION_NAMES.get(hint.get_type_name(), str(hint)) if hint is not None else "unknown"
    report: dict[str, Any] = {
        "device": session.device,
        "execution_devices": list(session.property("EXECUTION_DEVICES", [session.device])),
        "dtype": "int8" if session.weights == "int8" else precision,
        "activations": precision,
        "weights": session.weights,
        "requested_dtype": runtime.dtype,
        "num_threads": session.property("INFERENCE_NUM_THREADS"),
        "performance_hint": str(session.property("PERFORMANCE_HINT", "")).split(".")[-1].lower() or None,
        "num_streams": _as_int(session.property("NUM_STREAMS")),
        "input_shapes": {spec.name: list(spec.shape) for spec in session.inputs},  # -1: dynamic
        "compile_cache": str(session.compile_cache) if session.compile_cache else None,
        "infer_requests": session.pool.created,
    }
    if runtime.dtype in ("auto", "int8") and "INFERENCE_PRECISION_HINT" not in runtime.ov_config:
        default = default_precision(session.device)
        report["precision_note"] = (
            f"OpenVINO's default precision on {session.device} here is {default} "
            "(bfloat16 on CPUs with AMX or AVX512-BF16, float32 on others)"
        )
    if session.notes:
        report["notes"] = list(session.notes)
    return report


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
