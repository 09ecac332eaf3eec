"""Choosing the backend: by name, by instance, or the best installed one for a task.

:func:`resolve_backend` is the one place that turns what a caller passed as ``accelerator`` into a
usable :class:`~acceleron.Backend`, checking its availability and task support once each. For
``accelerator=None`` the candidates go through the ``acceleron_select_backend`` hook, whose default
implementation (the first candidate) any plugin may override. Every call into a plugin goes through
the registry (:meth:`PluginManager.availability` and friends), so a plugin that raises or hangs is
skipped like one that failed to import, instead of breaking selection for every other backend.
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
        availability = registry.availability(backend)
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
    tasks = registry.supported_tasks(backend)
    if task not in tasks:
        raise TaskNotSupportedError(
            f"accelerator {backend.name!r} does not support {task}{_because(backend, task)}; "
            f"it supports: {', '.join(sorted(tasks))}."
        )
    return backend


def select_backend(registry: PluginManager, task: str, model: object = None) -> Backend:
    """The backend for ``task`` when the user gave no accelerator (see the selection hook)."""
    candidates: list[Backend] = []
    passed_over: dict[str, str] = {}
    for backend in registry.backends():
        reason = ""
        try:
            if not backend.auto_select:
                reason = "used only when asked for by name"
            elif not (availability := registry.availability(backend)):
                reason = f"unavailable: {availability.reason}"
            elif task not in (tasks := registry.supported_tasks(backend)):
                reason = f"does not support {task}{_because(backend, task)} (it supports: {', '.join(sorted(tasks))})"
        except PluginLoadError:
            if registry.strict:
                raise
            continue  # now load-failed: reported with the plugins that failed to import
        if reason:
            passed_over[backend.name] = reason
            logger.debug("accelerator %r passed over for %s: %s", backend.name, task, reason)
        else:
            candidates.append(backend)
    if not candidates:
        raise _no_candidate_error(registry, task, passed_over)
    chosen = registry.select(task, candidates, model)
    if chosen is None:  # every candidate's plugin broke in its selection hook
        raise _no_candidate_error(registry, task, passed_over)
    if not any(chosen is candidate for candidate in candidates):  # only with a hookwrapper in the way
        raise PluginLoadError(
            f"a selection plugin returned {chosen!r}, which is not one of the candidates {[c.name for c in candidates]}"
        )
    candidates = [c for c in candidates if registry.load(c.name) is c]
    logger.info(
        "acceleron: running %s on accelerator %r (candidates: %s)",
        task,
        chosen.name,
        ", ".join(c.name for c in candidates),
    )
    return chosen


def _because(backend: Backend, task: str) -> str:
    """``": <the backend's reason>"`` for a task it declares unsupported, or ""."""
    reason = backend.unsupported_reason(task)
    return f": {reason}" if reason else ""


def _no_candidate_error(registry: PluginManager, task: str, passed_over: dict[str, str]) -> Exception:
    selectable = {name: reason for name, reason in passed_over.items() if "by name" not in reason}
    failed = [f"{r.name} ({r.distribution} {r.version}): {r.error}" for r in registry.records().values() if r.error]
    broken = ("\nThese plugins are installed but failed to load:\n  " + "\n  ".join(failed)) if failed else ""
    if not selectable:
        lines = [f"  {known.install_hint:<40} # {known.name}" for known in KNOWN_BACKENDS.values()]
        message = "no acceleron backend is installed. Install one of:\n" + "\n".join(lines)
        return BackendNotInstalledError(message + broken)
    details = "; ".join(f"{name} {reason}" for name, reason in selectable.items())
    if all(reason.startswith("unavailable") for reason in selectable.values()):
        return BackendUnavailableError(f"no installed accelerator can run here: {details}.{broken}")
    return TaskNotSupportedError(f"no installed accelerator supports {task}: {details}.{broken}")
