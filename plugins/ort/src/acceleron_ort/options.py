"""The options the ``ort`` backend accepts besides ``device``, ``dtype`` and ``num_threads``.

=====================  ===========================================================================
``exporter``           ``"torchscript"`` (default) or ``"dynamo"`` (torch.export-based; needs onnxscript)
``opset``              ONNX opset to export with; default: 17 (torchscript), the exporter's own (dynamo)
``optimize``           apply onnxruntime's transformer fusions offline (default False: not faster on CPU)
``graph_optimization`` session graph optimisation: ``"disable"``, ``"basic"``, ``"extended"``, ``"all"``
``session_options``    dict: ``onnxruntime.SessionOptions`` attributes, or config entries (keys with a dot)
``provider``           an execution provider name that overrides the one ``device`` implies
``provider_options``   dict passed to the execution provider
=====================  ===========================================================================

``dtype``, ``exporter``, ``opset`` and ``optimize`` change the exported file, so they are part of
the export cache key (:attr:`OrtBackend.artifact_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acceleron.errors import InvalidOptionError

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_EXPORTER = "torchscript"
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_GRAPH_OPTIMIZATION = "all"

EXTRA_OPTIONS = frozenset(
    {"exporter", "opset", "optimize", "graph_optimization", "session_options", "provider", "provider_options"}
)
ARTIFACT_OPTIONS = frozenset({"dtype", "exporter", "opset", "optimize"})


def _choice(options: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in choices:
        raise InvalidOptionError(
            f"{name}={value!r} is not valid for the ort backend; choose one of {', '.join(choices)}."
        )
    return text


def _mapping(options: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = options.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidOptionError(f"{name} must be a dict with string keys, got {value!r}.")
    return dict(value)


def check_ort_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the ort-specific options (common ones are checked by the core).

    Options left out stay out (defaults apply where they are used), so that the core can tell an
    option asked for from a default when it compares them with a saved artifact's.
    """
    checked = dict(options)
    for name, choices in (("exporter", EXPORTERS), ("graph_optimization", GRAPH_OPTIMIZATION_LEVELS)):
        if name in checked:
            checked[name] = _choice(options, name, choices)
    opset = options.get("opset")
    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool) or not 11 <= opset <= 23):
        raise InvalidOptionError(f"opset must be an integer between 11 and 23, got {opset!r}.")
    optimize = options.get("optimize")
    if optimize is not None and not isinstance(optimize, bool):
        raise InvalidOptionError(f"optimize must be True or False, got {optimize!r}.")
    provider = options.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.endswith("ExecutionProvider")):
        raise InvalidOptionError(
            f"provider must name an onnxruntime execution provider such as 'CUDAExecutionProvider', got {provider!r}."
        )
    for name in ("session_options", "provider_options"):
        if name in checked:
            checked[name] = _mapping(options, name)
    return checked
