"""From a model id or folder to a running session: find the artifact or export one, then load it once.

:func:`load_parts` is what ``OptimizedModel.from_pretrained`` and ``acceleron.pipeline()`` run; it
returns the pieces a model object is made of. A folder that already holds the backend's artifact is
loaded as it is, with the artifact options its manifest records (a saved bf16 model reports and runs
as bf16, whatever the caller's defaults); otherwise the PyTorch weights are exported through the
cache (:mod:`acceleron.exporting`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Backend, Options, Session
from acceleron.cache import ExportCache, confined_path, read_manifest
from acceleron.errors import (
    ArtifactNotFoundError,
    TaskNotSupportedError,
    UnsafePathError,
    UntrustedArtifactError,
)
from acceleron.exporting import check_recorded_validation, export_to_cache, graph_artifacts, load_sessions
from acceleron.selection import resolve_backend
from acceleron.sources import ModelSource, check_inside, resolve_source
from acceleron.tasks import CausalLM, TaskSpec, get_task, infer_task

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)


@dataclass
class LoadedParts:
    """What a model object is made of."""

    backend: Backend
    session: Session
    config: PretrainedConfig
    task: TaskSpec
    artifact: Path
    preprocessor_dir: Path
    options: Options
    manifest: dict[str, Any]
    #: Every graph's session by graph name, the main one (``session``) first.
    sessions: dict[str, Session] = dataclasses.field(default_factory=dict)
    #: Every graph's artifact by graph name, the main one (``artifact``) first.
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)


def task_of(source: ModelSource, task: str | None) -> TaskSpec:
    """The task asked for, else the one the folder's manifest records, else the one its config implies.

    Of a task's entries (see :func:`acceleron.tasks.task_variants`), the one serving the config's
    architectures.
    """
    if task is None:
        manifest = read_manifest(source.path) or {}
        task = str(manifest["task"]) if manifest.get("task") else infer_task(source.path)
    return get_task(task, _architectures(source))


def _architectures(source: ModelSource) -> list[str]:
    try:
        config = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # no readable config: loading it reports that
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return [str(name) for name in architectures] if isinstance(architectures, list) else []


def check_task_fits(source: ModelSource, spec: TaskSpec) -> None:
    """Refuse a text-generation request for a model that is no causal language model.

    transformers would build an LM head with random weights (an encoder such as BERT has none) and
    generate noise without an error; the config's architectures say so before anything is loaded.
    """
    if not isinstance(spec.kind, CausalLM):
        return
    try:
        config = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no readable config: loading it reports that
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not architectures or config.get("is_decoder"):
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if not any(name in causal or str(name).endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        raise TaskNotSupportedError(
            f"{source} is a {', '.join(map(str, architectures))}, not a causal language model, so it cannot "
            f"serve {spec.name} (it has no trained LM head). Use a decoder model (GPT-2, Llama, Qwen2, ...) or "
            "a task this model was trained for."
        )


def options_from_manifest(
    backend: Backend, options: Options, manifest: Mapping[str, Any], source: ModelSource
) -> Options:
    """The caller's options with the artifact-shaping ones the artifact was made with.

    A caller who asked explicitly for something else is told that the artifact is loaded as it is.
    """
    recorded = manifest.get("options")
    if not isinstance(recorded, Mapping):
        return options
    changes: dict[str, Any] = {}
    for name in sorted(options.fixed_by_artifact(recorded) & set(recorded)):
        made = recorded[name]
        asked = options.compute_dtype if name == "dtype" else getattr(options, name)
        if made is None or made == asked:
            continue
        explicit = options.dtype != "auto" if name == "dtype" else asked != _default(type(options), name)
        if explicit:
            logger.warning(
                "acceleron: %s holds a %s artifact made with %s=%r, not the %r asked for; it is loaded as it is "
                "(pass export=True to export again with %s=%r)",
                source,
                backend.name,
                name,
                made,
                asked,
                name,
                asked,
            )
        changes[name] = made
    if not changes:
        return options
    return backend.parse_options({**options.to_dict(), **changes})


def _default(cls: type[Options], name: str) -> Any:
    for field in dataclasses.fields(cls):
        if field.name == name:
            return field.default
    return None


def _check_file_name(file_name: str, source: ModelSource) -> None:
    """``file_name`` names a file of the model folder: a relative path that stays inside it."""
    if not isinstance(file_name, str) or not confined_path(Path(file_name).as_posix()):
        raise UnsafePathError(
            f"file_name={file_name!r} leads outside the model folder {source.path}; give the name of a file "
            "inside it, such as 'model.onnx' or 'onnx/model.onnx'."
        )
    path = source.path / file_name
    if path.exists():
        check_inside(path, source.path, f"file_name={file_name!r}:")


def _own_export(folder: Path, export_cache: ExportCache | str | os.PathLike[str] | None) -> bool:
    """Whether ``folder`` is an intact entry of the export cache: an artifact acceleron wrote itself."""
    cache = export_cache if isinstance(export_cache, ExportCache) else ExportCache(export_cache)
    if folder.resolve().parent != cache.root.resolve():
        return False
    return cache.lookup(folder.name) is not None


def load_config(folder: Path, trust_remote_code: bool) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ArtifactNotFoundError(
            f"{folder} has no usable config.json ({error}); it is needed next to the artifact."
        ) from error
    config._name_or_path = str(folder)
    return config


@dataclass
class Located:
    """Where a model's artifact is, found in its folder or exported now (see :func:`locate`)."""

    backend: Backend
    task: TaskSpec
    options: Options
    artifact: Path
    #: The folder holding the artifact, its config and preprocessors (the model's, or a cache entry).
    folder: Path
    manifest: dict[str, Any]
    #: The validated sessions when this call exported the artifact (so it is not compiled again), else None.
    sessions: dict[str, Session] | None
    #: Every graph's artifact by name, the main one first (one entry for single-graph kinds).
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)


def locate(
    model_id_or_path: str | os.PathLike[str],
    *,
    accelerator: str | Backend | None = None,
    task: str | None = None,
    options: Mapping[str, Any] | Options | None = None,
    export: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    trust_remote_code: bool = False,
    subfolder: str = "",
    file_name: str | None = None,
    export_cache: ExportCache | str | os.PathLike[str] | None = None,
    validate: bool = True,
    strict: bool = False,
) -> Located:
    """Resolve the source, the task and the backend, then find the artifact in the folder or export it.

    See :meth:`acceleron.OptimizedModel.from_pretrained` for the arguments.
    """
    if export not in (None, True, False):
        raise TypeError(f"export must be None, True or False, got {export!r}")
    source = resolve_source(
        model_id_or_path,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        subfolder=subfolder,
    )
    spec = task_of(source, task)
    check_task_fits(source, spec)
    backend = resolve_backend(accelerator, spec.name)
    parsed = backend.parse_options(options)
    file_name = file_name or source.file_name
    if file_name is not None:
        _check_file_name(file_name, source)
    artifacts = {} if export else find_graph_artifacts(backend, source, spec, file_name)
    artifact = next(iter(artifacts.values()), None)
    sessions: dict[str, Session] | None = None
    if artifact is not None:
        if backend.artifact_runs_code and not trust_remote_code and not _own_export(source.path, export_cache):
            raise UntrustedArtifactError(
                f"{artifact} is a {backend.name} artifact, and loading it runs the code it holds. Pass "
                f"trust_remote_code=True if you trust {source}, or export=True to export it again from the weights."
            )
        manifest = read_manifest(source.path) or {}
        parsed = options_from_manifest(backend, parsed, manifest, source)
        check_recorded_validation(manifest, strict)
        preprocessor_dir = source.path
    elif export is False:
        raise ArtifactNotFoundError(
            f"{source} holds no {backend.name} artifact"
            + (f" named {file_name!r}" if file_name else "")
            + "; pass export=True (or leave export=None) to export it from the PyTorch weights."
        )
    else:
        cache = export_cache if isinstance(export_cache, ExportCache) else ExportCache(export_cache)
        entry, sessions = export_to_cache(
            backend,
            source,
            spec,
            parsed,
            cache=cache,
            trust_remote_code=trust_remote_code,
            validate=validate,
            strict=strict,
        )
        artifacts = graph_artifacts(entry.path, entry.manifest, spec)
        artifact = next(iter(artifacts.values()))
        manifest = entry.manifest
        preprocessor_dir = entry.path
    return Located(backend, spec, parsed, artifact, preprocessor_dir, dict(manifest), sessions, artifacts)


def find_graph_artifacts(
    backend: Backend, source: ModelSource, spec: TaskSpec, file_name: str | None
) -> dict[str, Path]:
    """The backend's artifacts in the model folder, by graph name; empty when it holds none.

    A kind of one graph: the backend's artifact at the usual place. A kind of several: each graph's
    artifact in the subfolder named after it (how exports and ``save_pretrained`` lay them out); a
    folder holding some of them but not all is refused, naming the missing ones.
    """
    names = spec.kind.graph_names
    if len(names) == 1:
        found = backend.find_artifact(source.path, file_name)
        return {names[0]: found} if found is not None else {}
    artifacts: dict[str, Path] = {}
    for name in names:
        folder = source.path / name
        found = backend.find_artifact(folder) if folder.is_dir() else None
        if found is not None:
            check_inside(found, source.path, f"the {name} artifact")
            artifacts[name] = found
    if artifacts and len(artifacts) < len(names):
        missing = [name for name in names if name not in artifacts]
        raise ArtifactNotFoundError(
            f"{source} holds the {backend.name} artifacts of {', '.join(artifacts)} but not of {', '.join(missing)} "
            f"({spec.name} needs one per graph: {', '.join(f'{n}/' for n in names)}); copy the missing subfolder, "
            "or pass export=True to export all of them again."
        )
    return artifacts


def load_parts(
    model_id_or_path: str | os.PathLike[str],
    *,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> LoadedParts:
    """:func:`locate` the artifact, then load its session once (unless exporting just made it) and config.

    See :meth:`acceleron.OptimizedModel.from_pretrained` for the arguments.
    """
    located = locate(model_id_or_path, trust_remote_code=trust_remote_code, **kwargs)
    backend, spec, parsed, artifact = located.backend, located.task, located.options, located.artifact
    preprocessor_dir, manifest, sessions = located.folder, located.manifest, located.sessions
    config = load_config(preprocessor_dir, trust_remote_code)
    artifacts = located.artifacts or {spec.kind.graph_names[0]: artifact}
    if sessions is None:
        sessions = load_sessions(backend, artifacts, spec, parsed)
    return LoadedParts(
        backend=backend,
        session=next(iter(sessions.values())),
        config=config,
        task=spec,
        artifact=artifact,
        preprocessor_dir=preprocessor_dir,
        options=parsed,
        manifest=dict(manifest),
        sessions=dict(sessions),
        artifacts=dict(artifacts),
    )
