"""``IpexBackend``: the ``ipex`` accelerator, with two engines behind one backend.

* ``ipex``: Intel Extension for PyTorch, when it is installed and its major.minor matches torch's
  (``ipex.optimize``, bfloat16 autocast, TorchScript trace + freeze);
* ``torch``: otherwise, PyTorch's own CPU path (bfloat16 weights where the CPU computes bfloat16
  natively, TorchScript trace + freeze, opt-in ``torch.compile``, dynamic int8 quantisation).

The engine is decided from package metadata, so a mismatched IPEX is never imported.
``text-generation`` runs one decoder step on the flat KV-cache protocol (:mod:`acceleron.kv_cache`).
Options: ``dtype`` (``auto`` = bfloat16 on CPUs with AMX or AVX-512-BF16, else float32; ``float32``,
``bfloat16``, ``int8``), ``num_threads``, ``device`` (``cpu``), ``engine`` (``auto``, ``torch``,
``ipex``) and ``compile`` (False, True or an inductor mode; torch engine only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Availability, Backend, distribution_version
from acceleron.errors import AcceleronError, InvalidOptionError
from acceleron_ipex import cpu, engine, recipe

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from acceleron.tasks import TaskSpec
    from acceleron_ipex.runtime import Session

logger = logging.getLogger("acceleron_ipex")

TASKS = frozenset(
    {
        "feature-extraction",
        "text-classification",
        "zero-shot-classification",
        "token-classification",
        "question-answering",
        "fill-mask",
        "image-classification",
        "audio-classification",
        "text-generation",
    }
)
#: Inductor modes ``compile`` accepts (True means "default").
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")

_threads_lock = threading.Lock()


#: Why ``dtype="int8"`` is refused for text-generation (measured on SmolLM2-135M-Instruct).
GENERATIVE_INT8_REFUSED = (
    "the ipex backend does not offer dtype='int8' for text-generation: its int8 is PyTorch's dynamic "
    "quantisation, one activation scale per tensor, and a decoder's first token carries activations so "
    "large that the rest of a prompt loses its precision (SmolLM2-135M: the prefill's next-token argmax "
    "agreed with float32 on 25% of positions; leaving down_proj and lm_head in float32 still only 58%). "
    "Use dtype='float32' or 'bfloat16' here, or weight-only int8 with accelerator='ov' or 'ort'."
)


class IpexBackend(Backend):
    """The ``ipex`` backend (see the module docstring)."""

    name = "ipex"
    aliases = ("intel-extension-for-pytorch",)
    priority = 100
    install_hint = "pip install 'acceleron[ipex]'"
    runtime_modules = ("torch", "transformers", "intel_extension_for_pytorch")
    extra_options = frozenset({"engine", "compile"})
    artifact_options = frozenset({"dtype", "engine", "compile"})
    dtypes = ("auto", "float32", "bfloat16", "int8")

    # ---- identity and capability ----

    def availability(self) -> Availability:
        """Available wherever torch is installed; the reason names the engine that will run."""
        missing = [name for name in ("torch", "transformers") if distribution_version(name) is None]
        if missing:
            return Availability(False, f"{' and '.join(missing)} not installed.")
        return Availability(True, engine.choose_engine().reason)

    def supported_tasks(self) -> frozenset[str]:
        return TASKS

    def versions(self) -> dict[str, str]:
        """The engine, the IPEX version it uses and what ``dtype="auto"`` means here: all shape the artifact."""
        choice = engine.choose_engine()
        return {
            "engine": choice.engine,
            "intel-extension-for-pytorch": (choice.ipex_version or "") if choice.ipex_usable else "",
            "acceleron-ipex": distribution_version("acceleron-ipex") or "",
            "auto-dtype": cpu.auto_dtype(),
        }

    # ---- options ----

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        checked = super().check_options(options)
        device = checked["device"]
        if device.split(":")[0] != "cpu":
            raise InvalidOptionError(
                f"the ipex backend runs on the CPU only, got device={device!r}; pass device='cpu' "
                "(Intel GPUs need IPEX's XPU build, which acceleron-ipex does not support)."
            )
        compile_mode = _compile_mode(checked.pop("compile", None))
        requested = str(checked.pop("engine", None) or "auto")
        if compile_mode and requested == "ipex":
            raise InvalidOptionError("compile runs on the torch engine only; pass engine='torch' or leave it 'auto'.")
        if compile_mode and checked["dtype"] == "int8":
            raise InvalidOptionError("compile does not support dtype='int8'; pass compile=False or another dtype.")
        engine.resolve_engine(requested, engine.choose_engine())  # raises if 'ipex' cannot run here
        # Defaults stay out of the options, so that they key the export cache (and the manifest) like absent ones.
        if compile_mode:
            checked["compile"] = compile_mode
        if requested != "auto":
            checked["engine"] = requested
        return checked

    def effective_dtype(self, options: Mapping[str, Any]) -> str:
        """``auto`` is bfloat16 where the CPU computes it natively, else float32."""
        dtype = str(options.get("dtype") or "auto")
        return cpu.auto_dtype() if dtype == "auto" else dtype

    def engine_for(self, options: Mapping[str, Any]) -> str:
        """The engine that runs for these options here: ``torch`` or ``ipex``."""
        if options.get("compile"):
            return "torch"
        return engine.resolve_engine(str(options.get("engine") or "auto"), engine.choose_engine())

    def input_dtype(self, options: Mapping[str, Any]) -> str:
        """bfloat16 when the torch engine runs bfloat16 weights (pipelines cast pixel values to it)."""
        dtype = self.effective_dtype(options)
        return "bfloat16" if dtype == "bfloat16" and self.engine_for(options) == "torch" else "float32"

    # ---- the three steps ----

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        return recipe.find_artifact(folder, file_name)

    def artifact_files(self, artifact: Path) -> list[Path]:
        return [artifact, artifact.parent / recipe.RECIPE_FILE]

    def export(
        self,
        model: PreTrainedModel,
        task: TaskSpec,
        example_inputs: Mapping[str, torch.Tensor],
        output_dir: Path,
        options: Mapping[str, Any],
    ) -> Path:
        from acceleron_ipex.exporter import export_artifact

        if task.generative and self.effective_dtype(options) == "int8":
            raise InvalidOptionError(GENERATIVE_INT8_REFUSED)
        chosen = self.engine_for(options)
        engine.warn_once(chosen, engine.choose_engine())
        return export_artifact(
            model,
            task,
            example_inputs,
            output_dir,
            engine=chosen,
            dtype=self.effective_dtype(options),
            compile_mode=options.get("compile") or None,
        )

    def load(self, artifact: Path, task: TaskSpec, options: Mapping[str, Any]) -> Session:
        from acceleron_ipex.runtime import load_session

        made = recipe.read_recipe(artifact.parent)
        self._check_artifact_fits(made)
        engine.warn_once(made.engine, engine.choose_engine())
        _set_threads(options.get("num_threads"))
        return load_session(artifact, made)

    def _forward(self, session: Session, inputs: Mapping[str, torch.Tensor], task: TaskSpec) -> dict[str, torch.Tensor]:
        from acceleron_ipex.runtime import run

        return run(session, inputs, generative=task.generative)

    def describe(self, session: Session, options: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        made = session.recipe
        choice = engine.choose_engine()
        reason = choice.reason
        if made.engine != choice.engine:
            reason = f"the artifact was made by the {made.engine} engine (here: {choice.reason})"
        return {
            "device": "cpu",
            "dtype": made.dtype,
            "engine": made.engine,
            "engine_reason": reason,
            "mode": session.mode,
            "compile": made.compile,
            "num_threads": torch.get_num_threads(),
            "torch": choice.torch_version,
            "intel-extension-for-pytorch": choice.ipex_version if made.engine == "ipex" else None,
            **({"note": made.note} if made.note else {}),
        }

    # ---- helpers ----

    def _check_artifact_fits(self, made: recipe.Recipe) -> None:
        """Refuse an IPEX-made artifact where IPEX cannot be imported safely, saying what to do instead.

        Other differences from the options asked for are the core's to report: it warns and loads the
        artifact as it is (its recipe says how it runs).
        """
        choice = engine.choose_engine()
        if made.engine == "ipex" and not choice.ipex_usable:
            raise AcceleronError(
                f"this artifact was made by the ipex engine and needs IPEX, which cannot run here: {choice.reason} "
                "Export it again from the PyTorch weights (export=True) to use the torch engine."
            )


def _compile_mode(value: Any) -> str | bool:
    """False, or the inductor mode for the ``compile`` option (True means ``default``)."""
    if value is None or value is False:
        return False
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise InvalidOptionError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}; got {value!r}.")


def _set_threads(threads: int | None) -> None:
    """torch's intra-op thread count is process-wide: set it, and say so when it changes."""
    if not threads:
        return
    import torch

    with _threads_lock:
        if torch.get_num_threads() != threads:
            logger.warning(
                "acceleron[ipex]: num_threads=%s sets torch's intra-op threads for the whole process", threads
            )
            torch.set_num_threads(int(threads))
