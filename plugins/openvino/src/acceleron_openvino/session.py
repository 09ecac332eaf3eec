"""A compiled OpenVINO model and the infer requests that run it, safe to call from many threads.

One infer request must never serve two calls at once (its input and output buffers are its own),
so each call borrows a request from a pool and gives it back afterwards; the pool grows to the
number of concurrent callers and then stays that size. Creating a request costs ~25 us, but a
reused request keeps its allocated buffers, which is why requests are pooled, not made per call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.errors import AcceleronError
from acceleron_openvino.artifacts import error_reason

if TYPE_CHECKING:
    import numpy as np
    import openvino
    import torch


@dataclass(frozen=True)
class InputSpec:
    """One input of the compiled model: its name, numpy dtype, and its size per axis (-1: dynamic)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def has_static_axes(self) -> bool:
        return any(size >= 0 for size in self.shape)


class RequestPool:
    """Infer requests of one compiled model, lent out one call at a time."""

    def __init__(self, compiled: openvino.CompiledModel) -> None:
        self._compiled = compiled
        self._free: list[openvino.InferRequest] = []
        self._lock = threading.Lock()
        self.created = 0

    @contextmanager
    def borrow(self) -> Iterator[openvino.InferRequest]:
        with self._lock:
            request = self._free.pop() if self._free else None
            if request is None:
                self.created += 1
        if request is None:
            request = self._compiled.create_infer_request()
        try:
            yield request
        finally:
            with self._lock:
                self._free.append(request)


@dataclass
class OpenVINOSession:
    """What :meth:`OpenVINOBackend.load` returns: a compiled model, its requests and how it was made."""

    compiled: openvino.CompiledModel
    artifact: Path
    device: str
    config: Mapping[str, Any]
    weights: str
    compile_cache: Path | None
    static_shape_options: Mapping[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inputs = [_input_spec(port) for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]
        self.pool = RequestPool(self.compiled)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Infer on ``inputs`` (torch tensors by name); returns new torch tensors by output name."""
        import torch

        feed = {spec.name: _as_array(inputs, spec) for spec in self.inputs}
        rows = self._fit_static_shapes(feed)
        with self.pool.borrow() as request:
            try:
                results = request.infer(feed, share_inputs=True, share_outputs=True)
            except RuntimeError as error:
                raise AcceleronError(
                    f"OpenVINO inference on {self.device} failed for inputs "
                    f"{ {name: tuple(array.shape) for name, array in feed.items()} }: {error_reason(error)}"
                ) from error
            # The arrays alias the request's buffers, which the next call on it overwrites: copy
            # before giving the request back (this is the only copy of the outputs).
            return {
                name: torch.from_numpy(results[index][:rows].copy()) for index, name in enumerate(self.output_names)
            }

    def _fit_static_shapes(self, feed: dict[str, np.ndarray]) -> int:
        """Check inputs against static axes; pad a short batch with zero rows. Returns the real row count."""
        import numpy as np

        rows = next(iter(feed.values())).shape[0]
        for spec in self.inputs:
            if not spec.has_static_axes:
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
        return rows

    def _static_mismatch(self, spec: InputSpec, shape: tuple[int, ...]) -> str:
        wanted = "x".join("?" if size < 0 else str(size) for size in spec.shape)
        options = ", ".join(f"{k}={v}" for k, v in self.static_shape_options.items() if v is not None)
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


def _input_spec(port: openvino.ConstOutput) -> InputSpec:
    shape = port.get_partial_shape()
    sizes = tuple(dim.get_length() if dim.is_static else -1 for dim in shape) if shape.rank.is_static else ()
    return InputSpec(port.get_any_name(), port.get_element_type().to_dtype(), sizes)


def _as_array(inputs: Mapping[str, torch.Tensor], spec: InputSpec) -> np.ndarray:
    """The input as a numpy array of the model's dtype, sharing torch's memory when it can."""
    import numpy as np
    import torch

    tensor = inputs.get(spec.name)
    if tensor is None:
        raise AcceleronError(
            f"the OpenVINO model needs the input {spec.name!r}, which was not given (got {', '.join(inputs)}); "
            "pass it, or use the preprocessor saved with the model."
        )
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    array = tensor.cpu().numpy()
    if array.dtype != spec.dtype:
        array = array.astype(spec.dtype)
    return np.ascontiguousarray(array)
