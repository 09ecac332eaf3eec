"""Loading an artifact into a session, and running inputs through it (imports torch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acceleron.errors import AcceleronError
from acceleron_ipex.build import (
    PositionalOutputs,
    cast_floats,
    compile_module,
    compute_context,
    float_input_dtype,
    import_ipex,
    prepare,
)
from acceleron_ipex.recipe import Recipe


@dataclass(frozen=True)
class Session:
    """What one loaded model runs: a callable taking the recipe's inputs positionally, returning a tuple."""

    module: Callable[..., Any]
    recipe: Recipe
    #: "torchscript" (a frozen trace), "eager" (the prepared PyTorch model) or "compile" (torch.compile).
    mode: str

    @property
    def float_dtype(self) -> torch.dtype:
        return float_input_dtype(self.recipe.engine, self.recipe.dtype)


def load_session(artifact: Path, recipe: Recipe) -> Session:
    """Load ``artifact`` as its recipe says. IPEX is imported only for artifacts made by the ipex engine."""
    if recipe.engine == "ipex":
        import_ipex()  # registers the custom ops an IPEX TorchScript graph calls
    if recipe.kind == "torchscript":
        try:
            module = torch.jit.load(str(artifact), map_location="cpu")
        except RuntimeError as error:
            raise AcceleronError(
                f"{artifact} is not a TorchScript file this torch {torch.__version__} can load ({error}); "
                "export the model again with export=True."
            ) from error
        return Session(module.eval(), recipe, "torchscript")
    model = rebuild_model(artifact, recipe)
    wrapped = PositionalOutputs(prepare(model, recipe.engine, recipe.dtype), recipe.inputs, recipe.outputs)
    if recipe.compile:
        return Session(compile_module(wrapped, recipe.compile), recipe, "compile")
    return Session(wrapped, recipe, "eager")


def rebuild_model(weights: Path, recipe: Recipe) -> torch.nn.Module:
    """The float32 PyTorch model from ``config.json`` and the saved weights next to it."""
    import safetensors.torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(weights.parent))
        model = getattr(transformers, recipe.auto_class).from_config(config)
        safetensors.torch.load_model(model, str(weights))
    except (OSError, ValueError, RuntimeError) as error:
        raise AcceleronError(
            f"cannot rebuild the {recipe.auto_class} from {weights} and its config.json ({error}); "
            "export the model again with export=True."
        ) from error
    return model.eval()


def run(session: Session, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``inputs`` through the session; outputs by name, in float32. Safe from several threads at once."""
    recipe = session.recipe
    args = [_input(name, inputs) for name in recipe.inputs]
    cast = cast_floats(dict(zip(recipe.inputs, args)), session.float_dtype)
    with torch.inference_mode(), compute_context(recipe.engine, recipe.dtype):
        result = session.module(*(cast[name] for name in recipe.inputs))
    return {name: tensor.float() for name, tensor in zip(recipe.outputs, result)}


def _input(name: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    value = inputs.get(name)
    if value is not None:
        return value
    ids = inputs.get("input_ids")
    # The model's own defaults when a tokenizer leaves these out: no padding, one segment.
    if ids is not None and name == "attention_mask":
        return torch.ones_like(ids)
    if ids is not None and name == "token_type_ids":
        return torch.zeros_like(ids)
    raise AcceleronError(
        f"the ipex model needs the input {name!r} but got only {', '.join(sorted(inputs)) or 'none'}; "
        "pass the tokenizer's or processor's full output."
    )
