"""The engine is chosen from package metadata: IPEX only when it matches torch, and never imported otherwise."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from acceleron_ipex import engine
from acceleron_ipex.plugin import IpexBackend

from acceleron.errors import InvalidOptionError


def _installed(monkeypatch: pytest.MonkeyPatch, torch: str | None, ipex: str | None) -> None:
    versions = {"torch": torch, "intel-extension-for-pytorch": ipex}
    monkeypatch.setattr(engine, "distribution_version", lambda *names: versions.get(names[0]))


def test_matching_ipex_chooses_the_ipex_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.8.0+cpu", ipex="2.8.0+cpu")
    choice = engine.choose_engine()
    assert choice.engine == "ipex"
    assert choice.reason == "IPEX 2.8.0+cpu matches torch 2.8.0+cpu: using the ipex engine."


def test_mismatched_ipex_chooses_the_torch_engine_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.13.0", ipex="2.8.0")
    choice = engine.choose_engine()
    assert choice.engine == "torch"
    assert choice.reason.startswith("IPEX 2.8 installed but torch is 2.13: using the torch engine")


def test_missing_ipex_chooses_the_torch_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.13.0", ipex=None)
    choice = engine.choose_engine()
    assert (choice.engine, choice.ipex_version) == ("torch", None)
    assert "intel-extension-for-pytorch is not installed" in choice.reason


def test_patch_releases_still_match(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.8.1", ipex="2.8.0")
    assert engine.choose_engine().engine == "ipex"


def test_availability_reports_the_engine_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.13.0", ipex="2.8.0")
    availability = IpexBackend().availability()
    assert availability.ok
    assert "IPEX 2.8 installed but torch is 2.13" in availability.reason


def test_engine_ipex_is_refused_with_the_reason_when_ipex_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.13.0", ipex="2.8.0")
    with pytest.raises(InvalidOptionError, match="engine='ipex' cannot run here: IPEX 2.8 installed but torch is 2.13"):
        IpexBackend().parse_options({"engine": "ipex"})


def test_engine_torch_can_be_forced_when_ipex_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.8.0", ipex="2.8.0")
    backend = IpexBackend()
    assert backend.parse_options({"engine": "torch"}).engine_to_run() == "torch"
    assert backend.parse_options({}).engine_to_run() == "ipex"


def test_compile_runs_on_the_torch_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, torch="2.8.0", ipex="2.8.0")
    backend = IpexBackend()
    assert backend.parse_options({"compile": True}).engine_to_run() == "torch"
    with pytest.raises(InvalidOptionError, match="compile runs on the torch engine only"):
        backend.parse_options({"compile": True, "engine": "ipex"})


def test_retirement_warning_is_logged_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(engine, "_warned", False)
    choice = engine.EngineChoice(
        "torch", "IPEX 2.8 installed but torch is 2.13: using the torch engine.", "2.13", "2.8"
    )
    with caplog.at_level(logging.WARNING, logger="acceleron_ipex"):
        engine.warn_once("torch", choice)
        engine.warn_once("torch", choice)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "retired" in messages[0] and "running the 'torch' engine" in messages[0]


def _fake_ipex(root: Path, version: str) -> Path:
    """An 'intel_extension_for_pytorch' whose import kills the process, like a mismatched real one."""
    package = root / "intel_extension_for_pytorch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import os\nos._exit(86)\n")
    info = root / f"intel_extension_for_pytorch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: intel-extension-for-pytorch\nVersion: {version}\n")
    return root


def test_a_mismatched_ipex_is_never_imported(tmp_path: Path) -> None:
    import torch

    from acceleron.testing import build_tiny_model

    major, minor = engine.major_minor(torch.__version__) or (2, 13)
    fake_version = f"{major}.{minor + 1}.0"  # never torch's major.minor, whichever torch runs the tests
    site = _fake_ipex(tmp_path / "site", fake_version)
    folder = build_tiny_model("text-classification", tmp_path / "model")
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(site)!r})
        from acceleron import OptimizedModel, list_backends
        status = next(s for s in list_backends() if s.name == "ipex")
        model = OptimizedModel.from_pretrained(
            {str(folder)!r}, accelerator="ipex", task="text-classification",
            export_cache={str(tmp_path / "cache")!r}, dtype="float32",
        )
        import torch
        logits = model(input_ids=torch.tensor([[2, 10, 11, 3]])).logits
        print(json.dumps({{
            "status": status.status, "reason": status.reason, "engine": model.report()["runtime"]["engine"],
            "imported": "intel_extension_for_pytorch" in sys.modules, "shape": list(logits.shape),
        }}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "ok"
    assert report["reason"].startswith(f"IPEX {major}.{minor + 1} installed but torch is {major}.{minor}")
    assert report["engine"] == "torch"
    assert report["imported"] is False
    assert report["shape"] == [1, 2]


@pytest.mark.skipif(not engine.choose_engine().ipex_usable, reason="needs intel-extension-for-pytorch matching torch")
def test_matching_ipex_really_runs_ipex_kernels(tmp_path: Path) -> None:
    from acceleron import OptimizedModel
    from acceleron.testing import build_tiny_model

    folder = build_tiny_model("text-classification", tmp_path / "model")
    model = OptimizedModel.from_pretrained(folder, accelerator="ipex", task="text-classification", dtype="float32")
    kinds = {node.kind() for node in model.session.module.graph.nodes()}
    assert model.report()["runtime"]["engine"] == "ipex"
    assert any(kind.startswith("torch_ipex::") for kind in kinds), sorted(kinds)
