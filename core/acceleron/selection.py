"""Choosing the backend: by name, by instance, or the best installed one for a task.

:func:`resolve_backend` is the one place that turns what a caller passed as ``accelerator`` into a
usable :class:`~acceleron.Backend`, checking its availability and task support once each. For
``accelerator=None`` the candidates go through the ``acceleron_select_backend`` hook, whose default
implementation (the first candidate) any plugin may override.
"""

from __future__ import annotations

import logging

from acceleron.backend import Backend
from acceleron.errors import (
    BackendNotInstalledError,
    BackendUnavailableError,
    PluginLoadError,
    TaskNotSupportedError,
)
from acceleron.plugins import KNOWN_BACKENDS, PluginManager, get_plugin_manager

logger = logging.getLogger(__name__)


def resolve_backend(
    accelerator: str | Backend | None, task: str, model: object = None, registry: PluginManager | None = None
) -> Backend:
    """The backend to run ``task`` on: a given instance, a name or alias, or the best one installed.

    Checks availability and task support once each; raises the error that says what to do next.
    """
    registry = registry or get_plugin_manager()
    if accelerator is None:
        return select_backend(registry, task, model)
    if isinstance(accelerator, Backend):
        backend = accelerator
        availability = backend.availability()
        if not availability:
            raise BackendUnavailableError(
                f"accelerator {backend.name!r} cannot run here: {availability.reason} "
                f"Install what it needs with: {backend.install_hint or 'see its documentation'}"
            )
    elif isinstance(accelerator, str):
        backend = registry.get(accelerator)
    else:
        raise TypeError(
            f"accelerator must be a backend name such as 'ort', a Backend instance or None, "
            f"got {type(accelerator).__name__}"
        )
    tasks = backend.supported_tasks()
    if task not in tasks:
        raise TaskNotSupportedError(
            f"accelerator {backend.name!r} does not support {task}; it supports: {', '.join(sorted(tasks))}."
        )
    return backend


def select_backend(registry: PluginManager, task: str, model: object = None) -> Backend:
    """The backend for ``task`` when the user gave no accelerator (see the selection hook)."""
    candidates: list[Backend] = []
    passed_over: dict[str, str] = {}
    for backend in registry.backends():
        reason = ""
        if not backend.auto_select:
            reason = "used only when asked for by name"
        elif not (availability := backend.availability()):
            reason = f"unavailable: {availability.reason}"
        elif task not in (tasks := backend.supported_tasks()):
            reason = f"does not support {task} (it supports: {', '.join(sorted(tasks))})"
        if reason:
            passed_over[backend.name] = reason
            logger.debug("accelerator %r passed over for %s: %s", backend.name, task, reason)
        else:
            candidates.append(backend)
    if not candidates:
        raise _no_candidate_error(registry, task, passed_over)
    chosen = registry.hook.acceleron_select_backend(task=task, candidates=list(candidates), model=model)
    if chosen not in candidates:
        raise PluginLoadError(
            f"a selection plugin returned {chosen!r}, which is not one of the candidates {[c.name for c in candidates]}"
        )
    logger.info(
        "acceleron: running %s on accelerator %r (candidates: %s)",
        task,
        chosen.name,
        ", ".join(c.name for c in candidates),
    )
    return chosen


def _no_candidate_error(registry: PluginManager, task: str, passed_over: dict[str, str]) -> Exception:
    selectable = {name: reason for name, reason in passed_over.items() if "by name" not in reason}
    if not selectable:
        failed = [f"{r.name} ({r.distribution} {r.version}): {r.error}" for r in registry.records().values() if r.error]
        lines = [f"  {known.install_hint:<40} # {known.name}" for known in KNOWN_BACKENDS.values()]
        message = "no acceleron backend is installed. Install one of:\n" + "\n".join(lines)
        if failed:
            message += "\nThese plugins are installed but failed to load:\n  " + "\n  ".join(failed)
        return BackendNotInstalledError(message)
    details = "; ".join(f"{name} {reason}" for name, reason in selectable.items())
    if all(reason.startswith("unavailable") for reason in selectable.values()):
        return BackendUnavailableError(f"no installed accelerator can run here: {details}.")
    return TaskNotSupportedError(f"no installed accelerator supports {task}: {details}.")
