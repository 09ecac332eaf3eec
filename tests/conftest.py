"""Shared fixtures: no hub, a private export cache, fresh plugin state for every test."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("ACCELERON_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).parent))  # makes tests/fake_plugins importable
sys.path.insert(0, str(Path(__file__).parents[1]))  # makes benchmarks importable

import acceleron.plugins as plugins
from acceleron.testing import build_tiny_model

PLUGIN_ENV = (
    plugins.ENV_ALLOW,
    plugins.ENV_BLOCK,
    plugins.ENV_DISABLE_AUTOLOAD,
    plugins.ENV_PRIORITY,
    plugins.ENV_STRICT,
    plugins.ENV_TIMEOUT,
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ACCELERON_CACHE_DIR", str(tmp_path / "export-cache"))
    for name in PLUGIN_ENV:
        monkeypatch.delenv(name, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sentiment classifier folder (NEGATIVE/POSITIVE)."""
    return build_tiny_model("text-classification", tmp_path_factory.mktemp("tiny") / "bert-cls")


def fake_entry_point(name: str, module: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=f"fake_plugins.{module}", group=plugins.ENTRY_POINT_GROUP)


@pytest.fixture
def use_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., plugins.PluginManager]:
    """Install a plugin manager that sees only the given fake entry points (name -> module)."""

    def install(env: dict[str, str] | None = None, **entry_points: str) -> plugins.PluginManager:
        for name in entry_points.values():
            sys.modules.pop(f"fake_plugins.{name}", None)
        manager = plugins.PluginManager(
            env=env or {}, entry_points=[fake_entry_point(n, m) for n, m in entry_points.items()]
        )
        monkeypatch.setattr(plugins, "_manager", manager)
        return manager

    return install
