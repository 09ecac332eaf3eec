"""The session: an artifact loaded as its recipe says, run once per forward (imports torch)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from acceleron.backend import Session
from acceleron.errors import AcceleronError
from acceleron_ipex import engine
from acceleron_ipex.artifacts import Recipe, read_recipe
from acceleron_ipex.export import cast_floats, compile_module, compute_context, float_input_dtype, import_ipex, prepare

if TYPE_CHECKING:
    from acceleron.tasks import TaskSpec
    from acceleron_ipex.options import IpexOptions

logger = logging.getLogger("acceleron_ipex")
_threads_lock = threading.Lock()


class IpexSession(Session):
    """A callable taking the recipe's inputs positionally and returning a tuple ordered as its outputs."""

    def __init__(self, module: Callable[..., Any], recipe: Recipe, mode: str, options: IpexOptions) -> None:
        super().__init__(input_names=recipe.inputs, output_names=recipe.outputs, options=options)
        self.module = module
        self.recipe = recipe
        #: "torchscript" (a frozen trace), "eager" (the prepared PyTorch graph) or "compile" (torch.compile).
        self.mode = mode
        self.float_dtype = float_input_dtype(recipe.engine, recipe.dtype)
        self.input_dtype = "bfloat16" if self.float_dtype == torch.bfloat16 else "float32"

    @property
    def compute_dtype(self) -> str:
        """The artifact's precision (a saved int8 artifact runs int8 whatever dtype was asked for)."""
        return self.recipe.dtype

    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every output by name, in float32, except a cache (``present.*``): it stays in the dtype the graph
        computes in (bfloat16 weights keep a bfloat16 cache), so that no step copies the whole cache."""
        args = cast_floats({name: inputs[name] for name in self.input_names}, self.float_dtype)
        with torch.inference_mode(), compute_context(self.recipe.engine, self.recipe.dtype):
            result = self.module(*args.values())
        return {
            name: value if name.startswith("present.") else value.float()
            for name, value in zip(self.output_names, result)
        }

    def describe(self) -> dict[str, Any]:
        made, choice = self.recipe, engine.choose_engine()
        reason = choice.reason
        if made.engine != choice.engine:
            reason = f"the artifact was made by the {made.engine} engine (here: {choice.reason})"
        return {
            "device": "cpu",
            "dtype": made.dtype,
            "engine": made.engine,
            "engine_reason": reason,
            "mode": self.mode,
            "compile": made.compile,
            "num_threads": torch.get_num_threads(),
            "torch": choice.torch_version,
            "intel-extension-for-pytorch": choice.ipex_version if made.engine == "ipex" else None,
            **({"note": made.note} if made.note else {}),
        }


def load_session(artifact: Path, task: TaskSpec, options: IpexOptions) -> IpexSession:
    """Load ``artifact`` as its recipe says. IPEX is imported only for artifacts made by the ipex engine.

    Differences from the options asked for (another dtype, say) are the core's to report: the artifact
    runs as it was made.
    """
    made = read_recipe(artifact.parent)
    choice = engine.choose_engine()
    if made.engine == "ipex" and not choice.ipex_usable:
        raise AcceleronError(
            f"this artifact was made by the ipex engine and needs IPEX, which cannot run here: {choice.reason} "
            "Export it again from the PyTorch weights (export=True) to use the torch engine."
        )
    engine.warn_once(made.engine, choice)
    _set_threads(options.num_threads)
    if made.engine == "ipex":
        import_ipex()  # registers the custom ops an IPEX TorchScript graph calls
    if made.kind == "torchscript":
        try:
            module = torch.jit.load(str(artifact), map_location="cpu")
        except RuntimeError as error:
            raise AcceleronError(
                f"{artifact} is not a TorchScript file this torch {torch.__version__} can load ({error}); "
                "export the model again with export=True."
            ) from error
        return IpexSession(module.eval(), made, "torchscript", options)
    prepared = prepare(_rebuild_graph(artifact, task, made.graph), made.engine, made.dtype)
    if made.compile:
        return IpexSession(compile_module(prepared, made.compile), made, "compile", options)
    return IpexSession(prepared, made, "eager", options)


def _rebuild_graph(weights: Path, task: TaskSpec, graph: str = "") -> torch.nn.Module:
    """The float32 graph module of the core's plan, from ``config.json`` and the saved weights next to it."""
    import safetensors.torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(weights.parent))
        model = getattr(transformers, task.auto_class).from_config(config)
        safetensors.torch.load_model(model, str(weights))
    except (OSError, ValueError, RuntimeError) as error:
        raise AcceleronError(
            f"cannot rebuild the {task.auto_class} from {weights} and its config.json ({error}); "
            "export the model again with export=True."
        ) from error
    return task.kind.graph_plan(task, model.eval(), graph).module


def _set_threads(threads: int | None) -> None:
    """torch's intra-op thread count is process-wide: set it, and say so when it changes."""
    if not threads:
        return
    with _threads_lock:
        if torch.get_num_threads() != threads:
            logger.warning(
                "acceleron[ipex]: num_threads=%s sets torch's intra-op threads for the whole process", threads
            )
            torch.set_num_threads(int(threads))
