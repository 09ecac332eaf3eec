"""Shared test setup: no hub, no progress output, a private export cache per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("ACCELERON_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _private_export_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from acceleron.plugins import reset_plugin_manager

    monkeypatch.setenv("ACCELERON_CACHE_DIR", str(tmp_path / "export-cache"))
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture(scope="module")
def assets() -> Any:
    """The real-model assets module (its functions build or find each model once)."""
    from acceleron.testing import assets

    return assets
