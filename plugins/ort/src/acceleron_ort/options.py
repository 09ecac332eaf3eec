"""The options of the ``ort`` backend: :class:`OrtOptions`.

Besides ``device`` (``"cpu"`` or ``"cuda[:N]"``), ``dtype`` (auto/float32/int8/int4) and ``num_threads``:

=====================  ===========================================================================
``exporter``           ``"torchscript"`` (default) or ``"dynamo"`` (torch.export-based; needs onnxscript)
``opset``              ONNX opset to export with; default: 17 (torchscript), the exporter's own (dynamo)
``attention``          how attention is traced: ``"eager"`` (default: transformers' eager attention, matmuls
                       and softmax) or ``"model"`` (the model's own implementation, usually SDPA)
``optimize``           apply onnxruntime's transformer fusions offline (default False: not faster on CPU)
``decoder``            how a causal LM's decoder step is written: ``"auto"`` (default: ``"fused"`` where the
                       architecture allows, else ``"traced"``), ``"fused"`` (onnxruntime's fused ops written
                       from the weights, :mod:`acceleron_ort.decoder_graph`; an error where unsupported) or
                       ``"traced"`` (``torch.onnx.export``, as every other graph)
``graph_optimization`` session graph optimisation: ``"disable"``, ``"basic"``, ``"extended"``, ``"all"``
``session_options``    dict: ``onnxruntime.SessionOptions`` attributes, or config entries (keys with a dot)
``provider``           an execution provider name that overrides the one ``device`` implies
``provider_options``   dict passed to the execution provider
=====================  ===========================================================================

``dtype``, ``exporter``, ``opset``, ``attention``, ``optimize`` and ``decoder`` change the exported file, so
they key the export cache (:attr:`OrtOptions.artifact_fields`). A fused decoder is not traced, so
``exporter``, ``opset``, ``attention`` and ``optimize`` do not apply to it.

Why eager attention by default: ONNX Runtime has no fused kernel for the decomposed SDPA the exporter
writes, and the eager pattern ran faster on every model measured (AMD EPYC Zen 4, 2 threads, float32):
Whisper tiny.en's encoder (1,500 positions) 0.235 s against 0.391 s per 30 s window; the MiniLM
sentiment classifier 147-168 against 137-161 sentences/s (batch 32); SmolLM2-135M decode steps
30.7-31.3 against 29.6-33.6 ms (no difference). ``optimize=True`` traces eager attention whatever
this option says (its attention fusion needs that pattern).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from acceleron.backend import Options
from acceleron.errors import InvalidOptionError

EXPORTERS = ("torchscript", "dynamo")
ATTENTION = ("eager", "model")
DECODERS = ("auto", "fused", "traced")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtOptions(Options):
    exporter: str = "torchscript"
    opset: int | None = None
    attention: str = "eager"
    optimize: bool = False
    decoder: str = "auto"
    graph_optimization: str = "all"
    session_options: Mapping[str, Any] = field(default_factory=dict)
    provider: str | None = None
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    #: Hand the CPU arena's unused memory back after each run (see :class:`acceleron_ort.session.OrtSession`).
    arena_shrinkage: bool = True

    artifact_fields: ClassVar[frozenset[str]] = Options.artifact_fields | {
        "exporter",
        "opset",
        "attention",
        "optimize",
        "decoder",
    }

    def __post_init__(self) -> None:
        for name, choices in (
            ("exporter", EXPORTERS),
            ("attention", ATTENTION),
            ("decoder", DECODERS),
            ("graph_optimization", GRAPH_OPTIMIZATION_LEVELS),
        ):
            value = str(getattr(self, name)).strip().lower()
            if value not in choices:
                raise InvalidOptionError(
                    f"{name}={getattr(self, name)!r} is not valid for the ort backend; "
                    f"choose one of {', '.join(choices)}."
                )
            object.__setattr__(self, name, value)
        opset = self.opset
        if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool) or not 11 <= opset <= 23):
            raise InvalidOptionError(f"opset must be an integer between 11 and 23, got {opset!r}.")
        if not isinstance(self.arena_shrinkage, bool):
            raise InvalidOptionError(f"arena_shrinkage must be True or False, got {self.arena_shrinkage!r}.")
        if not isinstance(self.optimize, bool):
            raise InvalidOptionError(f"optimize must be True or False, got {self.optimize!r}.")
        provider = self.provider
        if provider is not None and (not isinstance(provider, str) or not provider.endswith("ExecutionProvider")):
            raise InvalidOptionError(
                "provider must name an onnxruntime execution provider such as 'CUDAExecutionProvider', "
                f"got {provider!r}."
            )
        if provider is None and self.device.partition(":")[0] not in ("cpu", "cuda"):
            raise InvalidOptionError(
                f"the ort backend runs on device 'cpu' or 'cuda[:N]', not {self.device!r}; "
                "for another execution provider pass provider='...ExecutionProvider'."
            )
        for name in ("session_options", "provider_options"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
                raise InvalidOptionError(f"{name} must be a dict with string keys, got {value!r}.")
            object.__setattr__(self, name, dict(value))
