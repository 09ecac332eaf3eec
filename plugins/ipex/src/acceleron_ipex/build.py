"""Turning a PyTorch model into what runs: cast, quantise or ``ipex.optimize``, then trace + freeze or compile.

This module imports torch at import time; the backend imports it only inside export and load.
IPEX is imported only by :func:`import_ipex`, which the backend calls only when the metadata says
IPEX matches torch (see :mod:`acceleron_ipex.engine`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

logger = logging.getLogger("acceleron_ipex")

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class PositionalOutputs(torch.nn.Module):
    """A model called with positional tensors that returns a tuple: the shape TorchScript traces."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.input_names, args)))
        return tuple(outputs[name] for name in self.output_names)


def import_ipex() -> Any:
    """Import intel_extension_for_pytorch. Call only when the engine choice says it matches torch."""
    import intel_extension_for_pytorch as ipex

    return ipex


def uses_autocast(engine: str, dtype: str) -> bool:
    """The ipex engine computes bfloat16 under autocast (float32 master weights, like IPEX's own recipe)."""
    return engine == "ipex" and dtype == "bfloat16"


@contextlib.contextmanager
def compute_context(engine: str, dtype: str) -> Iterator[None]:
    """Gradients off, and bfloat16 autocast where the engine needs it."""
    with torch.no_grad():
        if uses_autocast(engine, dtype):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                yield
        else:
            yield


def prepare(model: torch.nn.Module, engine: str, dtype: str) -> torch.nn.Module:
    """The eager model computing in ``dtype`` on ``engine``; ``model`` itself is never changed."""
    model = model.eval()
    if dtype == "int8":
        # Dynamic int8 of every Linear (weights int8 per output channel, activations quantised per batch), in
        # both engines: IPEX's own int8 needs calibration data, which an export from weights alone lacks.
        # Per-channel weights keep 96.7% of the sentiment classifier's labels, per-tensor 94.9% (measured).
        # torch.ao.quantization is deprecated in favour of torchao (not a dependency); it still works in 2.13.
        quantization: Any = torch.ao.quantization
        model = linear_layers(model)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_).*")
            return quantization.quantize_dynamic(
                model, {torch.nn.Linear: quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
            )
    if engine == "ipex":
        ipex = import_ipex()
        optimized: torch.nn.Module = ipex.optimize(model, dtype=TORCH_DTYPES[dtype])
        return optimized
    if dtype == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16)  # the caller's float32 model stays as it is
    return model


def linear_layers(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose transformers ``Conv1D`` layers (GPT-2's projections) are ``nn.Linear``.

    ``Conv1D`` is a Linear with a transposed weight; as a Linear, dynamic int8 quantises it too.
    """
    model = copy.deepcopy(model)
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers without Conv1D
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1], bias=child.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear.eval())
    return model


def trace_and_freeze(
    module: torch.nn.Module, example: Sequence[torch.Tensor], engine: str, dtype: str
) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` then ``torch.jit.freeze`` (weights folded into the graph as constants).

    TracerWarnings are silenced: whether a trace generalises is checked on other shapes by the exporter.
    So are transformers' deprecation warnings of properties that tracing merely looks at (``hasattr``).
    """
    with torch.inference_mode(False), compute_context(engine, dtype), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6", category=FutureWarning)
        traced = torch.jit.trace(module.eval(), tuple(example), check_trace=False)
        return torch.jit.freeze(traced)


def compile_module(module: torch.nn.Module, mode: str) -> Callable[..., Any]:
    """``torch.compile`` with inductor and freezing, dynamic in batch and sequence length."""
    options: dict[str, Any] = {"freezing": True}
    return torch.compile(module, mode=None if mode == "default" else mode, dynamic=True, options=options)


def cast_floats(inputs: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating inputs (pixel values, waveforms) in ``dtype``; integer ids untouched."""
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


def float_input_dtype(engine: str, dtype: str) -> torch.dtype:
    """The dtype the prepared model takes floating inputs in: bfloat16 only for the torch engine's bf16 weights."""
    return torch.bfloat16 if engine == "torch" and dtype == "bfloat16" else torch.float32


def outputs_agree(
    candidate: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], atol: float, rtol: float
) -> str:
    """Empty when two output tuples agree in shape and values, else what differs."""
    if len(candidate) != len(reference):
        return f"{len(candidate)} outputs instead of {len(reference)}"
    for index, (got, want) in enumerate(zip(candidate, reference)):
        if got.shape != want.shape:
            return f"output {index} has shape {tuple(got.shape)} instead of {tuple(want.shape)}"
        if not torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol):
            diff = float((got.float() - want.float()).abs().max())
            return f"output {index} differs from the eager model by up to {diff:.3g}"
    return ""
