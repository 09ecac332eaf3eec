"""A configurable in-memory backend for routing tests: it records what it is asked to do."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acceleron import Availability, Backend
from acceleron.backend import Options, Session


class FakeBackend(Backend):
    """Runs the PyTorch model itself; ``noise`` perturbs outputs to exercise validation."""

    name = "fake"
    priority = 50
    available = True
    tasks = frozenset({"text-classification", "feature-extraction"})
    noise = 0.0
    fail_export = False
    runtime_modules = ()
    dtypes = ("auto", "float32", "bfloat16")

    def availability(self) -> Availability:
        return Availability(self.available, "" if self.available else f"{self.name} runtime missing.")

    def supported_tasks(self) -> frozenset[str]:
        return self.tasks

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        path = folder / (file_name or f"{self.name}.artifact")
        return path if path.is_file() else None

    def artifact_files(self, artifact: Path) -> list[Path]:
        return [artifact, *sorted(p for p in (artifact.parent / "weights").rglob("*") if p.is_file())]

    def export(self, plan: Any, output_dir: Path, options: Options) -> Path:
        if self.fail_export:
            (output_dir / "half-written.bin").write_bytes(b"x" * 100)
            raise RuntimeError("converter crashed halfway")
        log = os.environ.get("FAKE_EXPORT_LOG")
        if log:  # lets the concurrency test count real exports and widen the race window
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(1.0)
        plan.model.save_pretrained(output_dir / "weights")
        artifact = output_dir / f"{self.name}.artifact"
        artifact.write_text("weights")
        return artifact

    def load(self, artifact: Path, task: Any, options: Options) -> FakeSession:
        model = task.load_torch_model(artifact.parent / artifact.read_text())
        names = task.kind.input_names(task, model)
        return FakeSession(model, self.noise, input_names=names, output_names=task.output_names, options=options)


class FakeSession(Session):
    def __init__(self, model: Any, noise: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.noise = noise

    def _forward(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            outputs = self.model(**inputs)
        return {name: outputs[name] + self.noise for name in self.output_names}
