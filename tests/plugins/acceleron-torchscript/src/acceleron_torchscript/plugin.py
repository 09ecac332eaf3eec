"""The ``jit`` backend: exports with ``torch.jit.trace``, runs the frozen trace.

It exists to prove that a plugin written outside the core, installed as its own distribution,
is discovered through its entry point and passes the conformance suite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acceleron import Availability, Backend, hookimpl
from acceleron.backend import distribution_version
from acceleron.errors import AcceleronError

ARTIFACT = "model.torchscript.pt"
IO_FILE = "torchscript_io.json"


class TorchScriptBackend(Backend):
    name = "jit"
    aliases = ("torchscript",)
    priority = 10
    install_hint = "pip install acceleron-torchscript"
    runtime_modules = ("torch", "transformers")

    def availability(self) -> Availability:
        if distribution_version("torch") is None:
            return Availability(False, "torch is not installed.")
        return Availability(True)

    def supported_tasks(self) -> frozenset[str]:
        return frozenset({"text-classification", "feature-extraction", "token-classification", "fill-mask"})

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        path = folder / (file_name or ARTIFACT)
        return path if path.is_file() and (folder / IO_FILE).is_file() else None

    def artifact_files(self, artifact: Path) -> list[Path]:
        return [artifact, artifact.parent / IO_FILE]

    def export(self, model: Any, task: Any, example_inputs: Mapping[str, Any], output_dir: Path, options: Any) -> Path:
        import torch

        names = list(example_inputs)
        outputs = list(task.output_names)

        class Positional(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
                result = self.inner(**dict(zip(names, args)))
                return tuple(result[name] for name in outputs)

        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(Positional().eval(), tuple(example_inputs.values()), check_trace=False)
            traced = torch.jit.freeze(traced)
        traced.save(str(output_dir / ARTIFACT))
        (output_dir / IO_FILE).write_text(json.dumps({"inputs": names, "outputs": outputs}))
        return output_dir / ARTIFACT

    def load(self, artifact: Path, task: Any, options: Mapping[str, Any]) -> Any:
        import torch

        try:
            module = torch.jit.load(str(artifact))
        except RuntimeError as error:
            raise AcceleronError(f"{artifact} is not a loadable TorchScript file: {error}") from error
        io = json.loads((artifact.parent / IO_FILE).read_text())
        return module, io["inputs"], io["outputs"]

    def _forward(self, session: Any, inputs: Mapping[str, Any], task: Any) -> dict[str, Any]:
        import torch

        module, names, outputs = session
        missing = [name for name in names if name not in inputs]
        if missing:
            raise AcceleronError(f"the TorchScript graph needs inputs {missing}")
        with torch.inference_mode():
            result = module(*(inputs[name] for name in names))
        return dict(zip(outputs, result))


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [TorchScriptBackend()]
