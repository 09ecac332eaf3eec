"""The ``torch`` reference backend: eager PyTorch through the same plugin contract.

It is built in, registered through the same hook as third-party plugins, and used only when
asked for by name (``accelerator="torch"``): it is the baseline that validation, the conformance
suite and the benchmark compare the real backends with. Its "artifact" is an ordinary
transformers checkpoint (safetensors weights next to ``config.json``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Availability, Backend, distribution_version
from acceleron.errors import AcceleronError
from acceleron.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from acceleron.tasks import TaskSpec

logger = logging.getLogger(__name__)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_threads_lock = threading.Lock()


class TorchBackend(Backend):
    """Eager PyTorch, float32 or bfloat16."""

    name = "torch"
    aliases = ("pytorch", "eager")
    priority = 0
    install_hint = "pip install acceleron"
    auto_select = False
    runtime_modules = ("torch", "transformers")
    dtypes = ("auto", "float32", "bfloat16")

    def availability(self) -> Availability:
        missing = [name for name in ("torch", "transformers") if distribution_version(name) is None]
        if missing:
            return Availability(False, f"{' and '.join(missing)} not installed.")
        return Availability(True)

    def supported_tasks(self) -> frozenset[str]:
        from acceleron.tasks import TASKS

        return frozenset(TASKS)

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        if not (folder / "config.json").is_file():
            return None
        names: Sequence[str] = (file_name,) if file_name else _WEIGHT_FILES
        for name in names:
            if (folder / name).is_file():
                return folder / name
        return None

    def artifact_files(self, artifact: Path) -> list[Path]:
        folder = artifact.parent
        patterns = (
            "model*.safetensors",
            "model.safetensors.index.json",
            "pytorch_model*.bin",
            "*.index.json",
        )
        files = {path for pattern in patterns for path in folder.glob(pattern) if path.is_file()}
        return sorted(files | {artifact})

    def export(
        self,
        model: PreTrainedModel,
        task: TaskSpec,
        example_inputs: Mapping[str, torch.Tensor],
        output_dir: Path,
        options: Mapping[str, Any],
    ) -> Path:
        model.save_pretrained(output_dir)
        artifact = self.find_artifact(output_dir)
        if artifact is None:
            raise AcceleronError(f"save_pretrained wrote no weights into {output_dir}")
        return artifact

    def load(self, artifact: Path, task: TaskSpec, options: Mapping[str, Any]) -> PreTrainedModel:
        import torch

        threads = options.get("num_threads")
        if threads:
            with _threads_lock:
                if torch.get_num_threads() != threads:
                    logger.warning(
                        "acceleron[torch]: num_threads=%s sets torch's intra-op threads for the whole process",
                        threads,
                    )
                    torch.set_num_threads(int(threads))
        model: Any = task.load_torch_model(artifact.parent)
        if self.effective_dtype(options) == "bfloat16":
            model = model.to(torch.bfloat16)
        return model.to(str(options.get("device", "cpu")))

    def input_dtype(self, options: Mapping[str, Any]) -> str:
        return self.effective_dtype(options)

    def _forward(
        self, session: PreTrainedModel, inputs: Mapping[str, torch.Tensor], task: TaskSpec
    ) -> dict[str, torch.Tensor]:
        import torch

        if task.generative:
            return _forward_flat(session, inputs)
        dtype = session.dtype
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = session(**cast)
        return {name: outputs[name].float() for name in task.output_names if outputs.get(name) is not None}

    def describe(self, session: PreTrainedModel, options: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        return {
            "device": str(session.device),
            "dtype": str(session.dtype).replace("torch.", ""),
            "num_threads": torch.get_num_threads(),
        }


def _forward_flat(session: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One text-generation step through :class:`~acceleron.kv_cache.FlatCacheCausalLM`, eagerly."""
    import torch

    from acceleron.kv_cache import FlatCacheCausalLM

    wrapper = FlatCacheCausalLM(session)  # holds no state of its own: cheap, and safe across threads
    dtype, device = session.dtype, session.device
    ordered = [inputs[name] for name in wrapper.layout.input_names]
    values = [v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for v in ordered]
    with torch.inference_mode():
        outputs = wrapper(*values)
    names = wrapper.layout.output_names
    result = dict(zip(names, outputs))
    result["logits"] = result["logits"].float()
    return result


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [TorchBackend()]
