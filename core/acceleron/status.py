"""What ``acceleron backends`` reports: every known or installed backend and its status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from acceleron.errors import PluginLoadError
from acceleron.plugins import KNOWN_BACKENDS, PluginManager, PluginRecord, Status, get_plugin_manager
from acceleron.tasks import _TASKS, TASKS, TaskSpec


@dataclass(frozen=True)
class BackendStatus:
    """What ``acceleron backends`` reports for one backend."""

    name: str
    status: Status
    reason: str = ""
    priority: int | None = None
    distribution: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    #: Tasks of the table the backend declares it cannot run, with its reason for each.
    unsupported: dict[str, str] = field(default_factory=dict)
    auto_select: bool = True
    builtin: bool = False
    install_hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "priority": self.priority,
            "distribution": self.distribution,
            "version": self.version,
            "aliases": list(self.aliases),
            "tasks": list(self.tasks),
            "unsupported": dict(self.unsupported),
            "auto_select": self.auto_select,
            "builtin": self.builtin,
            "install_hint": self.install_hint,
        }


def backend_statuses(registry: PluginManager) -> list[BackendStatus]:
    """One status per known or installed backend, for ``acceleron backends``."""
    statuses: list[BackendStatus] = []
    records = registry.records()
    for record in records.values():
        statuses.append(_status(registry, record))
    for record in registry.refused:  # a reserved or already taken name: listed so the user sees why
        statuses.append(
            BackendStatus(
                name=record.name,
                status="disabled",
                reason=record.disabled_reason,
                distribution=record.distribution,
                version=record.version,
            )
        )
    for name, known in KNOWN_BACKENDS.items():
        if name not in records:
            statuses.append(
                BackendStatus(
                    name=name,
                    status="not-installed",
                    reason=f"install with: {known.install_hint}",
                    distribution=known.distribution,
                    aliases=known.aliases,
                    install_hint=known.install_hint,
                )
            )
    # Loaded backends in selection order, then broken or disabled ones, then first-party ones to install.
    rank = {b.name: i for i, b in enumerate(registry.backends())}
    first_party = list(KNOWN_BACKENDS)
    return sorted(
        statuses,
        key=lambda s: (
            (0, rank[s.name], "")
            if s.name in rank and s.status != "disabled"  # not a refused namesake of a loaded backend
            else (2, first_party.index(s.name), "")
            if s.status == "not-installed"
            else (1, 0, s.name)
        ),
    )


def _status(registry: PluginManager, record: PluginRecord) -> BackendStatus:
    common: dict[str, Any] = {
        "name": record.name,
        "distribution": record.distribution,
        "version": record.version,
        "builtin": record.builtin,
    }
    if record.disabled_reason:
        return BackendStatus(status="disabled", reason=record.disabled_reason, **common)
    backend = registry.load(record.name)
    if backend is None:
        return BackendStatus(status="load-failed", reason=record.error, **common)
    try:  # the registry contains a plugin that raises or hangs here (strict mode re-raises)
        availability = registry.availability(backend)
        tasks = tuple(sorted(registry.supported_tasks(backend)))
        unsupported = {task: backend.unsupported_reason(task) for task in sorted(TASKS) if task not in tasks}
    except PluginLoadError:
        if registry.strict:
            raise
        return BackendStatus(status="load-failed", reason=record.error, **common)
    return BackendStatus(
        status="ok" if availability else "unavailable",
        reason=availability.reason,
        priority=backend.priority,
        aliases=tuple(backend.aliases),
        tasks=tasks,
        unsupported=unsupported,
        auto_select=backend.auto_select,
        install_hint=backend.install_hint,
        **common,
    )


def list_backends() -> list[BackendStatus]:
    """Status of every known or installed backend, best first."""
    return backend_statuses(get_plugin_manager())


#: How each task kind runs, in the task table.
_KIND_WORDS = {
    "single-pass": "one pass",
    "causal-lm": "decoder steps, KV cache",
    "encoder-decoder": "encoder, then decoder steps",
    "sentence-embedding": "one pass, pooled in the graph",
}
#: The backends of the README's table, in column order.
TABLE_BACKENDS = ("ov", "ort", "ipex", "torch")


def _models_served(spec: TaskSpec) -> str:
    """The models a task entry serves: its Auto class, and the transformers mapping that picks the entry."""
    mapping = spec.mapping_names.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower()
    mapping = {"model": "base", "speech_seq_2_seq": "speech seq2seq", "seq_to_seq_causal_lm": "seq2seq LM"}.get(
        mapping, mapping.replace("_", " ")
    )
    served = f"`{spec.auto_class}`"
    return f"{served} ({mapping} models)" if mapping else served


def task_table(statuses: list[BackendStatus] | None = None, backends: tuple[str, ...] = TABLE_BACKENDS) -> str:
    """A Markdown table of every task entry (a task served by two kinds has two rows) by backend, from the code.

    A cell is "yes" when the backend claims the task, "no" with the backend's reason when it declares
    it unsupported, and "not installed" for a backend that is not here.
    """
    by_name = {status.name: status for status in statuses or list_backends()}
    header = ["task", "how it runs", "models", *backends]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec in _TASKS:
        aliases = f" ({', '.join(spec.aliases)})" if spec.aliases else ""
        cells = [f"{spec.name}{aliases}", _KIND_WORDS.get(spec.kind.name, spec.kind.name), _models_served(spec)]
        for name in backends:
            status = by_name.get(name)
            if status is None or status.status != "ok":
                cells.append("not installed")
            elif spec.name in status.tasks:
                cells.append("yes")
            else:
                reason = status.unsupported.get(spec.name, "")
                cells.append(f"no: {reason.split('. ')[0].rstrip('.')}" if reason else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
