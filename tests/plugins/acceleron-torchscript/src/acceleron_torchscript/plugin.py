"""The ``jit`` backend: exports the core's plan with ``torch.jit.trace``, runs the frozen trace.

It exists to prove that a plugin written outside the core, installed as its own distribution,
is discovered through its entry point and passes the conformance suite, text-generation included,
with nothing task-specific in it: the plan says what to trace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acceleron import Availability, Backend, Options, Session, hookimpl
from acceleron.backend import distribution_version
from acceleron.errors import AcceleronError

ARTIFACT = "model.torchscript.pt"
IO_FILE = "torchscript_io.json"


class TorchScriptSession(Session):
    def __init__(self, module: Any, **names: Any) -> None:
        super().__init__(**names)
        self.module = module

    def _forward(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            result = self.module(*(inputs[name] for name in self.input_names))
        return dict(zip(self.output_names, result))


class TorchScriptBackend(Backend):
    name = "jit"
    aliases = ("torchscript",)
    priority = 10
    install_hint = "pip install acceleron-torchscript"
    runtime_modules = ("torch", "transformers")
    artifact_runs_code = True  # a TorchScript file is code: the core loads one from a folder only if trusted
    # Every task the core can plan is claimed (the default); tracing fails on none of them.

    def availability(self) -> Availability:
        if distribution_version("torch") is None:
            return Availability(False, "torch is not installed.")
        return Availability(True)

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        path = folder / (file_name or ARTIFACT)
        return path if path.is_file() and (folder / IO_FILE).is_file() else None

    def artifact_files(self, artifact: Path) -> list[Path]:
        return [artifact, artifact.parent / IO_FILE]

    def export(self, plan: Any, output_dir: Path, options: Options) -> Path:
        import torch

        graph = plan.graph
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(graph.module, graph.example_args, check_trace=False, strict=False)
            traced = torch.jit.freeze(traced)
        traced.save(str(output_dir / ARTIFACT))
        (output_dir / IO_FILE).write_text(json.dumps({"inputs": graph.input_names, "outputs": graph.output_names}))
        return output_dir / ARTIFACT

    def load(self, artifact: Path, task: Any, options: Options) -> TorchScriptSession:
        import torch

        try:
            module = torch.jit.load(str(artifact))
        except RuntimeError as error:
            raise AcceleronError(f"{artifact} is not a loadable TorchScript file: {error}") from error
        io = json.loads((artifact.parent / IO_FILE).read_text())
        return TorchScriptSession(module, input_names=io["inputs"], output_names=io["outputs"], options=options)


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [TorchScriptBackend()]
