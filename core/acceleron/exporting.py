"""Export orchestration: PyTorch weights -> the core's plan -> the backend's artifact -> a validated cache entry.

One export compiles once: the artifact is committed to the cache, loaded into the session that
will serve, and validated with that session. A structural failure (the export does not run, an
output is missing or misshapen) is an :class:`~acceleron.errors.ExportError` and nothing stays
cached; ``strict`` only decides whether a numeric difference beyond the tolerance raises.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import acceleron
from acceleron import progress
from acceleron.backend import Backend, Options, Session, distribution_version, source_digest
from acceleron.cache import CacheEntry, ExportCache, cache_key
from acceleron.errors import AcceleronError, ExportError
from acceleron.sources import ModelSource, copy_preprocessor_files, source_fingerprint
from acceleron.tasks import TaskSpec
from acceleron.validate import ValidationReport, validate_session

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
) -> tuple[CacheEntry, Session | None]:
    """Export ``source`` for ``task`` to ``backend`` into the cache, or find the cached export.

    Returns the entry and, when this call built it, the session it was validated with (so the
    caller does not compile it again); None on a cache hit.
    """
    parts = export_key_parts(source, task, backend, options)
    key = cache_key(parts)
    state: dict[str, Any] = {}

    def build(folder: Path) -> dict[str, Any]:
        torch_model = _load_torch_model(source, task, trust_remote_code)
        with progress.stage(f"exporting {source} ({task.name}) to {backend.name}"):
            try:
                plan = backend.prepare_plan(task.plan(torch_model), options)
                artifact = Path(backend.export(plan, folder, options))
            except AcceleronError:
                raise
            except Exception as error:
                raise ExportError(
                    f"exporting {source} for {task.name} to {backend.name} failed: {type(error).__name__}: {error}"
                ) from error
        if not artifact.is_file() or folder.resolve() not in artifact.resolve().parents:
            raise ExportError(f"backend {backend.name!r} export returned {artifact}, not a file inside {folder}")
        copy_preprocessor_files(source.path, folder)
        state["plan"] = plan
        return {"artifact": artifact.resolve().relative_to(folder.resolve()).as_posix(), "validation": None}

    def load_and_validate(entry: CacheEntry) -> dict[str, Any]:
        session = backend.load(entry.path / entry.manifest["artifact"], task, options)
        state["session"] = session
        if not validate:
            return {}
        with progress.stage("validating the export against PyTorch"):
            report = validate_session(session, state["plan"])
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
    return entry, state.get("session")


def check_recorded_validation(manifest: dict[str, Any], strict: bool) -> None:
    """With ``strict``, raise for an artifact whose recorded validation failed."""
    validation = manifest.get("validation")
    if strict and isinstance(validation, dict) and not validation.get("passed", False):
        fields = {"passed", "dtype", "atol", "rtol", "error"}
        ValidationReport(**{k: v for k, v in validation.items() if k in fields}).raise_if_failed()
