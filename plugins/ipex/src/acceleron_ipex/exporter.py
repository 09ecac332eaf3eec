"""The export step: save a frozen TorchScript trace where tracing applies, else the weights (imports torch)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from acceleron.backend import distribution_version
from acceleron_ipex.build import (
    PositionalOutputs,
    cast_floats,
    compute_context,
    float_input_dtype,
    outputs_agree,
    prepare,
    trace_and_freeze,
)
from acceleron_ipex.engine import IPEX_DISTRIBUTIONS
from acceleron_ipex.recipe import TORCHSCRIPT_FILE, WEIGHTS_FILE, Recipe, write_recipe

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from acceleron.tasks import TaskSpec

logger = logging.getLogger("acceleron_ipex")


def export_artifact(
    model: PreTrainedModel,
    task: TaskSpec,
    example_inputs: Mapping[str, torch.Tensor],
    output_dir: Path,
    *,
    engine: str,
    dtype: str,
    compile_mode: str | None,
) -> Path:
    """Write the artifact and its recipe into ``output_dir``; returns the artifact's path.

    With ``compile_mode`` the weights are saved and compiled at load time (compiled graphs are not
    portable files). Otherwise the model is prepared for ``engine`` and ``dtype``, traced on
    ``example_inputs`` and frozen; if the trace fails, or gives other results than the eager model
    on inputs of another batch size and length, the weights are saved instead (the recipe says why).
    """
    names = list(example_inputs)
    recipe = Recipe(
        kind="torchscript",
        engine=engine,
        dtype=dtype,
        inputs=names,
        outputs=list(task.output_names),
        task=task.name,
        auto_class=task.auto_class,
        compile=compile_mode,
        versions={
            "torch": distribution_version("torch"),
            "intel-extension-for-pytorch": distribution_version(*IPEX_DISTRIBUTIONS) if engine == "ipex" else None,
            "acceleron-ipex": distribution_version("acceleron-ipex"),
        },
    )
    if compile_mode:
        return _save_weights(model, output_dir, recipe, note="")
    eager = PositionalOutputs(prepare(model, engine, dtype), names, recipe.outputs).eval()
    float_dtype = float_input_dtype(engine, dtype)
    example = cast_floats(example_inputs, float_dtype)
    try:
        traced = trace_and_freeze(eager, [example[name] for name in names], engine, dtype)
        problem = _check_trace(traced, eager, task, model, names, engine, dtype)
    except Exception as error:  # any tracing failure means: keep the weights instead
        problem = f"tracing failed: {type(error).__name__}: {error}"
    if problem:
        logger.info("acceleron[ipex]: saving the weights instead of a TorchScript trace: %s", problem)
        return _save_weights(model, output_dir, recipe, note=problem)
    traced.save(str(output_dir / TORCHSCRIPT_FILE))
    write_recipe(output_dir, recipe)
    return output_dir / TORCHSCRIPT_FILE


def _check_trace(
    traced: torch.jit.ScriptModule,
    eager: torch.nn.Module,
    task: TaskSpec,
    model: PreTrainedModel,
    names: list[str],
    engine: str,
    dtype: str,
) -> str:
    """Empty when the trace reproduces the eager model on another batch size and length, else why not."""
    from acceleron.validate import tolerance_for

    inputs = cast_floats(task.validation_inputs(model), float_input_dtype(engine, dtype))
    args = [inputs[name] for name in names]
    with torch.inference_mode(), compute_context(engine, dtype):
        expected = eager(*args)
        got = traced(*args)
    tolerance = tolerance_for(task, dtype)
    problem = outputs_agree(got, expected, tolerance.atol, tolerance.rtol)
    return f"the trace does not generalise to other input shapes: {problem}" if problem else ""


def _save_weights(model: PreTrainedModel, output_dir: Path, recipe: Recipe, note: str) -> Path:
    import dataclasses

    import safetensors.torch

    path = output_dir / WEIGHTS_FILE
    safetensors.torch.save_model(model, str(path))
    write_recipe(output_dir, dataclasses.replace(recipe, kind="weights", note=note))
    return path
