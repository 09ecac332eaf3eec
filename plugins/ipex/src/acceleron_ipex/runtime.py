"""Loading an artifact into a session, and running inputs through it (imports torch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: The auto class of text-generation recipes: their session runs one step of the flat KV-cache protocol.
CAUSAL_LM = "AutoModelForCausalLM"


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
    prepared = prepare(model, recipe.engine, recipe.dtype)
    if recipe.auto_class == CAUSAL_LM:
        from acceleron.kv_cache import FlatCacheCausalLM

        if recipe.compile:
            raise AcceleronError(f"{artifact}: compile is not supported for text-generation; export it again.")
        return Session(FlatCacheCausalLM(cast("PreTrainedModel", prepared)).eval(), recipe, "eager")
    wrapped = PositionalOutputs(prepared, recipe.inputs, recipe.outputs)
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


def run(session: Session, inputs: Mapping[str, torch.Tensor], generative: bool = False) -> dict[str, torch.Tensor]:
    """Run ``inputs`` through the session; outputs by name. Safe from several threads at once.

    Outputs are float32, except a decoder step's ``present.*`` cache tensors: they stay in the dtype the
    model computes in (bfloat16 weights keep a bfloat16 cache), so that no step copies the whole cache.
    """
    recipe = session.recipe
    args = [_input(name, inputs) for name in recipe.inputs]
    cast = cast_floats(dict(zip(recipe.inputs, args)), session.float_dtype)
    with torch.inference_mode(), compute_context(recipe.engine, recipe.dtype):
        result = session.module(*(cast[name] for name in recipe.inputs))
    if generative:
        return {
            name: tensor if name.startswith("present.") else tensor.float()
            for name, tensor in zip(recipe.outputs, result)
        }
    return {name: tensor.float() for name, tensor in zip(recipe.outputs, result)}


def _input(name: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    value = inputs.get(name)
    if value is not None:
        return value
    ids = inputs.get("input_ids")
    mask = inputs.get("attention_mask")
    if ids is not None and mask is not None and name == "position_ids":
        from acceleron.kv_cache import position_ids_for

        return position_ids_for(mask, ids.shape[1])  # left padding: count only the unmasked tokens
    # The model's own defaults when a tokenizer leaves these out: no padding, one segment.
    if ids is not None and name == "attention_mask":
        past = inputs.get("past_key_values.0.key")
        if past is not None:  # a decoder step: the mask covers the cache and the new tokens
            return torch.ones(ids.shape[0], past.shape[2] + ids.shape[1], dtype=ids.dtype)
        return torch.ones_like(ids)
    if ids is not None and name == "token_type_ids":
        return torch.zeros_like(ids)
    raise AcceleronError(
        f"the ipex model needs the input {name!r} but got only {', '.join(sorted(inputs)) or 'none'}; "
        "pass the tokenizer's or processor's full output."
    )
