"""A third-party plugin installed as its own distribution passes the conformance suite."""

import json
from pathlib import Path
from typing import Any

import pytest

from acceleron.testing import BackendConformance

pytest.importorskip("acceleron_torchscript", reason="nox installs tests/plugins/acceleron-torchscript")


class TestTorchScriptPlugin(BackendConformance):
    backend_name = "jit"


def test_a_plugin_ignoring_the_plan_is_refused_for_text_generation(tmp_path: Path) -> None:
    """The round-1 way (trace the model itself on the task's outputs) claims text-generation in vain."""
    import torch
    from acceleron_torchscript.plugin import ARTIFACT, IO_FILE, TorchScriptBackend

    from acceleron import OptimizedModel
    from acceleron.cache import ExportCache
    from acceleron.errors import ExportError
    from acceleron.testing import tiny_causal_lm

    class NaiveTorchScript(TorchScriptBackend):
        name = "naive-jit"

        def export(self, plan: Any, output_dir: Path, options: Any) -> Path:
            model, names = plan.model, ["input_ids", "attention_mask"]

            class Positional(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.inner = model

                def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    return (self.inner(**dict(zip(names, args))).logits,)

            ids = plan.graph.example_inputs["input_ids"]
            with torch.no_grad():
                traced = torch.jit.trace(Positional().eval(), (ids, torch.ones_like(ids)), check_trace=False)
            traced.save(str(output_dir / ARTIFACT))
            (output_dir / IO_FILE).write_text(json.dumps({"inputs": names, "outputs": ["logits"]}))
            return output_dir / ARTIFACT

    cache = ExportCache(tmp_path / "cache")
    with pytest.raises(ExportError, match="unusable, so it was not cached"):
        OptimizedModel.from_pretrained(
            tiny_causal_lm("llama", tmp_path / "llama"),
            accelerator=NaiveTorchScript(),
            task="text-generation",
            export_cache=cache,
        )
    assert list(cache.entries()) == []
    assert [p.name for p in cache.root.iterdir() if not p.name.startswith(".")] == []


def test_a_code_artifact_in_a_model_folder_runs_only_when_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TorchScript file is code: one found in a model folder is not even opened unless the caller opts in."""
    import torch

    from acceleron import OptimizedModel, pipeline
    from acceleron.errors import UntrustedArtifactError
    from acceleron.testing import build_tiny_model

    folder = build_tiny_model("text-classification", tmp_path / "bert")
    saved = OptimizedModel.from_pretrained(folder, accelerator="jit").save_pretrained(tmp_path / "saved")
    opened: list[str] = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda path, *a, **k: opened.append(str(path)) or real_load(path, *a, **k))
    with pytest.raises(UntrustedArtifactError, match="trust_remote_code=True"):
        OptimizedModel.from_pretrained(saved, accelerator="jit")
    with pytest.raises(UntrustedArtifactError):
        pipeline("text-classification", str(saved), accelerator="jit")
    assert opened == []
    trusted = OptimizedModel.from_pretrained(saved, accelerator="jit", trust_remote_code=True)
    assert opened == [str(trusted.artifact)]


def test_an_export_in_the_cache_is_trusted_when_loaded_as_a_folder(tmp_path: Path) -> None:
    """Bulk workers load the driver's export from its cache entry: acceleron wrote it, so it runs."""
    from acceleron import OptimizedModel
    from acceleron.cache import ExportCache
    from acceleron.errors import UntrustedArtifactError
    from acceleron.testing import build_tiny_model

    cache = ExportCache(tmp_path / "cache")
    folder = build_tiny_model("text-classification", tmp_path / "bert")
    exported = OptimizedModel.from_pretrained(folder, accelerator="jit", export_cache=cache)
    entry = exported.artifact.parent
    again = OptimizedModel.from_pretrained(entry, accelerator="jit", export=False, export_cache=cache)
    assert again.artifact == exported.artifact
    copy = tmp_path / "copied-elsewhere"
    exported.save_pretrained(copy)
    with pytest.raises(UntrustedArtifactError):
        OptimizedModel.from_pretrained(copy, accelerator="jit", export=False, export_cache=cache)
