"""The plugin registry: discovery and loading.

Choosing among the loaded backends is :mod:`acceleron.selection`; reporting them, :mod:`acceleron.status`.

Backends are found through entry points in the group ``acceleron.backends``. Discovery reads
names from package metadata only; a plugin module is imported the first time its backend is
needed, and a plugin that fails to import is recorded as ``load-failed`` and skipped, so one
broken plugin never breaks the others (or ``acceleron --help``). The same goes for a plugin whose
``availability()``, ``supported_tasks()`` or selection hook raises or returns nonsense, and for
one whose import or ``availability()`` hangs: every call into a plugin's discovery surface runs
under a time limit (:func:`call_with_time_limit`). The first-party names (``ort``, ``ov``,
``ipex``, ``torch``) are reserved to their own distributions: another distribution claiming one
is refused, so installing a package can never silently swap the runtime under ``accelerator="ort"``.

Environment switches (read when the manager is created; :func:`reset_plugin_manager` re-reads):

``ACCELERON_DISABLE_PLUGIN_AUTOLOAD=1``  load no entry-point plugins (built-ins stay)
``ACCELERON_PLUGINS=ort,ov``              allow-list of entry-point plugins
``ACCELERON_DISABLE_PLUGINS=ipex``        block-list (built-ins can be blocked too)
``ACCELERON_PRIORITY=ort,ov``             these backends first, in this order, for ``accelerator=None``
``ACCELERON_STRICT_PLUGINS=1``            re-raise plugin load errors instead of skipping the plugin
``ACCELERON_PLUGIN_TIMEOUT=10``           seconds a plugin's import or ``availability()`` may take (0: no limit)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pluggy

from acceleron import hookspecs
from acceleron.backend import Availability, Backend
from acceleron.errors import (
    BackendNotInstalledError,
    BackendUnavailableError,
    PluginLoadError,
    UnknownBackendError,
)

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "acceleron.backends"
ENV_DISABLE_AUTOLOAD = "ACCELERON_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOW = "ACCELERON_PLUGINS"
ENV_BLOCK = "ACCELERON_DISABLE_PLUGINS"
ENV_PRIORITY = "ACCELERON_PRIORITY"
ENV_STRICT = "ACCELERON_STRICT_PLUGINS"
ENV_TIMEOUT = "ACCELERON_PLUGIN_TIMEOUT"

#: Seconds a plugin's import, ``availability()`` or ``supported_tasks()`` may take. These read
#: package metadata only (the runtime is imported later, by export and load), so a healthy plugin
#: answers in milliseconds; the margin is for a cold disk on a busy machine.
DEFAULT_PLUGIN_TIMEOUT = 10.0

Status = Literal["ok", "unavailable", "load-failed", "disabled", "not-installed"]


@dataclass(frozen=True)
class KnownBackend:
    """A first-party backend: listed in errors and hints even when it is not installed."""

    name: str
    aliases: tuple[str, ...]
    distribution: str
    install_hint: str


KNOWN_BACKENDS: dict[str, KnownBackend] = {
    known.name: known
    for known in (
        KnownBackend("ov", ("openvino",), "acceleron-openvino", "pip install 'acceleron[openvino]'"),
        KnownBackend("ort", ("onnxruntime",), "acceleron-ort", "pip install 'acceleron[ort]'"),
        KnownBackend("ipex", ("intel-extension-for-pytorch",), "acceleron-ipex", "pip install 'acceleron[ipex]'"),
    )
}

# Built-in plugins: registered like third-party ones, through the same hook.
BUILTIN_PLUGINS: dict[str, str] = {"torch": "acceleron.reference"}

#: Entry point names only these distributions may declare: ``accelerator="ort"`` must mean acceleron-ort.
RESERVED_NAMES: dict[str, str] = {
    **{known.name: known.distribution for known in KNOWN_BACKENDS.values()},
    **dict.fromkeys(BUILTIN_PLUGINS, "acceleron"),
}


def normalize_distribution(name: str | None) -> str:
    """A distribution name as packaging compares them (PEP 503): ``Acceleron_ORT`` is ``acceleron-ort``."""
    return re.sub(r"[-_.]+", "-", name or "").lower()


@dataclass
class PluginRecord:
    """One plugin as discovered from metadata, and what happened when it was loaded."""

    name: str
    target: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    entry_point: importlib.metadata.EntryPoint | None = None
    disabled_reason: str = ""
    backend: Backend | None = None
    error: str = ""
    loaded: bool = False
    plugin: object = None


class _DefaultPolicy:
    """The core's own selection policy, registered ``trylast`` so any plugin can override it."""

    @hookspecs.hookimpl(trylast=True)
    def acceleron_select_backend(self, candidates: Sequence[Backend]) -> Backend | None:
        return candidates[0] if candidates else None


class _PluggyManager(pluggy.PluginManager):
    """Treats every ``acceleron_*`` attribute of a plugin as a hook implementation.

    pluggy alone would silently ignore an unmarked, misspelt ``acceleron_backend``;
    with this, ``check_pending()`` reports it.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("acceleron_") and callable(getattr(plugin, name, None)):
            return {}
        return opts


def _env_list(value: str | None) -> list[str]:
    return [item.strip().lower() for item in (value or "").split(",") if item.strip()]


def _env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _env_seconds(name: str, value: str | None, default: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0 or math.isnan(seconds):
        logger.warning("%s=%r is not a number of seconds; using %s", name, value, default)
        return default
    return seconds


T = TypeVar("T")


def call_with_time_limit(func: Callable[[], T], seconds: float, what: str) -> T:
    """``func()``, or :class:`PluginLoadError` when it takes longer than ``seconds`` (0: no limit).

    It runs in a daemon thread, so a call that never returns is abandoned (it cannot be killed)
    instead of hanging the caller; it then holds nothing of ours. ``SystemExit`` from a plugin is
    an error like any other, not the end of the process.
    """
    if seconds <= 0:
        return func()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as error:  # re-raised (or reported) in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"acceleron: {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise PluginLoadError(f"{what} timed out after {seconds:g} s (the limit is {ENV_TIMEOUT})")
    error = outcome.get("error")
    if isinstance(error, (SystemExit, GeneratorExit)):
        raise PluginLoadError(f"{what} raised {describe_error(error)}") from error
    if error is not None:
        raise error
    return outcome["value"]


def _checked_availability(value: object) -> Availability:
    if not isinstance(value, Availability):
        raise TypeError(f"availability() must return an acceleron.Availability, got {value!r}")
    return value


def _checked_tasks(value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"supported_tasks() must return a set of task names, got {value!r}")
    tasks = frozenset(value)
    if not all(isinstance(task, str) for task in tasks):
        raise TypeError(f"supported_tasks() must return task names (strings), got {sorted(map(repr, tasks))}")
    return tasks


class PluginManager:
    """Discovers, loads and selects backends. Use :func:`get_plugin_manager` for the shared one."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.autoload = not _env_flag(env.get(ENV_DISABLE_AUTOLOAD))
        self.allow = set(_env_list(env.get(ENV_ALLOW)))
        self.block = set(_env_list(env.get(ENV_BLOCK)))
        self.strict = _env_flag(env.get(ENV_STRICT))
        self.user_priority = _env_list(env.get(ENV_PRIORITY))
        self.timeout = _env_seconds(ENV_TIMEOUT, env.get(ENV_TIMEOUT), DEFAULT_PLUGIN_TIMEOUT)
        #: Entry points that were not registered: a reserved name from another distribution, or a
        #: name another distribution already claimed. ``acceleron backends`` lists them as disabled.
        self.refused: list[PluginRecord] = []
        self._entry_points = entry_points
        self._records: dict[str, PluginRecord] | None = None
        self._lock = threading.RLock()
        self._pm = _PluggyManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(_DefaultPolicy(), name="acceleron-default-policy")

    # ---- discovery (metadata only) -------------------------------------------------------

    def records(self) -> dict[str, PluginRecord]:
        """Every plugin known from metadata, by entry point name. Imports nothing."""
        with self._lock:
            if self._records is None:
                self._records = self._discover()
            return self._records

    def _discover(self) -> dict[str, PluginRecord]:
        import acceleron

        records: dict[str, PluginRecord] = {}
        for name, target in BUILTIN_PLUGINS.items():
            records[name] = PluginRecord(
                name=name,
                target=target,
                distribution="acceleron",
                version=acceleron.__version__,
                builtin=True,
            )
        if self._entry_points is None:
            found: Iterable[importlib.metadata.EntryPoint] = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        else:
            found = self._entry_points
        for entry_point in found:
            name = entry_point.name.strip().lower()
            dist = entry_point.dist
            record = PluginRecord(
                name=name,
                target=entry_point.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
                entry_point=entry_point,
            )
            owner = RESERVED_NAMES.get(name)
            if owner is not None and normalize_distribution(record.distribution) != owner:
                # A package named anything may declare any entry point; a first-party name must
                # keep meaning the first-party runtime, whatever else is installed.
                record.disabled_reason = (
                    f"the name {name!r} is reserved to {owner}; {record.distribution or 'an unknown distribution'} "
                    f"may not claim it (uninstall it, or ask its authors to use another name)"
                )
                logger.warning("acceleron plugin %r refused: %s", name, record.disabled_reason)
                self.refused.append(record)
                continue
            if name in records:
                # Two distributions claim one name: keep the first, report the second.
                first = records[name]
                logger.warning(
                    "acceleron plugin %r from %s conflicts with the one from %s; ignoring the former",
                    name,
                    record.distribution,
                    first.distribution,
                )
                record.disabled_reason = f"the name {name!r} is already taken by {first.distribution}"
                self.refused.append(record)
                continue
            records[name] = record
        for record in records.values():
            record.disabled_reason = self._disabled_reason(record)
        return records

    def _disabled_reason(self, record: PluginRecord) -> str:
        if record.name in self.block:
            return f"disabled by {ENV_BLOCK}"
        if record.builtin:
            return ""
        if not self.autoload:
            return f"plugin autoloading is off ({ENV_DISABLE_AUTOLOAD})"
        if self.allow and record.name not in self.allow:
            return f"not in the allow-list {ENV_ALLOW}={','.join(sorted(self.allow))}"
        return ""

    # ---- loading ---------------------------------------------------------------------------

    def load(self, name: str) -> Backend | None:
        """Import plugin ``name`` (once) and return its backend; None if disabled or broken."""
        record = self.records().get(name)
        if record is None or record.disabled_reason:
            return None
        with self._lock:
            if not record.loaded:
                record.loaded = True
                try:
                    record.backend = self._import_backend(record)
                except Exception as error:
                    record.error = describe_error(error)
                    logger.warning(
                        "acceleron plugin %r (%s %s) failed to load and is skipped: %s",
                        record.name,
                        record.distribution,
                        record.version,
                        record.error,
                    )
                    if self.strict:
                        raise PluginLoadError(
                            f"plugin {record.name!r} ({record.distribution} {record.version}) failed to load: "
                            f"{record.error}"
                        ) from error
            return record.backend

    def _import_backend(self, record: PluginRecord) -> Backend:
        entry_point = record.entry_point
        plugin = call_with_time_limit(
            entry_point.load if entry_point is not None else lambda: importlib.import_module(record.target),
            self.timeout,
            f"importing {record.target}",
        )
        if self._pm.is_registered(plugin):
            raise PluginLoadError(f"entry point {record.name!r} points at an already registered plugin")
        self._pm.register(plugin, name=f"acceleron-plugin-{record.name}")
        try:
            self._pm.check_pending()
            others = [p for p in self._pm.get_plugins() if p is not plugin]
            results = self._pm.subset_hook_caller("acceleron_backends", remove_plugins=others)()
            backends: list[Any] = []
            for result in results:
                backends.extend([result] if isinstance(result, Backend) else list(result or ()))
            if len(backends) != 1 or not isinstance(backends[0], Backend):
                raise PluginLoadError(
                    f"acceleron_backends() must return exactly one Backend instance, got {backends!r}"
                )
            backend = backends[0]
            if backend.name != record.name:
                raise PluginLoadError(
                    f"the backend is named {backend.name!r} but its entry point is {record.name!r}; "
                    "the entry point name must be the backend's canonical name"
                )
            # Sorting and name lookup use these for every backend: one bad value would break them all.
            if not isinstance(backend.priority, int) or isinstance(backend.priority, bool):
                raise PluginLoadError(f"the backend's priority must be an int (higher wins), got {backend.priority!r}")
            if isinstance(backend.aliases, str) or not all(isinstance(alias, str) for alias in backend.aliases):
                raise PluginLoadError(f"the backend's aliases must be a tuple of strings, got {backend.aliases!r}")
        except Exception:
            self._pm.unregister(plugin)
            raise
        record.plugin = plugin
        return backend

    # ---- calling into a loaded plugin --------------------------------------------------------

    def availability(self, backend: Backend) -> Availability:
        """``backend.availability()`` under the time limit.

        A plugin that raises, hangs or returns something else is marked ``load-failed`` (skipped
        from then on, reported by ``acceleron backends``) and :class:`PluginLoadError` is raised.
        """
        return self._call(backend, "availability()", lambda: _checked_availability(backend.availability()))

    def supported_tasks(self, backend: Backend) -> frozenset[str]:
        """``backend.supported_tasks()`` under the time limit, contained like :meth:`availability`."""
        return self._call(backend, "supported_tasks()", lambda: _checked_tasks(backend.supported_tasks()))

    def _call(self, backend: Backend, what: str, func: Callable[[], T]) -> T:
        try:
            return call_with_time_limit(func, self.timeout, f"{what} of plugin {backend.name!r}")
        except Exception as error:
            record = self._record_of(backend)
            if record is None:  # a Backend instance the caller passed: nothing to mark
                raise PluginLoadError(
                    f"accelerator {backend.name!r}: {what} failed: {describe_error(error)}"
                ) from error
            raise self._failed(record, f"{what} failed: {describe_error(error)}") from error

    def _record_of(self, backend: Backend) -> PluginRecord | None:
        record = self.records().get(getattr(backend, "name", None) or "")
        return record if record is not None and record.backend is backend else None

    def _failed(self, record: PluginRecord, error: str) -> PluginLoadError:
        """Mark a loaded plugin ``load-failed`` (as if its import had failed); return the error to raise."""
        with self._lock:
            record.error = error
            record.backend = None
            if record.plugin is not None and self._pm.is_registered(record.plugin):
                self._pm.unregister(record.plugin)  # its selection hook goes too
            record.plugin = None
        logger.warning(
            "acceleron plugin %r (%s %s) is broken and is skipped: %s",
            record.name,
            record.distribution,
            record.version,
            error,
        )
        return PluginLoadError(
            f"plugin {record.name!r} ({record.distribution} {record.version}) failed: {error}. "
            f"It is skipped; reinstall or uninstall it (pip uninstall {record.distribution or record.target})."
        )

    def select(self, task: str, candidates: Sequence[Backend], model: object) -> Backend | None:
        """Ask the ``acceleron_select_backend`` hooks, in pluggy's order, for one of ``candidates``.

        A hook that raises or returns something that is not a candidate is unregistered (its
        plugin marked ``load-failed``, its backend dropped from the candidates) and the
        remaining hooks are asked; the core's default policy answers last.
        """
        hook = self._pm.hook.acceleron_select_backend
        impls = hook.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            # A wrapper needs pluggy's own call; which plugin failed can then not be told apart.
            return hook(task=task, candidates=list(candidates), model=model)
        arguments = {"task": task, "candidates": list(candidates), "model": model}
        for impl in reversed(impls):  # pluggy calls the last registered first, trylast ones at the end
            try:
                result = impl.function(*(arguments[name] for name in impl.argnames))
                chosen = next((candidate for candidate in candidates if candidate is result), None)
                if result is not None and chosen is None:
                    raise PluginLoadError(
                        f"returned {result!r}, which is not one of the candidates {[c.name for c in candidates]}"
                    )
            except Exception as error:
                failure = self._hook_failed(impl.plugin, impl.plugin_name, error)
                if self.strict:
                    raise failure from error
                # The failed plugin's own backend is no candidate any more; ask the remaining hooks again.
                remaining = [candidate for candidate in candidates if self._record_of(candidate) is not None]
                return self.select(task, remaining, model) if remaining else None
            if chosen is not None:
                return chosen
        return None

    def _hook_failed(self, plugin: object, plugin_name: str | None, error: Exception) -> PluginLoadError:
        message = f"its acceleron_select_backend hook failed: {describe_error(error)}"
        for record in self.records().values():
            if record.plugin is not None and record.plugin is plugin:
                return self._failed(record, message)
        with self._lock:  # a policy registered in-process with register()
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
        logger.warning("acceleron selection plugin %r is broken and is unregistered: %s", plugin_name, message)
        return PluginLoadError(f"selection plugin {plugin_name!r}: {message}")

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register an extra plugin object in-process (a selection policy, say)."""
        with self._lock:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()

    def unregister(self, plugin: object) -> None:
        with self._lock:
            self._pm.unregister(plugin)

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``hook.acceleron_select_backend(...)``)."""
        return self._pm.hook

    # ---- names -----------------------------------------------------------------------------

    def known_names(self) -> list[str]:
        """Every backend name acceleron knows: first-party ones and installed plugins."""
        return sorted(set(KNOWN_BACKENDS) | set(self.records()))

    def installed_names(self) -> list[str]:
        return sorted(name for name, record in self.records().items() if not record.disabled_reason)

    def resolve_name(self, accelerator: str) -> str:
        """The canonical name for ``accelerator`` (aliases and case folded), or UnknownBackendError."""
        if not isinstance(accelerator, str):
            raise TypeError(f"accelerator must be a string such as 'ort' or None, got {type(accelerator).__name__}")
        key = accelerator.strip().lower()
        records = self.records()
        if key in records or key in KNOWN_BACKENDS:
            return key
        for known in KNOWN_BACKENDS.values():
            if key in known.aliases:
                return known.name
        for name in list(records):
            backend = self.load(name)
            if backend is not None and key in (alias.lower() for alias in backend.aliases):
                return backend.name
        installed = ", ".join(self.installed_names()) or "none"
        raise UnknownBackendError(
            f"unknown accelerator {accelerator!r}; known: {', '.join(self.known_names())} "
            f"(installed: {installed}). Install one with: {KNOWN_BACKENDS['ort'].install_hint}"
        )

    def install_hint(self, name: str) -> str:
        known = KNOWN_BACKENDS.get(name)
        if known is not None:
            return known.install_hint
        backend = self.load(name)
        return backend.install_hint if backend is not None else ""

    # ---- lookup ------------------------------------------------------------------------------

    def get(self, accelerator: str) -> Backend:
        """The backend for a name or alias, loaded and checked to be available here."""
        name = self.resolve_name(accelerator)
        record = self.records().get(name)
        if record is None:
            raise BackendNotInstalledError(
                f"accelerator {name!r} is not installed. Install it with: {self.install_hint(name)}"
            )
        if record.disabled_reason:
            raise BackendUnavailableError(f"accelerator {name!r} is installed but {record.disabled_reason}.")
        backend = self.load(name)
        if backend is None:
            raise PluginLoadError(
                f"accelerator {name!r} ({record.distribution} {record.version}) failed to load: {record.error}. "
                f"Reinstall it: {self.install_hint(name) or f'pip install --force-reinstall {record.distribution}'}"
            )
        availability = self.availability(backend)
        if not availability:
            raise BackendUnavailableError(
                f"accelerator {name!r} cannot run here: {availability.reason} "
                f"Install what it needs with: {backend.install_hint or self.install_hint(name)}"
            )
        return backend

    def backends(self) -> list[Backend]:
        """Every installed, enabled backend that loads, in selection order."""
        loaded = [self.load(name) for name in self.records()]
        return self._ordered([backend for backend in loaded if backend is not None])

    def _ordered(self, backends: list[Backend]) -> list[Backend]:
        rank = {name: index for index, name in enumerate(self._user_priority())}
        return sorted(backends, key=lambda b: (rank.get(b.name, len(rank)), -b.priority, b.name))

    def _user_priority(self) -> list[str]:
        names = []
        for item in self.user_priority:
            try:
                names.append(self.resolve_name(item))
            except UnknownBackendError:
                logger.warning("%s names unknown backend %r; ignored", ENV_PRIORITY, item)
        return names


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset_plugin_manager() -> None:
    """Forget loaded plugins and re-read the environment switches on next use."""
    global _manager
    with _manager_lock:
        _manager = None


def get_backend(accelerator: str) -> Backend:
    """The installed, available backend for a name or alias."""
    return get_plugin_manager().get(accelerator)
