"""Exports are made once: `acceleron export` folders load as they are, and a second load hits the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from acceleron import pipeline
from acceleron.cache import ExportCache
from acceleron.cli import main as acceleron_cli
from acceleron_ort.plugin import OrtBackend


def _forbid_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(OrtBackend, "export", refuse)


def test_a_folder_written_by_acceleron_export_loads_without_exporting(
    tiny_classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "exported"
    code = acceleron_cli(["export", str(tiny_classifier), "-o", str(output), "-a", "ort", "--strict"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["backend"] == "ort"
    _forbid_export(monkeypatch)
    classify = pipeline(
        "text-classification",
        model=str(output),
        accelerator="ort",
        model_kwargs={"export_cache": ExportCache(tmp_path / "must-stay-empty")},
    )
    assert classify.model.artifact == output / "model.onnx"
    assert classify("what a wonderful film")[0]["label"] in {"NEGATIVE", "POSITIVE"}
    assert not (tmp_path / "must-stay-empty").exists()


def test_a_second_pipeline_on_the_same_model_loads_from_the_cache(
    tiny_classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ExportCache(tmp_path / "cache")
    kwargs: dict[str, Any] = {"accelerator": "ort", "model_kwargs": {"export_cache": cache}}
    first = pipeline("text-classification", model=str(tiny_classifier), **kwargs)
    _forbid_export(monkeypatch)
    second = pipeline("text-classification", model=str(tiny_classifier), **kwargs)
    assert second.model.artifact == first.model.artifact
    assert len(list(cache.entries())) == 1
