"""A backend whose runtime is never installed: it must show up as ``unavailable``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acceleron import Availability, Backend, hookimpl
from acceleron.backend import distribution_version


class GhostBackend(Backend):
    name = "ghost"
    priority = 1000  # would win every selection if it were available
    install_hint = "pip install ghost-runtime"

    def availability(self) -> Availability:
        if distribution_version("ghost-runtime") is None:
            return Availability(False, "the ghost-runtime package is not installed.")
        return Availability(True)  # pragma: no cover

    def supported_tasks(self) -> frozenset[str]:
        return frozenset({"text-classification"})

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        return None

    def export(self, *args: Any, **kwargs: Any) -> Path:  # pragma: no cover - never available
        raise NotImplementedError

    def load(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [GhostBackend()]
