"""Export orchestration: PyTorch weights -> the core's plan -> the backend's artifact -> a validated cache entry.

One export compiles once: the artifact is committed to the cache, loaded into the session that
will serve, and validated with that session. A structural failure (the export does not run, an
output is missing or misshapen) is an :class:`~acceleron.errors.ExportError` and nothing stays
cached; ``strict`` only decides whether a numeric difference beyond the tolerance raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import acceleron
from acceleron import progress
from acceleron.backend import Backend, Options, Session, distribution_version, source_digest
from acceleron.cache import CacheEntry, ExportCache, cache_key
from acceleron.errors import AcceleronError, ArtifactLoadError, ExportError
from acceleron.sources import ModelSource, copy_preprocessor_files, source_fingerprint
from acceleron.tasks import ExportPlan, TaskSpec
from acceleron.validate import ValidationReport, validate_sessions

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


def artifact_versions(backend: Backend) -> dict[str, Any]:
    """Everything whose version shapes an artifact: the core, torch, transformers, the plugin, its runtime."""
    return {
        "acceleron": {"version": acceleron.__version__, "code": source_digest("acceleron")},
        "torch": distribution_version("torch"),
        "transformers": distribution_version("transformers"),
        "plugin": backend.plugin_version(),
        **backend.versions(),
    }


def export_key_parts(source: ModelSource, task: TaskSpec, backend: Backend, options: Options) -> dict[str, Any]:
    """What identifies an export in the cache."""
    return {
        "source": source_fingerprint(source),
        "task": task.name,
        "backend": backend.name,
        "options": options.artifact_key(),
        "versions": artifact_versions(backend),
        "host": backend.host_fingerprint(),
    }


def _load_torch_model(source: ModelSource, task: TaskSpec, trust_remote_code: bool) -> PreTrainedModel:
    with progress.stage(f"loading the PyTorch model {source}"):
        try:
            return task.load_torch_model(source.path, trust_remote_code=trust_remote_code)
        except AcceleronError:
            raise
        except Exception as error:  # a truncated safetensors file, weights that do not fit config.json, ...
            raise ExportError(
                f"cannot load the PyTorch model to export from {source.path}: {type(error).__name__}: {error}. "
                f"Exporting needs complete transformers weights for {task.name} ({task.auto_class}) that fit "
                "its config.json: download or save the model again."
            ) from error


def export_to_cache(
    backend: Backend,
    source: ModelSource,
    task: TaskSpec,
    options: Options,
    *,
    cache: ExportCache,
    trust_remote_code: bool = False,
    validate: bool = True,
    strict: bool = False,
) -> tuple[CacheEntry, dict[str, Session] | None]:
    """Export ``source`` for ``task`` to ``backend`` into the cache, or find the cached export.

    Returns the entry and, when this call built it, the sessions (one per graph) it was validated
    with (so the caller does not compile them again); None on a cache hit.
    """
    parts = export_key_parts(source, task, backend, options)
    key = cache_key(parts)
    state: dict[str, Any] = {}

    def build(folder: Path) -> dict[str, Any]:
        torch_model = _load_torch_model(source, task, trust_remote_code)
        with progress.stage(f"exporting {source} ({task.name}) to {backend.name}"):
            try:
                plan = backend.prepare_plan(task.plan(torch_model), options)
                graphs = _export_graphs(backend, plan, folder, options)
            except AcceleronError:
                raise
            except Exception as error:
                raise ExportError(
                    f"exporting {source} for {task.name} to {backend.name} failed: {type(error).__name__}: {error}"
                ) from error
        copy_preprocessor_files(source.path, folder)
        state["plan"] = plan
        relative = {name: path.resolve().relative_to(folder.resolve()).as_posix() for name, path in graphs.items()}
        result: dict[str, Any] = {"artifact": next(iter(relative.values())), "validation": None}
        if len(relative) > 1:
            result["graphs"] = relative
        return result

    def load_and_validate(entry: CacheEntry) -> dict[str, Any]:
        sessions = load_sessions(backend, graph_artifacts(entry.path, entry.manifest, task), task, options)
        state["sessions"] = sessions
        if not validate:
            return {}
        with progress.stage("validating the export against PyTorch"):
            report = validate_sessions(sessions, state["plan"])
        (logger.info if report.passed else logger.warning)("acceleron: %s", report.summary())
        progress.note(report.summary())
        if report.structural:
            raise ExportError(
                f"the {backend.name} export of {source} for {task.name} is unusable, so it was not cached: "
                f"{report.summary()}. The backend's export does not follow the core's plan (or cannot run "
                "this model); report it to the plugin's authors."
            )
        if strict:
            report.raise_if_failed()  # not cached either: a strict caller asked for nothing imprecise
        return {"validation": report.to_dict()}

    describe = {
        "task": task.name,
        "kind": task.kind.name,
        "backend": backend.name,
        "options": options.artifact_key(),
        "source": {"id": source.model_id, "revision": source.revision, "fingerprint": parts["source"]},
        "versions": parts["versions"],
        "host": parts["host"],
    }
    entry = cache.get_or_build(key, build, describe=describe, after_commit=load_and_validate)
    state.pop("plan", None)  # the PyTorch model is not needed any more
    check_recorded_validation(entry.manifest, strict)
    return entry, state.get("sessions")


def _export_graphs(backend: Backend, plan: ExportPlan, folder: Path, options: Options) -> dict[str, Path]:
    """Export ``plan`` into ``folder``; returns each graph's artifact, the main one first.

    A single-graph plan is the backend's export as it is. A plan of several graphs (an encoder and a
    decoder) is exported one graph at a time, each into the subfolder named after it, so a backend
    only ever converts one graph and names its files as it always does.
    """
    if len(plan.graphs) == 1:
        artifacts = {plan.graphs[0].name: Path(backend.export(plan, folder, options))}
    else:
        artifacts = {}
        for graph in plan.graphs:
            subfolder = folder / graph.name
            subfolder.mkdir()
            artifacts[graph.name] = Path(backend.export(plan.single(graph), subfolder, options))
    for name, artifact in artifacts.items():
        if not artifact.is_file() or folder.resolve() not in artifact.resolve().parents:
            raise ExportError(
                f"backend {backend.name!r} export of graph {name!r} returned {artifact}, not a file inside {folder}"
            )
    return artifacts


def graph_artifacts(folder: Path, manifest: Mapping[str, Any], task: TaskSpec) -> dict[str, Path]:
    """Each graph's artifact in an export-cache entry or saved folder, by graph name, the main one first."""
    graphs = manifest.get("graphs")
    if isinstance(graphs, Mapping) and graphs:
        return {str(name): folder / str(path) for name, path in graphs.items()}
    return {task.kind.graph_names[0]: folder / str(manifest["artifact"])}


def load_sessions(
    backend: Backend, artifacts: Mapping[str, Path], task: TaskSpec, options: Options
) -> dict[str, Session]:
    """One session per graph artifact; the runtime's own failure becomes an :class:`ArtifactLoadError`."""
    sessions: dict[str, Session] = {}
    for name, artifact in artifacts.items():
        try:
            sessions[name] = backend.load(artifact, task, options)
        except AcceleronError:
            raise
        except Exception as error:  # the runtime's own words for a truncated or mismatched file
            raise ArtifactLoadError(
                f"the {backend.name!r} backend cannot load {artifact}: {type(error).__name__}: {error}. "
                "The file may be truncated, corrupt or made for another model or version: export it again "
                "(export=True), or load the model from its PyTorch weights."
            ) from error
    return sessions


def check_recorded_validation(manifest: dict[str, Any], strict: bool) -> None:
    """With ``strict``, raise for an artifact whose recorded validation failed."""
    validation = manifest.get("validation")
    if strict and isinstance(validation, dict) and not validation.get("passed", False):
        fields = {"passed", "dtype", "atol", "rtol", "error"}
        ValidationReport(**{k: v for k, v in validation.items() if k in fields}).raise_if_failed()
