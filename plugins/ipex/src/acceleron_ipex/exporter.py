"""The export step: save a frozen TorchScript trace where tracing applies, else the weights (imports torch)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

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
    if task.generative:
        return _export_causal_lm(
            model, task, example_inputs, output_dir, engine=engine, dtype=dtype, compile_mode=compile_mode
        )
    names = list(example_inputs)
    recipe = _recipe(task, engine, dtype, names, list(task.output_names), compile_mode=compile_mode)
    if compile_mode:
        return _save_weights(model, output_dir, recipe, note="")
    eager = PositionalOutputs(prepare(model, engine, dtype), names, recipe.outputs).eval()
    float_dtype = float_input_dtype(engine, dtype)
    example = cast_floats(example_inputs, float_dtype)

    def check(traced: torch.jit.ScriptModule) -> str:
        return _check_trace(traced, eager, task, model, names, engine, dtype)

    return _trace_or_weights(model, eager, [example[name] for name in names], output_dir, recipe, check)


def _trace_or_weights(
    model: PreTrainedModel,
    eager: torch.nn.Module,
    example: list[torch.Tensor],
    output_dir: Path,
    recipe: Recipe,
    check: Callable[[torch.jit.ScriptModule], str],
) -> Path:
    """Save the traced and frozen ``eager`` if ``check`` finds no problem with it, else the weights."""
    try:
        traced = trace_and_freeze(eager, example, recipe.engine, recipe.dtype)
        problem = check(traced)
    except Exception as error:  # any tracing failure means: keep the weights instead
        problem = f"tracing failed: {type(error).__name__}: {error}"
    if problem:
        logger.info("acceleron[ipex]: saving the weights instead of a TorchScript trace: %s", problem)
        return _save_weights(model, output_dir, recipe, note=problem)
    traced.save(str(output_dir / TORCHSCRIPT_FILE))
    write_recipe(output_dir, recipe)
    return output_dir / TORCHSCRIPT_FILE


def _recipe(
    task: TaskSpec, engine: str, dtype: str, inputs: list[str], outputs: list[str], *, compile_mode: str | None
) -> Recipe:
    """The recipe of a TorchScript artifact (``_save_weights`` turns it into a weights one)."""
    return Recipe(
        kind="torchscript",
        engine=engine,
        dtype=dtype,
        inputs=inputs,
        outputs=outputs,
        task=task.name,
        auto_class=task.auto_class,
        compile=compile_mode,
        versions={
            "torch": distribution_version("torch"),
            "intel-extension-for-pytorch": distribution_version(*IPEX_DISTRIBUTIONS) if engine == "ipex" else None,
            "acceleron-ipex": distribution_version("acceleron-ipex"),
        },
    )


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


def _export_causal_lm(
    model: PreTrainedModel,
    task: TaskSpec,
    example_inputs: Mapping[str, torch.Tensor],
    output_dir: Path,
    *,
    engine: str,
    dtype: str,
    compile_mode: str | None,
) -> Path:
    """A decoder step on the flat KV-cache protocol (:mod:`acceleron.kv_cache`): trace + freeze, else the weights.

    The step is ``FlatCacheCausalLM`` around the prepared model (transformers' own ``DynamicCache`` inside,
    so one graph serves the prefill and every decode step). The trace is kept only when it reproduces the
    eager step on a prefill and a decode step of other batch sizes and past lengths than it was traced on.
    """
    from acceleron.errors import InvalidOptionError
    from acceleron.kv_cache import CacheLayout, FlatCacheCausalLM, validation_cases
    from acceleron.kv_cache import example_inputs as flat_example

    if compile_mode:
        raise InvalidOptionError(
            "compile is not supported for text-generation on the ipex backend; pass compile=False."
        )
    layout = CacheLayout.from_config(model.config)
    names = layout.input_names
    recipe = _recipe(task, engine, dtype, names, layout.output_names, compile_mode=None)
    eager = FlatCacheCausalLM(cast("PreTrainedModel", prepare(model, engine, dtype))).eval()
    float_dtype = float_input_dtype(engine, dtype)
    if not set(names) <= set(example_inputs):  # not the flat example: make one
        example_inputs = flat_example(model.config)
    example = cast_floats(example_inputs, float_dtype)

    def check(traced: torch.jit.ScriptModule) -> str:
        for case, inputs in validation_cases(model.config).items():
            problem = _check_step(traced, eager, cast_floats(inputs, float_dtype), names, task, engine, dtype)
            if problem:
                return f"the trace does not reproduce the {case} step: {problem}"
        return ""

    return _trace_or_weights(model, eager, [example[name] for name in names], output_dir, recipe, check)


def _check_step(
    traced: torch.jit.ScriptModule,
    eager: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    names: list[str],
    task: TaskSpec,
    engine: str,
    dtype: str,
) -> str:
    """Empty when the traced step gives the eager step's logits and cache within the validation tolerance.

    A frozen trace fuses operations, so its float32 logits differ from eager ones by rounding (up to
    1.3e-4 on SmolLM2's logits, measured); a trace that baked in a shape differs far more.
    """
    from acceleron.validate import tolerance_for

    args = [inputs[name] for name in names]
    with torch.inference_mode(), compute_context(engine, dtype):
        expected = eager(*args)
        got = traced(*args)
    if dtype != "float32":
        # Reduced precision: the trace rounds differently from eager through every layer (0.25 on SmolLM2's
        # bfloat16 logits, measured), so compare shapes and the relative error of each output instead.
        return _roughly_agree(got, expected, RELATIVE_ERROR)
    tolerance = tolerance_for(task, dtype)
    return outputs_agree(got, expected, tolerance.atol, tolerance.rtol)


#: The largest relative L2 error a reduced-precision trace may have against the eager step.
RELATIVE_ERROR = 0.05


def _roughly_agree(candidate: tuple[torch.Tensor, ...], reference: tuple[torch.Tensor, ...], limit: float) -> str:
    """Empty when the outputs have the same shapes and each is within ``limit`` relative L2 error, else what differs."""
    if len(candidate) != len(reference):
        return f"{len(candidate)} outputs instead of {len(reference)}"
    for index, (got, want) in enumerate(zip(candidate, reference)):
        if got.shape != want.shape:
            return f"output {index} has shape {tuple(got.shape)} instead of {tuple(want.shape)}"
        if want.numel() == 0:
            continue
        error = float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12))
        if not error <= limit:
            return f"output {index} differs from the eager model by {error:.3g} (relative L2)"
    return ""


def _save_weights(model: PreTrainedModel, output_dir: Path, recipe: Recipe, note: str) -> Path:
    import dataclasses

    import safetensors.torch

    path = output_dir / WEIGHTS_FILE
    safetensors.torch.save_model(model, str(path))
    write_recipe(output_dir, dataclasses.replace(recipe, kind="weights", note=note))
    return path
