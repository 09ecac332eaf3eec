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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acceleron.backend import Availability, Backend, Options, Session, distribution_version
from acceleron.errors import AcceleronError, InvalidOptionError
from acceleron.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from acceleron.tasks import ExportPlan, TaskSpec

logger = logging.getLogger(__name__)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_threads_lock = threading.Lock()


@dataclass(frozen=True)
class TorchOptions(Options):
    """The checkpoint is the artifact: no option changes it (bfloat16 is a cast at load time)."""

    artifact_fields: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        _check_device(self.device)


def _check_device(name: str) -> None:
    """Refuse a device torch cannot use here now, not with an AssertionError deep inside ``Module.to``."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as error:
        raise InvalidOptionError(f"device={name!r} is not a torch device ({error}); use 'cpu' or 'cuda:N'.") from error
    if device.type == "cpu":
        return
    module: Any = getattr(torch, device.type, None)
    available = bool(hasattr(module, "is_available") and module.is_available())
    count = int(module.device_count()) if available and hasattr(module, "device_count") else int(available)
    if (device.index or 0) >= count:
        built = "" if device.type != "cuda" or torch.version.cuda else " (this torch is built without CUDA)"
        raise InvalidOptionError(
            f"device={name!r} is not available here: torch sees {count} {device.type} device(s){built}. "
            "Use device='cpu'" + (f" or an index below {count}." if count else ".")
        )


class TorchSession(Session):
    """An eager PyTorch module: the task's model, or its flat-cache step for causal LMs."""

    def __init__(self, module: torch.nn.Module, *, input_names: list[str], output_names: list[str], options: Options):
        super().__init__(input_names=input_names, output_names=output_names, options=options)
        self.module = module
        self.input_dtype = options.compute_dtype

    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        with torch.inference_mode():
            outputs = self.module(*(inputs[name] for name in self.input_names))
        # A KV cache stays in the compute dtype: it is fed back as the next step's past.
        return {
            name: value.float() if value.is_floating_point() and not name.startswith("present.") else value
            for name, value in zip(self.output_names, outputs)
        }

    def describe(self) -> dict[str, Any]:
        import torch

        return {**super().describe(), "num_threads": torch.get_num_threads()}


class TorchBackend(Backend):
    """Eager PyTorch, float32 or bfloat16. Its session runs the core's plan module as it is."""

    name = "torch"
    aliases = ("pytorch", "eager")
    priority = 0
    install_hint = "pip install acceleron"
    auto_select = False
    runtime_modules = ("torch", "transformers")
    dtypes = ("auto", "float32", "bfloat16")
    options_class = TorchOptions

    def availability(self) -> Availability:
        missing = [name for name in ("torch", "transformers") if distribution_version(name) is None]
        if missing:
            return Availability(False, f"{' and '.join(missing)} not installed.")
        return Availability(True)

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
            "config.json",  # find_artifact needs it beside the weights (a multi-graph kind's subfolder too)
            "model*.safetensors",
            "model.safetensors.index.json",
            "pytorch_model*.bin",
            "*.index.json",
        )
        files = {path for pattern in patterns for path in folder.glob(pattern) if path.is_file()}
        return sorted(files | {artifact})

    def export(self, plan: ExportPlan, output_dir: Path, options: Options) -> Path:
        plan.model.save_pretrained(output_dir)
        artifact = self.find_artifact(output_dir)
        if artifact is None:
            raise AcceleronError(f"save_pretrained wrote no weights into {output_dir}")
        return artifact

    def load(self, artifact: Path, task: TaskSpec, options: Options) -> TorchSession:
        import torch

        threads = options.num_threads
        if threads:
            with _threads_lock:
                if torch.get_num_threads() != threads:
                    logger.warning(
                        "acceleron[torch]: num_threads=%s sets torch's intra-op threads for the whole process",
                        threads,
                    )
                    torch.set_num_threads(int(threads))
        model: Any = task.load_torch_model(artifact.parent)
        if options.compute_dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        model = model.to(options.device)
        # The same module an exporter traces, run eagerly; a multi-graph kind's graph is its subfolder's name.
        name = artifact.parent.name if artifact.parent.name in task.kind.graph_names else ""
        graph = task.kind.graph_plan(task, model, name)
        return TorchSession(
            graph.module, input_names=graph.input_names, output_names=graph.output_names, options=options
        )


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [TorchBackend()]
