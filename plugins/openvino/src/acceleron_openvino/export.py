"""The export hook: each graph of the core's plan -> OpenVINO IR, straight through ``openvino.convert_model``.

Input names, dtypes and dynamic axes come from the plan; the IR's inputs and outputs carry the
plan's tensor names, so a session feeds and reads them by name. ``dtype="int8"`` and ``"int4"``
compress the weights with NNCF; other dtypes are compile hints and leave the IR in float32.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.errors import AcceleronError, ExportError
from acceleron_openvino.artifacts import error_reason, ir_name
from acceleron_openvino.stateful import make_stateful

if TYPE_CHECKING:
    import openvino

    from acceleron.tasks import ExportPlan, GraphPlan
    from acceleron_openvino.options import OpenVINOOptions

#: Where NNCF records a weight compression in the model's runtime info.
NNCF_COMPRESSION_RT_INFO = ["nncf", "weight_compression"]


def export_plan(plan: ExportPlan, output_dir: Path, options: OpenVINOOptions) -> Path:
    """Convert and save every graph of ``plan``; returns the main graph's IR."""
    import openvino

    saved = []
    for graph in plan.graphs:
        model = convert_graph(graph, f"{type(plan.model).__name__} for {plan.task.name}")
        make_stateful(model)  # a flat KV cache becomes the request's variables (stateful.py)
        if options.dtype in WEIGHT_COMPRESSION:
            model = compress_weights(model, options.dtype)
        target = output_dir / ir_name(graph.name)
        openvino.save_model(model, str(target), compress_to_fp16=False)  # float32 weights, for exactness
        saved.append(target)
    return saved[0]


def convert_graph(graph: GraphPlan, what: str) -> openvino.Model:
    """``graph.module`` traced on its example inputs, its inputs and outputs named after the plan's."""
    import openvino
    import torch

    if list(graph.example_inputs) != list(graph.input_names):
        raise ExportError(
            f"the example inputs of graph {graph.name!r} must be {graph.input_names}, got {list(graph.example_inputs)}."
        )
    # Element types come from the example inputs; only the dynamic axes are set here.
    shapes = [
        openvino.PartialShape(
            [-1 if axis in graph.dynamic_axes.get(name, {}) else size for axis, size in enumerate(x.shape)]
        )
        for name, x in graph.example_inputs.items()
    ]
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        try:
            model = openvino.convert_model(graph.module, example_input=graph.example_args, input=shapes)
        except AcceleronError:
            raise
        except Exception as error:  # OpenVINO raises its own OpConversionFailure, not a RuntimeError subclass
            raise ExportError(f"OpenVINO could not convert {what}: {error_reason(error)}") from error
    name_ports(model, graph.input_names, graph.output_names)
    return model


def name_ports(model: openvino.Model, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Give the model's inputs and outputs exactly these tensor names, in order."""
    if len(model.inputs) != len(input_names) or len(model.outputs) != len(output_names):
        raise ExportError(
            f"the converted graph has {len(model.inputs)} inputs and {len(model.outputs)} outputs; expected "
            f"{list(input_names)} and {list(output_names)}. Report this with the model's architecture."
        )
    for port, name in zip([*model.inputs, *model.outputs], [*input_names, *output_names]):
        port.get_tensor().set_names({name})


def is_weight_compressed(model: openvino.Model) -> bool:
    """Whether NNCF compressed this model's weights (it records that in the runtime info)."""
    return bool(model.has_rt_info(NNCF_COMPRESSION_RT_INFO))


#: NNCF's ``compress_weights`` arguments per dtype (modes by name: NNCF is imported only to compress).
#: int8: every weight 8-bit asymmetric, per output channel. int4: 4-bit symmetric groups of 32 weights
#: along the input axis; NNCF's default ``all_layers=False`` keeps the embedding and the last MatMul
#: (the LM head) in int8. SmolLM2-135M-Instruct, one thread, process CPU ms per decoded token and
#: top-1 agreement with PyTorch float32 on chat tokens (teacher-forced; float32 IR: 78.2 ms, 99.4%):
#: int4 symmetric 45.3 ms, 73.4%; asymmetric 47.8, 74.2%; symmetric with all_layers 45.2, 69.9%;
#: asymmetric with all_layers 45.4, 65.6%; int8 50.5, 93.6%. The plugin README has the table.
WEIGHT_COMPRESSION: dict[str, dict[str, Any]] = {
    "int8": {"mode": "INT8_ASYM"},
    "int4": {"mode": "INT4_SYM", "group_size": 32, "ratio": 1.0},
}


def compressed_dtype(model: openvino.Model) -> str | None:
    """``int8`` or ``int4`` for a model NNCF compressed (its runtime info says how), else None."""
    if not is_weight_compressed(model):
        return None
    try:
        mode = str(model.get_rt_info([*NNCF_COMPRESSION_RT_INFO, "mode"]).astype(str)).lower()
    except RuntimeError:  # compressed without a recorded mode: NNCF's default, int8
        return "int8"
    return "int4" if mode.startswith(("int4", "nf4", "e2m1", "mxfp4")) else "int8"


def compress_weights(model: openvino.Model, dtype: str) -> openvino.Model:
    """Weight compression to ``dtype`` (int8 or int4) with NNCF; activations stay in the device's precision
    (the CPU quantises them per group at run time: ``DYNAMIC_QUANTIZATION_GROUP_SIZE``)."""
    try:
        import nncf
    except ImportError as error:
        raise ExportError(
            f"dtype={dtype!r} needs NNCF for weight compression: pip install 'acceleron-openvino[int8]'."
        ) from error
    settings = dict(WEIGHT_COMPRESSION[dtype])
    mode = nncf.CompressWeightsMode[settings.pop("mode")]
    if "group_size" in settings:
        # A weight whose input size the group does not divide keeps the backup precision (int8), rather than
        # failing the export (NNCF's default).
        settings["advanced_parameters"] = nncf.AdvancedCompressionParameters(
            group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST
        )
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # NNCF logs a statistics table per compression at INFO
    try:
        compressed: openvino.Model = nncf.compress_weights(model, mode=mode, **settings)
    finally:
        nncf.set_log_level(level)
    return compressed
