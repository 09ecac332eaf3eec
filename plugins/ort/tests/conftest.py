"""Shared fixtures: no hub, a private export cache per test, fresh plugin state, tiny models built once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("ACCELERON_PROGRESS", "0")

from support import load

import acceleron.plugins as plugins
from acceleron.cache import ExportCache
from acceleron.testing import build_tiny_model


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ACCELERON_CACHE_DIR", str(tmp_path / "export-cache"))
    for name in (plugins.ENV_ALLOW, plugins.ENV_BLOCK, plugins.ENV_DISABLE_AUTOLOAD, plugins.ENV_PRIORITY):
        monkeypatch.delenv(name, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``tiny_model(task, arch)``: a tiny random model folder, built once per session."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[tuple[str, str], Path] = {}

    def get(task: str, arch: str = "bert") -> Path:
        if (task, arch) not in built:
            built[(task, arch)] = build_tiny_model(task, root / f"{task}-{arch}", arch)
        return built[(task, arch)]

    return get


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model: Callable[[str, str], Path]) -> Path:
    """A tiny random BERT sentiment classifier (NEGATIVE/POSITIVE), PyTorch weights."""
    return tiny_model("text-classification", "bert")


@pytest.fixture(scope="session")
def saved_classifier(tiny_classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier exported to ONNX and saved: model.onnx, config, tokenizer, manifest."""
    cache = ExportCache(tmp_path_factory.mktemp("session-cache"))
    model = load(tiny_classifier, export_cache=cache)
    return model.save_pretrained(tmp_path_factory.mktemp("saved") / "classifier")
