"""Compiling an artifact once per model and device, and the session that runs it from many threads.

An unchanged IR is compiled from its path, which lets OpenVINO's model cache serve a warm start:
with ``CACHE_MODE=OPTIMIZE_SIZE`` the cached blob holds no weights (about 0.5 MB for MiniLM instead
of a second copy of its 90 MB). Measured on the 2-core Xeon (AVX-512, no AMX) this was built on, in
6 alternating pairs of fresh processes: compiling MiniLM took 0.15-0.21 s from the cache against
0.33-0.63 s without, and ``pipeline()`` started in 0.53-1.05 s against 0.70-1.47 s (faster in every
pair). A model changed in memory (static reshape, int8 compression at load, ONNX) is compiled
without the cache: OpenVINO hashes the whole model then, and the measured gain was nil.

One infer request must never serve two calls at once (its input and output buffers are its own),
so each call borrows a request from a pool and gives it back afterwards; the pool grows to the
number of concurrent callers and then stays that size. Creating a request costs ~25 us, but a
reused request keeps its allocated buffers, which is why requests are pooled, not made per call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Session
from acceleron.errors import AcceleronError, InvalidOptionError
from acceleron_openvino.artifacts import IR_SUFFIX, error_reason, read_model
from acceleron_openvino.export import WEIGHT_COMPRESSION, compress_weights, compressed_dtype
from acceleron_openvino.options import PRECISION_HINTS, OpenVINOOptions, precision_name
from acceleron_openvino.stateful import (
    BEAM_INPUT,
    KEEP_INPUT,
    PAST_INPUT,
    StatefulDecode,
    is_stateful,
    make_stateful,
    read_states,
    state_names,
    write_states,
)

#: Inputs of a stateful IR the session feeds itself.
STATE_INPUTS = (BEAM_INPUT, KEEP_INPUT)

if TYPE_CHECKING:
    import numpy as np
    import openvino
    import torch

    from acceleron.kv_cache import CacheLayout
    from acceleron.tasks import TaskSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    """One input of the compiled model: its name, numpy dtype, and its size per axis (-1: dynamic)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


class RequestPool:
    """Infer requests of one compiled model, lent out one call at a time."""

    def __init__(self, compiled: openvino.CompiledModel) -> None:
        self._compiled = compiled
        self._free: list[openvino.InferRequest] = []
        self._lock = threading.Lock()
        self.created = 0

    def acquire(self) -> openvino.InferRequest:
        """A request for the caller alone, until :meth:`release`."""
        with self._lock:
            request = self._free.pop() if self._free else None
            if request is None:
                self.created += 1
        return request if request is not None else self._compiled.create_infer_request()

    def release(self, request: openvino.InferRequest) -> None:
        with self._lock:
            self._free.append(request)

    @contextmanager
    def borrow(self) -> Iterator[openvino.InferRequest]:
        request = self.acquire()
        try:
            yield request
        finally:
            self.release(request)


class OpenVINOSession(Session):
    """A compiled model, its infer requests and how it was made; returns every graph output by name."""

    computes_with_torch = False  # its own thread pool: generate()'s torch work stays on one thread

    options: OpenVINOOptions

    def __init__(
        self,
        compiled: openvino.CompiledModel,
        *,
        artifact: Path,
        options: OpenVINOOptions,
        weights: str,
        compile_cache: Path | None,
        notes: list[str],
    ) -> None:
        self.stateful = is_stateful(compiled)
        #: The inputs fed from the caller's tensors (a stateful IR's cache inputs are its variables).
        self.inputs = [_input_spec(port) for port in compiled.inputs if port.get_any_name() not in STATE_INPUTS]
        outputs = [port.get_any_name() for port in compiled.outputs]
        #: The IR's own outputs (a stateful IR's present tensors are its variables).
        self.graph_outputs = outputs
        self.keeps_logits = any(port.get_any_name() == KEEP_INPUT for port in compiled.inputs)
        #: A stateful IR's flat past names, in layer order (its variables hold them).
        self.past_names: list[str] = []
        if self.stateful:
            self.past_names = sorted(state_names(compiled.create_infer_request()), key=_past_order)
        super().__init__(
            input_names=[spec.name for spec in self.inputs] + self.past_names,
            output_names=outputs + [PAST_INPUT.sub(r"present.\1.\2", name) for name in self.past_names],
            options=options,
        )
        self.compiled = compiled
        self.artifact = artifact
        self.device = options.device
        self.weights = weights
        self.compile_cache = compile_cache
        self.notes = notes
        self.pool = RequestPool(compiled)

    def feed(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The fed inputs as numpy arrays of the model's dtypes."""
        return {spec.name: _as_array(inputs[spec.name], spec) for spec in self.inputs}

    def start_decoding(self, layout: CacheLayout, batch_size: int) -> StatefulDecode | None:
        if not self.stateful:
            return None
        return StatefulDecode(self, layout, batch_size)

    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        feed = self.feed(inputs)
        if self.stateful:
            return self._forward_flat_on_state(feed, inputs)
        rows = self._fit_static_shapes(feed)
        with self.pool.borrow() as request:
            try:
                results = request.infer(feed, share_inputs=True, share_outputs=True)
            except RuntimeError as error:
                raise self._inference_error(feed, error) from error
            # The arrays alias the request's buffers, which the next call on it overwrites: copy
            # before giving the request back (this is the only copy of the outputs).
            # Only a padded batch is cut back: a graph with several batch axes (CLIP's text and image
            # towers) has outputs whose first axis is not the first input's.
            return {
                name: torch.from_numpy((results[index] if rows is None else results[index][:rows]).copy())
                for index, name in enumerate(self.output_names)
            }

    def _inference_error(self, feed: Mapping[str, np.ndarray], error: RuntimeError) -> AcceleronError:
        shapes = {name: tuple(array.shape) for name, array in feed.items()}
        return AcceleronError(f"OpenVINO inference on {self.device} failed for inputs {shapes}: {error_reason(error)}")

    def _forward_flat_on_state(
        self, feed: dict[str, np.ndarray], inputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The flat protocol on a stateful IR: the past is written into the variables, present read back."""
        import numpy as np
        import torch

        batch = next(iter(feed.values())).shape[0]
        feed[BEAM_INPUT] = np.arange(batch, dtype=np.int32)
        if self.keeps_logits:
            feed[KEEP_INPUT] = np.zeros(1, dtype=np.int64)
        past = {name: inputs[name] for name in self.past_names}
        with self.pool.borrow() as request:
            try:
                write_states(request, past)
                results = request.infer(feed, share_inputs=True, share_outputs=True)
            except RuntimeError as error:
                raise self._inference_error(feed, error) from error
            outputs = {name: torch.from_numpy(results[index].copy()) for index, name in enumerate(self.graph_outputs)}
            present = read_states(request, self.past_names)
        for name, value in present.items():
            outputs[PAST_INPUT.sub(r"present.\1.\2", name)] = value
        return outputs

    def _fit_static_shapes(self, feed: dict[str, np.ndarray]) -> int | None:
        """Check inputs against static axes; pad a short batch with zero rows. Returns the real row
        count when a batch was padded, else None."""
        import numpy as np

        rows = next(iter(feed.values())).shape[0]
        padded = False
        for spec in self.inputs:
            if all(size < 0 for size in spec.shape):
                continue
            array = feed[spec.name]
            expected = tuple(size if size >= 0 else actual for size, actual in zip(spec.shape, array.shape))
            padded_batch = spec.shape[0] >= 0 and array.shape[0] < spec.shape[0]
            if padded_batch:
                expected = (array.shape[0], *expected[1:])
            if array.ndim != len(spec.shape) or tuple(array.shape) != expected:
                raise AcceleronError(self._static_mismatch(spec, array.shape))
            if padded_batch:
                padding = np.zeros((spec.shape[0] - array.shape[0], *array.shape[1:]), dtype=array.dtype)
                feed[spec.name] = np.concatenate([array, padding])
                padded = True
        return rows if padded else None

    def _static_mismatch(self, spec: InputSpec, shape: tuple[int, ...]) -> str:
        wanted = "x".join("?" if size < 0 else str(size) for size in spec.shape)
        static = {name: getattr(self.options, name) for name in ("static_batch_size", "static_sequence_length")}
        options = ", ".join(f"{name}={size}" for name, size in static.items() if size is not None)
        how = f" (loaded with {options})" if options else ""
        return (
            f"input {spec.name!r} has shape {tuple(shape)}, but this OpenVINO model is compiled for the static "
            f"shape {wanted}{how}. Pad inputs to that size (for text: tokenizer padding='max_length', "
            "max_length=<the static length>; smaller batches are padded for you), or load the model without "
            "static shapes."
        )

    def property(self, name: str, default: Any = None) -> Any:
        """A property of the compiled model, or ``default`` when the device does not report it."""
        try:
            return self.compiled.get_property(name)
        except RuntimeError:
            return default

    def describe(self) -> dict[str, Any]:
        """What the compiled model runs with, read back from OpenVINO rather than from the options."""
        from acceleron_openvino.devices import default_precision

        hint = self.property("INFERENCE_PRECISION_HINT")
        precision = precision_name(hint) if hint is not None else "unknown"
        report: dict[str, Any] = {
            **super().describe(),
            "device": self.device,
            "execution_devices": list(self.property("EXECUTION_DEVICES", [self.device])),
            "dtype": self.weights if self.weights in WEIGHT_COMPRESSION else precision,
            "activations": precision,
            "weights": self.weights,
            "requested_dtype": self.options.dtype,
            "num_threads": self.property("INFERENCE_NUM_THREADS"),
            "performance_hint": str(self.property("PERFORMANCE_HINT", "")).split(".")[-1].lower() or None,
            "num_streams": _as_int(self.property("NUM_STREAMS")),
            "input_shapes": {spec.name: list(spec.shape) for spec in self.inputs},  # -1: dynamic
            "compile_cache": str(self.compile_cache) if self.compile_cache else None,
            "infer_requests": self.pool.created,
        }
        if self.stateful:
            precision = self.property("KV_CACHE_PRECISION")
            report["kv_cache"] = {
                "kept": "in the infer request (stateful IR, one request per generation)",
                "precision": precision_name(precision) if precision is not None else "unknown",
                "last_position_logits": self.keeps_logits,
            }
        hinted = "INFERENCE_PRECISION_HINT" in self.options.ov_config
        if self.options.dtype in ("auto", *WEIGHT_COMPRESSION) and not hinted:
            report["precision_note"] = (
                f"OpenVINO's default precision on {self.device} here is {default_precision(self.device)} "
                "(bfloat16 on CPUs with AMX or AVX512-BF16, float32 on others)"
            )
        if self.notes:
            report["notes"] = list(self.notes)
        return report


def load_session(artifact: Path, task: TaskSpec, options: OpenVINOOptions) -> OpenVINOSession:
    """Read, adapt (reshape, compress) and compile ``artifact`` for ``options.device``."""
    from acceleron_openvino.devices import default_precision, get_core, native_bfloat16

    started = time.perf_counter()
    model = read_model(artifact)
    notes: list[str] = []
    changed = artifact.suffix != IR_SUFFIX
    compressed = compressed_dtype(model)
    if options.dtype in WEIGHT_COMPRESSION and compressed is None:
        logger.warning(
            "acceleron[ov]: %s has uncompressed weights; compressing them to %s now, on every load. "
            "save_pretrained() the model to keep the compressed IR.",
            artifact,
            options.dtype,
        )
        model = compress_weights(model, options.dtype)
        compressed, changed = options.dtype, True
    if make_stateful(model):  # a flat-cache IR saved before acceleron made them stateful at export
        changed = True
    if options.static_shapes:
        _reshape(model, task, options)
        changed = True
    if options.num_threads is not None and not options.is_cpu:
        logger.warning("acceleron[ov]: num_threads applies to the CPU only; it is ignored on %s", options.device)
    hint = PRECISION_HINTS[options.dtype]
    if options.dtype == "bfloat16" and not native_bfloat16(options.device):
        hint = "f32"
        message = (
            f"{options.device} has no native bfloat16 (OpenVINO would emulate it, ~40x slower than float32 "
            "here), so acceleron[ov] runs float32; force it with ov_config={'INFERENCE_PRECISION_HINT': 'bf16'}"
        )
        logger.warning("acceleron[ov]: %s", message)
        notes.append(message)
    config = options.compile_config(hint, compressed)
    if is_stateful(model) and options.is_cpu and "KV_CACHE_PRECISION" not in config:
        # Set, not left to the plugin: a model's runtime info can silently choose a lower precision for it.
        config["KV_CACHE_PRECISION"] = hint or PRECISION_HINTS.get(default_precision(options.device), "f32")
    cache_dir = None if changed else _prepare_cache(options, config)
    try:
        compiled = get_core().compile_model(model if changed else str(artifact), options.device, config)
    except RuntimeError as error:
        raise AcceleronError(
            f"OpenVINO could not compile {artifact} for {options.device} with {config}: {error_reason(error)}. "
            "Check the device and ov_config, or load with device='CPU'."
        ) from error
    logger.info(
        "acceleron[ov]: compiled %s for %s in %.2f s", artifact.name, options.device, time.perf_counter() - started
    )
    weights = compressed or "float32"
    return OpenVINOSession(
        compiled, artifact=artifact, options=options, weights=weights, compile_cache=cache_dir, notes=notes
    )


def _reshape(model: openvino.Model, task: TaskSpec, options: OpenVINOOptions) -> None:
    """Fix the dynamic axes of every input: axis 0 to the batch size, axis 1 to the sequence length.

    A graph with an input that has another dynamic axis (a cache's past length, which changes at
    every step) cannot be compiled static: it is refused.
    """
    import openvino

    if is_stateful(model):
        raise InvalidOptionError(
            f"static_batch_size/static_sequence_length do not apply to {task.name}: its cache grows at every "
            "step; load the model without them."
        )
    shapes = {}
    for port in model.inputs:
        name, shape = port.get_any_name(), port.get_partial_shape()
        for axis, dim in enumerate(shape if shape.rank.is_static else []):
            if dim.is_static:
                continue
            if axis > 1:
                raise InvalidOptionError(
                    f"static_batch_size/static_sequence_length do not apply to {task.name}: the input {name!r} "
                    f"has a dynamic axis {axis} they do not fix (its length changes between calls); "
                    "load the model without them."
                )
            size = options.static_sequence_length if axis else options.static_batch_size
            if size is not None:
                shape[axis] = openvino.Dimension(size)
        shapes[name] = shape
    try:
        model.reshape(shapes)
    except RuntimeError as error:
        raise AcceleronError(
            f"OpenVINO cannot reshape the model to {shapes}: {error_reason(error)}. "
            "Use other static sizes, or leave static_batch_size/static_sequence_length unset."
        ) from error


def _prepare_cache(options: OpenVINOOptions, config: dict[str, Any]) -> Path | None:
    """Add the model cache to ``config`` when it is on and this OpenVINO has weightless caching."""
    import openvino.properties

    if "CACHE_DIR" in config:  # set through ov_config: the user's choice
        return Path(str(config["CACHE_DIR"]))
    from acceleron.cache import owned_by_current_user

    folder = options.compile_cache_dir()
    if folder is None or not hasattr(openvino.properties, "cache_mode"):
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.info("acceleron[ov]: no compiled-model cache (%s is not writable: %s)", folder, error)
        return None
    # OpenVINO replaces stale blobs in place: in a folder of another user that fails ("cannot remove:
    # Permission denied") and breaks the load, so such a folder is not used at all.
    if not owned_by_current_user(folder) or not os.access(folder, os.W_OK):
        logger.info("acceleron[ov]: no compiled-model cache (%s belongs to another user or is read-only)", folder)
        return None
    config["CACHE_DIR"] = str(folder)
    config.setdefault("CACHE_MODE", "OPTIMIZE_SIZE")
    return folder


def _input_spec(port: openvino.ConstOutput) -> InputSpec:
    shape = port.get_partial_shape()
    sizes = tuple(dim.get_length() if dim.is_static else -1 for dim in shape) if shape.rank.is_static else ()
    return InputSpec(port.get_any_name(), port.get_element_type().to_dtype(), sizes)


def _as_array(tensor: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """The input as a numpy array of the model's dtype, sharing torch's memory when it can."""
    import numpy as np
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    array = tensor.cpu().numpy()
    if array.dtype != spec.dtype:
        array = array.astype(spec.dtype)
    return np.ascontiguousarray(array)


def _past_order(name: str) -> tuple[int, int]:
    match = PAST_INPUT.match(name)
    return (int(match.group(1)), 0 if match.group(2) == "key" else 1) if match else (1 << 30, 0)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
