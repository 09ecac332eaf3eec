"""The export step: the plan's graph prepared for the engine and dtype, traced and frozen, else the weights.

This module imports torch at import time; the backend imports it only inside export and load.
IPEX is imported only by :func:`import_ipex`, called only when the metadata says IPEX matches torch
(see :mod:`acceleron_ipex.engine`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from acceleron.backend import distribution_version
from acceleron_ipex import engine
from acceleron_ipex.artifacts import TORCHSCRIPT_FILE, WEIGHTS_FILE, Recipe, write_recipe

if TYPE_CHECKING:
    from acceleron.tasks import ExportPlan
    from acceleron_ipex.options import IpexOptions

logger = logging.getLogger("acceleron_ipex")

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: The largest relative L2 error a reduced-precision trace may have against the eager graph.
RELATIVE_ERROR = 0.05


def export_artifact(plan: ExportPlan, output_dir: Path, options: IpexOptions) -> Path:
    """Write the artifact of ``plan``'s graph and its recipe into ``output_dir``; returns the artifact's path.

    With ``compile`` the weights are saved and compiled at load time (compiled graphs are not portable
    files). Otherwise the graph's module is prepared for the engine and dtype, traced on its example
    inputs and frozen; if the trace fails, or gives other results than the eager module on the task's
    validation inputs (other batch sizes, lengths and past lengths), the weights are saved instead.
    """
    graph = plan.graph
    options.check_graph(graph)
    chosen, dtype = options.engine_to_run(), options.compute_dtype
    engine.warn_once(chosen, engine.choose_engine())
    recipe = Recipe(
        kind="torchscript",
        engine=chosen,
        dtype=dtype,
        inputs=list(graph.input_names),
        outputs=list(graph.output_names),
        task=plan.task.name,
        auto_class=plan.task.auto_class,
        graph=graph.name,
        compile=str(options.compile) if options.compile else None,
        versions={
            "torch": distribution_version("torch"),
            "intel-extension-for-pytorch": distribution_version(*engine.IPEX_DISTRIBUTIONS)
            if chosen == "ipex"
            else None,
            "acceleron-ipex": distribution_version("acceleron-ipex"),
        },
    )
    if options.compile:
        return _save_weights(plan, output_dir, recipe, note="")
    eager = prepare(graph.module, chosen, dtype)
    try:
        traced = trace_and_freeze(eager, graph.example_args, chosen, dtype)
        problem = _check_trace(traced, eager, plan, chosen, dtype)
    except Exception as error:  # any tracing failure means: keep the weights instead
        problem = f"tracing failed: {type(error).__name__}: {error}"
    if problem:
        logger.info("acceleron[ipex]: saving the weights instead of a TorchScript trace: %s", problem)
        return _save_weights(plan, output_dir, recipe, note=problem)
    traced.save(str(output_dir / TORCHSCRIPT_FILE))
    write_recipe(output_dir, recipe)
    return output_dir / TORCHSCRIPT_FILE


def _check_trace(
    traced: torch.jit.ScriptModule, eager: torch.nn.Module, plan: ExportPlan, engine_name: str, dtype: str
) -> str:
    """Empty when the trace reproduces the eager graph on every validation case of the task, else why not.

    float32 must agree within the core's tolerance for the task. In reduced precision a frozen trace
    rounds differently from eager through every layer (0.25 on SmolLM2's bfloat16 logits, measured), so
    each output must agree within the dtype's tolerance or within 5% relative L2 error; a trace that
    baked in a shape differs far more.
    """
    from acceleron.validate import tolerance_for

    tolerance = tolerance_for(plan.task, dtype)
    relative = None if dtype == "float32" else RELATIVE_ERROR
    for case in plan.task.kind.validation_cases(plan):
        if case.graph and case.graph != plan.graph.name:  # a case of another graph of the kind
            continue
        inputs = cast_floats(case.inputs, float_input_dtype(engine_name, dtype))
        args = [inputs[name] for name in plan.graph.input_names]
        with torch.inference_mode(), compute_context(engine_name, dtype):
            problem = outputs_agree(traced(*args), eager(*args), tolerance.atol, tolerance.rtol, relative)
        if problem:
            return f"the trace does not reproduce the eager graph on the {case.name} case: {problem}"
    return ""


def _save_weights(plan: ExportPlan, output_dir: Path, recipe: Recipe, note: str) -> Path:
    import safetensors.torch

    path = output_dir / WEIGHTS_FILE
    safetensors.torch.save_model(plan.model, str(path))
    plan.model.config.save_pretrained(output_dir)  # rebuilt from it, wherever the core puts the graph's folder
    write_recipe(output_dir, dataclasses.replace(recipe, kind="weights", note=note))
    return path


# ---- turning a PyTorch module into what runs ------------------------------------------------------


def import_ipex() -> Any:
    """Import intel_extension_for_pytorch. Call only when the engine choice says it matches torch."""
    import intel_extension_for_pytorch as ipex

    return ipex


@contextlib.contextmanager
def compute_context(engine_name: str, dtype: str) -> Iterator[None]:
    """Gradients off, and bfloat16 autocast for the ipex engine (float32 master weights, IPEX's own recipe)."""
    with torch.no_grad():
        if engine_name == "ipex" and dtype == "bfloat16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                yield
        else:
            yield


def prepare(module: torch.nn.Module, engine_name: str, dtype: str) -> torch.nn.Module:
    """The eager module computing in ``dtype`` on the engine; ``module`` itself is never changed."""
    module = module.eval()
    if dtype == "int8":
        # Dynamic int8 of every Linear (weights int8 per output channel, activations quantised per batch), in
        # both engines: IPEX's own int8 needs calibration data, which an export from weights alone lacks.
        # Per-channel weights keep 96.7% of the sentiment classifier's labels, per-tensor 94.9% (measured).
        # torch.ao.quantization is deprecated in favour of torchao (not a dependency); it still works in 2.13.
        quantization: Any = torch.ao.quantization
        module = linear_layers(module)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_).*")
            return quantization.quantize_dynamic(
                module, {torch.nn.Linear: quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
            )
    if engine_name == "ipex":
        optimized: torch.nn.Module = import_ipex().optimize(module, dtype=TORCH_DTYPES[dtype])
        return optimized
    if dtype == "bfloat16":
        return copy.deepcopy(module).to(torch.bfloat16)  # the caller's float32 module stays as it is
    return module


def linear_layers(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose transformers ``Conv1D`` layers (GPT-2's projections) are ``nn.Linear``.

    ``Conv1D`` is a Linear with a transposed weight; as a Linear, dynamic int8 quantises it too.
    """
    module = copy.deepcopy(module)
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers without Conv1D
        return module
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1], bias=child.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear.eval())
    return module


def trace_and_freeze(
    module: torch.nn.Module, example: Sequence[torch.Tensor], engine_name: str, dtype: str
) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` then ``torch.jit.freeze`` (weights folded into the graph as constants).

    Floating examples are cast to the dtype the module takes. TracerWarnings are silenced: whether a
    trace generalises is checked on other shapes by :func:`export_artifact`. So are transformers'
    deprecation warnings of properties that tracing merely looks at (``hasattr``).
    """
    float_dtype = float_input_dtype(engine_name, dtype)
    args = tuple(value.to(float_dtype) if value.is_floating_point() else value for value in example)
    with torch.inference_mode(False), compute_context(engine_name, dtype), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6", category=FutureWarning)
        traced = torch.jit.trace(module.eval(), args, check_trace=False)
        return torch.jit.freeze(traced)


def compile_module(module: torch.nn.Module, mode: str) -> Callable[..., Any]:
    """``torch.compile`` with inductor and freezing, dynamic in batch and sequence length."""
    options: dict[str, Any] = {"freezing": True}
    return torch.compile(module, mode=None if mode == "default" else mode, dynamic=True, options=options)


def cast_floats(inputs: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating inputs (pixel values, waveforms, a past) in ``dtype``; integer ids untouched."""
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


def float_input_dtype(engine_name: str, dtype: str) -> torch.dtype:
    """The dtype the prepared module takes floating inputs in: bfloat16 only for the torch engine's bf16 weights."""
    return torch.bfloat16 if engine_name == "torch" and dtype == "bfloat16" else torch.float32


def outputs_agree(
    candidate: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
    atol: float,
    rtol: float,
    relative: float | None = None,
) -> str:
    """Empty when two output tuples agree in shape and values (each output within ``atol``/``rtol``, or
    within ``relative`` L2 error when given), else what differs."""
    if len(candidate) != len(reference):
        return f"{len(candidate)} outputs instead of {len(reference)}"
    for index, (got, want) in enumerate(zip(candidate, reference)):
        if got.shape != want.shape:
            return f"output {index} has shape {tuple(got.shape)} instead of {tuple(want.shape)}"
        got, want = got.float(), want.float()
        if want.numel() == 0 or torch.allclose(got, want, atol=atol, rtol=rtol):
            continue
        error = float((got - want).norm() / want.norm().clamp_min(1e-12))
        if relative is None or not error <= relative:
            diff = float((got - want).abs().max())
            return f"output {index} differs from the eager graph by up to {diff:.3g} ({error:.3g} relative L2)"
    return ""
