"""The export hook: each graph of the core's plan to ONNX with ``torch.onnx.export`` (+ fusions, int8/int4).

A Llama-family causal LM's decoder step is written from its weights instead (``decoder="auto"``,
the default; :mod:`acceleron_ort.decoder_graph`), with the same inputs and outputs.

Two exporters, chosen by the ``exporter`` option:

* ``"torchscript"`` (the default): traces the model; one self-contained ``model.onnx`` file.
  On the MiniLM sentiment model it exports in 1.7 s and runs as fast as or faster than the other.
* ``"dynamo"``: ``torch.export``-based; needs onnxscript, writes the weights to ``model.onnx.data``,
  took 11.8 s on the same model and ran about 6% slower on ONNX Runtime (CPU).

Models whose weights pass :data:`EXTERNAL_DATA_THRESHOLD` keep them in one external
``<name>.data`` file, since a protobuf file cannot exceed 2 GB.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import torch

from acceleron.backend import distribution_version
from acceleron.errors import ExportError, InvalidOptionError
from acceleron.kv_cache import CacheLayout
from acceleron.tasks import CausalLM
from acceleron_ort import decoder_graph, fusion, quantize
from acceleron_ort.artifacts import METADATA_PREFIX, external_data_files, external_locations

if TYPE_CHECKING:
    from acceleron.tasks import ExportPlan, GraphPlan
    from acceleron_ort.options import OrtOptions

logger = logging.getLogger(__name__)

TORCHSCRIPT_OPSET = 17
#: Inline weights above this size move to an external data file (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1536 * 1024 * 1024


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence what exporting always says about transformers models; the export is validated instead."""
    torch_onnx_logger = logging.getLogger("torch.onnx")
    level = torch_onnx_logger.level
    torch_onnx_logger.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms", ...
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
        warnings.filterwarnings("ignore", message=".*The axis name: .* will not be used.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*treespec.*")
        try:
            yield
        finally:
            torch_onnx_logger.setLevel(level)


def _dynamic_shapes(graph: GraphPlan) -> tuple[Any, ...]:
    """``dynamic_shapes`` for ``graph.module``: one ``Dim`` per axis name, shared across inputs.

    Grouped as the module's ``forward`` takes them: one spec per named parameter, then one tuple
    for ``*args`` (the positional wrapper takes only ``*args``, the flat-cache one three names first).
    """
    dims: dict[str, Any] = {}
    specs = [
        {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in axes.items()}
        for axes in (graph.dynamic_axes.get(name, {}) for name in graph.input_names)
    ]
    parameters = inspect.signature(graph.module.forward).parameters.values()
    if not any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters):
        return tuple(specs)
    named = sum(parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for parameter in parameters)
    return (*specs[:named], tuple(specs[named:]))


def export_plan(plan: ExportPlan, output_dir: Path, options: OrtOptions) -> Path:
    """Export every graph of ``plan`` to ``output_dir/<graph>.onnx``; returns the main graph's file.

    ``optimize=True`` fuses transformer ops; ``dtype="int8"`` or ``"int4"`` quantises the float32
    export, which is written aside and removed afterwards.
    """
    quantized = options.compute_dtype in quantize.WEIGHT_ONLY
    paths = []
    for graph in plan.graphs:
        folder = output_dir / "float32" if quantized else output_dir
        folder.mkdir(parents=True, exist_ok=True)
        decoder = decoder_kind(plan, graph, options)
        if decoder == "fused":
            path = decoder_graph.build(plan.model, folder / f"{graph.name}.onnx")
        else:
            path = torch_to_onnx(graph, folder / f"{graph.name}.onnx", exporter=options.exporter, opset=options.opset)
        store_weights(path)
        fused = (
            fusion.fuse(path, plan.model.config, external_data=bool(external_data_files(path)))
            if options.optimize and decoder != "fused"
            else {}
        )
        if quantized:
            target = output_dir / path.name
            quantize.quantize(path, target, dtype=options.compute_dtype, weight_only=plan.task.kind.generates)
            shutil.rmtree(folder)
            path = target
            store_weights(path)
        metadata = {
            "task": plan.task.name,
            "dtype": options.compute_dtype,
            "exporter": "acceleron" if decoder == "fused" else options.exporter,
            "decoder": decoder,
            "fused": ",".join(sorted(fused)),
            "torch": distribution_version("torch") or "",
        }
        write_metadata(path, metadata)
        check_onnx(path)
        paths.append(path)
    return paths[0]


def decoder_kind(plan: ExportPlan, graph: GraphPlan, options: OrtOptions) -> str:
    """How ``graph`` is written: ``"fused"`` (a causal LM's decoder step from its weights), ``"traced"``
    (a causal LM's step through ``torch.onnx.export``) or ``""`` (any other graph: traced)."""
    if not isinstance(plan.task.kind, CausalLM) or options.decoder == "traced":
        return "traced" if isinstance(plan.task.kind, CausalLM) else ""
    reason = decoder_graph.unsupported_reason(plan.model)
    if reason is None and graph.input_names != CacheLayout.from_config(plan.model.config).input_names:
        reason = f"the graph's inputs {graph.input_names[:4]}... are not the flat decoder protocol"
    if reason is None:
        return "fused"
    if options.decoder == "fused":
        raise InvalidOptionError(
            f"decoder='fused' cannot write this model: {reason}. Use decoder='auto' (fused where possible) "
            "or decoder='traced'."
        )
    logger.info("acceleron[ort]: tracing the decoder step (no fused graph: %s)", reason)
    return "traced"


def torch_to_onnx(graph: GraphPlan, path: Path, *, exporter: str, opset: int | None) -> Path:
    """Export ``graph.module`` to ``path`` with the chosen exporter; returns ``path``."""
    # eval() on the module itself: export restores the module's training mode, and with it the model's.
    module = graph.module.eval()
    with _quiet_export(), torch.no_grad():
        if exporter == "torchscript":
            torch.onnx.export(
                module,
                graph.example_args,
                str(path),  # a str, not a Path: the exporter writes external data for >2GB models only then
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_axes=graph.dynamic_axes,
                opset_version=opset or TORCHSCRIPT_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        else:
            try:
                import onnxscript  # noqa: F401
            except ImportError as error:
                raise ExportError(
                    "exporter='dynamo' needs onnxscript: pip install 'acceleron-ort[dynamo]' "
                    "(or use the default exporter='torchscript')."
                ) from error
            torch.onnx.export(
                module,
                graph.example_args,
                str(path),
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_shapes=_dynamic_shapes(graph),
                opset_version=opset,
                dynamo=True,
                verbose=False,
                external_data=True,
                optimize=True,
            )
    if not path.is_file():
        raise ExportError(f"torch.onnx.export ({exporter}) wrote no {path.name}")
    return path


def store_weights(path: Path) -> None:
    """Keep large weights in one ``<name>.data`` file next to ``path``.

    Inline weights above :data:`EXTERNAL_DATA_THRESHOLD` move out; weights the exporter scattered
    over several files (the TorchScript exporter writes one per tensor for >2GB models) are
    gathered into one.
    """
    proto = onnx.load(str(path), load_external_data=False)
    data_name = path.name + ".data"
    locations = external_locations(proto)
    if locations == {data_name} or (not locations and path.stat().st_size <= EXTERNAL_DATA_THRESHOLD):
        return
    logger.info("acceleron[ort]: storing the weights of %s in %s", path.name, data_name)
    full = onnx.load(str(path))  # external data is read into memory, so the old files can go
    for location in locations | {data_name}:
        (path.parent / location).unlink(missing_ok=True)
    onnx.save_model(
        full,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )


def write_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Record how the file was made in its ``metadata_props`` (external data stays untouched)."""
    proto = onnx.load(str(path), load_external_data=False)
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(METADATA_PREFIX + key)
        if entry is None:
            entry = proto.metadata_props.add()
            entry.key = METADATA_PREFIX + key
        entry.value = str(value)
    onnx.save_model(proto, str(path))


def check_onnx(path: Path) -> None:
    """Run ``onnx.checker`` on the file (by path, so external data and >2GB models work)."""
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise ExportError(f"the exported {path.name} is not a valid ONNX model: {error}") from error
