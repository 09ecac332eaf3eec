"""acceleron: run Hugging Face transformers pipelines on accelerated inference backends.

``from acceleron import pipeline`` is the whole API most users need. Importing acceleron is
cheap: torch, transformers and the backend runtimes load only when a model does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names, loaded on first access so that `import acceleron` stays light.
_LAZY = {
    "pipeline": "acceleron.router",
    "embed": "acceleron.embeddings",
    "SentenceEncoder": "acceleron.embeddings",
    "OptimizedModel": "acceleron.modeling",
    "CausalLMModel": "acceleron.modeling",
    "Backend": "acceleron.backend",
    "Availability": "acceleron.backend",
    "Options": "acceleron.backend",
    "Session": "acceleron.backend",
    "hookimpl": "acceleron.hookspecs",
    "get_backend": "acceleron.plugins",
    "resolve_backend": "acceleron.selection",
    "list_backends": "acceleron.status",
    "get_task": "acceleron.tasks",
    "ExportPlan": "acceleron.tasks",
    "GraphPlan": "acceleron.tasks",
    "TaskKind": "acceleron.tasks",
    "ExportCache": "acceleron.cache",
    "ValidationReport": "acceleron.validate",
    "AcceleronError": "acceleron.errors",
    "UnknownBackendError": "acceleron.errors",
    "BackendNotInstalledError": "acceleron.errors",
    "BackendUnavailableError": "acceleron.errors",
    "PluginLoadError": "acceleron.errors",
    "TaskNotSupportedError": "acceleron.errors",
    "InvalidOptionError": "acceleron.errors",
    "InvalidInputError": "acceleron.errors",
    "InputTooLongError": "acceleron.errors",
    "ArtifactNotFoundError": "acceleron.errors",
    "ExportError": "acceleron.errors",
    "UntrustedArtifactError": "acceleron.errors",
    "ValidationError": "acceleron.errors",
    "CacheError": "acceleron.errors",
    "UnsafePathError": "acceleron.errors",
    "RowError": "acceleron.errors",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from acceleron.backend import Availability, Backend, Options, Session
    from acceleron.cache import ExportCache
    from acceleron.embeddings import SentenceEncoder, embed
    from acceleron.errors import (
        AcceleronError,
        ArtifactNotFoundError,
        BackendNotInstalledError,
        BackendUnavailableError,
        CacheError,
        ExportError,
        InputTooLongError,
        InvalidInputError,
        InvalidOptionError,
        PluginLoadError,
        RowError,
        TaskNotSupportedError,
        UnknownBackendError,
        UnsafePathError,
        UntrustedArtifactError,
        ValidationError,
    )
    from acceleron.hookspecs import hookimpl
    from acceleron.modeling import CausalLMModel, OptimizedModel
    from acceleron.plugins import get_backend
    from acceleron.router import pipeline
    from acceleron.selection import resolve_backend
    from acceleron.status import list_backends
    from acceleron.tasks import ExportPlan, GraphPlan, TaskKind, get_task
    from acceleron.validate import ValidationReport


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'acceleron' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
