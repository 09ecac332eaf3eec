"""PyTorch -> OpenVINO IR, straight through ``openvino.convert_model`` (no ONNX detour).

Input names, input dtypes and dynamic dimensions come from acceleron's task table; the IR's inputs
and outputs carry the task's tensor names, so a session feeds and reads them by name.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.errors import ExportError

if TYPE_CHECKING:
    import openvino
    import torch
    from transformers import PreTrainedModel

    from acceleron.tasks import TaskSpec


IR_NAME = "openvino_model.xml"
#: Where NNCF records a weight compression in the model's runtime info.
NNCF_COMPRESSION_RT_INFO = ["nncf", "weight_compression"]


def convert_pytorch(
    model: PreTrainedModel, task: TaskSpec, example_inputs: Mapping[str, torch.Tensor]
) -> openvino.Model:
    """Convert ``model`` to an ``openvino.Model`` whose inputs and outputs are named after the task's tensors."""
    import openvino
    import torch

    input_names = list(example_inputs)
    axes = task.dynamic_axes(input_names)
    examples = tuple(example_inputs.values())
    with torch.inference_mode(False), torch.no_grad():
        produced = model(**example_inputs)
    output_names = [name for name in task.output_names if produced.get(name) is not None]
    if not output_names:
        raise ExportError(
            f"{type(model).__name__} returns none of {', '.join(task.output_names)} for {task.name}; "
            "it cannot serve this task."
        )
    shapes = [
        (
            openvino.PartialShape(
                [-1 if axis in axes.get(name, {}) else size for axis, size in enumerate(tensor.shape)]
            ),
            _element_type(tensor.dtype),
        )
        for name, tensor in example_inputs.items()
    ]
    wrapper = positional_wrapper(model, input_names, output_names)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        ov_model = openvino.convert_model(wrapper, example_input=examples, input=shapes)
    name_ports(ov_model, input_names, output_names)
    return ov_model


def name_ports(model: openvino.Model, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Give the model's inputs and outputs exactly these tensor names, in order."""
    if len(model.inputs) != len(input_names) or len(model.outputs) != len(output_names):
        raise ExportError(
            f"the converted graph has {len(model.inputs)} inputs and {len(model.outputs)} outputs; expected "
            f"{list(input_names)} and {list(output_names)}. Report this with the model's architecture."
        )
    for port, name in zip(model.inputs, input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, output_names):
        port.get_tensor().set_names({name})


def is_weight_compressed(model: openvino.Model) -> bool:
    """Whether NNCF compressed this model's weights (it records that in the runtime info)."""
    return bool(model.has_rt_info(NNCF_COMPRESSION_RT_INFO))


def compress_weights_int8(model: openvino.Model) -> openvino.Model:
    """8-bit weight compression with NNCF (weights int8, activations in the device's precision)."""
    try:
        import nncf
    except ImportError as error:
        raise ExportError(
            "dtype='int8' needs NNCF for weight compression: pip install 'acceleron-openvino[int8]'."
        ) from error
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # NNCF logs a statistics table per compression at INFO
    try:
        compressed: openvino.Model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    finally:
        nncf.set_log_level(level)
    return compressed


def save_ir(model: openvino.Model, output_dir: Path) -> Path:
    """Write ``openvino_model.xml`` and ``.bin`` into ``output_dir``, weights kept in float32 for exactness."""
    import openvino

    target = output_dir / IR_NAME
    openvino.save_model(model, str(target), compress_to_fp16=False)
    return target


def _element_type(dtype: torch.dtype) -> openvino.Type:
    import openvino
    import torch

    types = {
        torch.int64: openvino.Type.i64,
        torch.int32: openvino.Type.i32,
        torch.float32: openvino.Type.f32,
        torch.float16: openvino.Type.f16,
        torch.bfloat16: openvino.Type.bf16,
        torch.bool: openvino.Type.boolean,
    }
    if dtype not in types:
        raise ExportError(f"example input of dtype {dtype} has no OpenVINO element type mapping.")
    return types[dtype]


def positional_wrapper(inner: Any, input_names: list[str], output_names: list[str]) -> torch.nn.Module:
    """``inner`` taking its inputs positionally and returning the task's outputs as a tuple, for tracing."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = self.inner(**dict(zip(input_names, args)))
            return tuple(outputs[name] for name in output_names)

    return Positional().eval()
