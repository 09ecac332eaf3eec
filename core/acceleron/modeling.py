"""``OptimizedModel``: a transformers-compatible model whose forward runs on a backend.

``from_pretrained`` decides by itself whether to load or to export: if the source already holds
the backend's artifact it is loaded; otherwise the PyTorch weights are exported, validated and
cached (see :mod:`acceleron.cache`). Calling the model returns the task's transformers
``ModelOutput``, so stock pipelines pre- and post-process it unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import uuid
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acceleron import progress
from acceleron.cache import (
    MANIFEST_NAME,
    CacheEntry,
    ExportCache,
    cache_key,
    describe_files,
    file_sha256,
    read_manifest,
    write_manifest,
)
from acceleron.errors import AcceleronError, ArtifactNotFoundError, ExportError, TaskNotSupportedError
from acceleron.tasks import TaskSpec, get_task, infer_task

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.utils import ModelOutput

    from acceleron.backend import Backend
    from acceleron.validate import ValidationReport

logger = logging.getLogger(__name__)

#: Top-level files of a model folder that describe the model or its preprocessing (not weights).
_PREPROCESSOR_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")


# ---- where the model comes from ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A model folder on disk, and the id the user named it by."""

    path: Path
    model_id: str
    revision: str | None
    is_local: bool
    file_name: str | None = None

    def __str__(self) -> str:
        return self.model_id


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_source(
    model_id_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    subfolder: str = "",
) -> ModelSource:
    """Find the model folder: a local path, or a hub snapshot (honouring HF_HUB_OFFLINE)."""
    if not isinstance(model_id_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a model id or a folder path, got {type(model_id_or_path).__name__}")
    text = os.fspath(model_id_or_path)
    if not text.strip():
        raise ValueError("model must not be empty: give a model id or a folder path")
    path = Path(text).expanduser()
    file_name = None
    if path.is_file():
        path, file_name = path.parent, path.name
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise ArtifactNotFoundError(f"{path} has no subfolder {subfolder!r}")
        return ModelSource(folder.resolve(), text, revision, True, file_name)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise ArtifactNotFoundError(f"no such model folder: {text}")
    from huggingface_hub import snapshot_download

    offline = bool(local_files_only) or _offline()
    try:
        snapshot = snapshot_download(
            text,
            revision=revision,
            token=token,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=offline,
            ignore_patterns=[
                "*.h5",
                "*.msgpack",
                "*.ot",
                "flax_model*",
                "tf_model*",
                "rust_model*",
                "coreml/*",
            ],
        )
    except Exception as error:
        where = "in the local hub cache (offline mode)" if offline else "locally or on the hub"
        raise ArtifactNotFoundError(
            f"cannot find model {text!r} {where}: {type(error).__name__}: {error}. "
            "Check the id, or pass a local folder."
        ) from error
    folder = Path(snapshot) / subfolder if subfolder else Path(snapshot)
    return ModelSource(folder, text, Path(snapshot).name, False)


def copy_preprocessor_files(source: Path, target: Path) -> list[str]:
    """Copy config, tokenizer and processor files (never weights) from ``source`` to ``target``."""
    copied = []
    for path in sorted(source.iterdir()):
        if (
            path.is_file()
            and path.suffix in _PREPROCESSOR_SUFFIXES
            and path.name != MANIFEST_NAME
            and not (target / path.name).exists()
        ):
            shutil.copy2(path, target / path.name)
            copied.append(path.name)
    return copied


def source_fingerprint(source: ModelSource) -> str:
    """What identifies the source's content: a hub commit, or the hashes of the folder's top-level files."""
    if not source.is_local:
        return f"hub:{source.model_id}@{source.revision}"
    entries = []
    for path in sorted(source.path.iterdir()):
        if path.is_file() and path.name != MANIFEST_NAME:
            entries.append(f"{path.name}:{_memo_sha256(path)}")
    return "sha256:" + cache_key({"files": entries})


_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _memo_sha256(path: Path) -> str:
    # Hashing weights costs ~0.1 s per 100 MB; remember digests per (path, size, mtime) in-process.
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        cached = _hash_memo.get(key)
    if cached is None:
        cached = file_sha256(path)
        with _hash_lock:
            _hash_memo[key] = cached
    return cached


def _versions(backend: Backend) -> dict[str, str | None]:
    import acceleron
    from acceleron.backend import distribution_version

    return {
        "acceleron": acceleron.__version__,
        "torch": distribution_version("torch"),
        "transformers": distribution_version("transformers"),
        **backend.versions(),
    }


# ---- export and validation -----------------------------------------------------------------------


def validate_artifact(
    backend: Backend,
    artifact: Path,
    torch_model: PreTrainedModel,
    task: TaskSpec,
    options: Mapping[str, Any],
) -> ValidationReport:
    """Load ``artifact`` with ``backend`` and compare it with ``torch_model`` on fresh inputs."""
    import torch

    from acceleron.validate import ValidationReport, compare_outputs, tolerance_for

    dtype = backend.effective_dtype(options)
    if task.generative:
        return _validate_generative(backend, artifact, torch_model, task, options, dtype)
    inputs = task.validation_inputs(torch_model)
    with torch.inference_mode():
        reference = {k: v for k, v in torch_model(**inputs).items() if isinstance(v, torch.Tensor)}
    try:
        session = backend.load(artifact, task, options)
        candidate = backend._forward(session, inputs, task)
    except Exception as error:
        tolerance = tolerance_for(task, dtype)
        return ValidationReport(
            False, dtype, tolerance.atol, tolerance.rtol, error=f"running the export failed: {error!r}"
        )
    return compare_outputs(reference, candidate, task, dtype)


def _validate_generative(
    backend: Backend,
    artifact: Path,
    torch_model: PreTrainedModel,
    task: TaskSpec,
    options: Mapping[str, Any],
    dtype: str,
) -> ValidationReport:
    """Compare a text-generation export with PyTorch float32 on a prefill and a decode step."""
    import torch

    from acceleron import kv_cache
    from acceleron.validate import ValidationReport, compare_outputs, tolerance_for

    reference_model = kv_cache.FlatCacheCausalLM(torch_model.float()).eval()
    names = reference_model.layout.output_names
    plain = dataclasses.replace(task, classifier=False)
    try:
        session = backend.load(artifact, task, options)
    except Exception as error:
        tolerance = tolerance_for(task, dtype)
        return ValidationReport(
            False, dtype, tolerance.atol, tolerance.rtol, error=f"loading the export failed: {error!r}"
        )
    input_dtype = getattr(torch, backend.input_dtype(options))
    reports: dict[str, ValidationReport] = {}
    for step, inputs in kv_cache.model_validation_cases(reference_model).items():
        with torch.inference_mode():
            reference = kv_cache.visible(dict(zip(names, reference_model(*inputs.values()))), inputs["attention_mask"])
        fed = {name: v.to(input_dtype) if v.is_floating_point() else v for name, v in inputs.items()}
        try:
            candidate = kv_cache.visible(dict(backend._forward(session, fed, task)), inputs["attention_mask"])
        except Exception as error:
            tolerance = tolerance_for(task, dtype)
            return ValidationReport(
                False, dtype, tolerance.atol, tolerance.rtol, error=f"running the {step} step failed: {error!r}"
            )
        logits = compare_outputs(reference, candidate, task, dtype, names=names[:1])
        # The cache is checked elementwise (argmax over head_dim means nothing); in reduced precision
        # its differences are reported, and the logits decide.
        present = compare_outputs(reference, candidate, plain, dtype, names=names[1:])
        if dtype != "float32":
            present = dataclasses.replace(
                present, outputs=[dataclasses.replace(o, passed=not o.problem) for o in present.outputs]
            )
        reports[step] = dataclasses.replace(logits, outputs=logits.outputs + present.outputs)
    first = next(iter(reports.values()))
    outputs = [
        dataclasses.replace(output, name=f"{step}.{output.name}")
        for step, report in reports.items()
        for output in report.outputs
    ]
    return ValidationReport(
        passed=all(output.passed for output in outputs),
        dtype=dtype,
        atol=first.atol,
        rtol=first.rtol,
        outputs=outputs,
        seconds=round(sum(report.seconds for report in reports.values()), 4),
    )


def export_to_cache(
    backend: Backend,
    source: ModelSource,
    task: TaskSpec,
    options: Mapping[str, Any],
    *,
    cache: ExportCache,
    trust_remote_code: bool = False,
    validate: bool = True,
    strict: bool = False,
) -> CacheEntry:
    """Export ``source`` for ``task`` to ``backend`` into the cache (or reuse the cached export)."""
    parts = {
        "source": source_fingerprint(source),
        "task": task.name,
        "backend": backend.name,
        "options": {name: options.get(name) for name in sorted(backend.artifact_options)},
        "versions": _versions(backend),
        "validate": validate,
    }
    key = cache_key(parts)

    def build(folder: Path) -> dict[str, Any]:
        with progress.stage(f"loading the PyTorch model {source}"):
            try:
                torch_model = task.load_torch_model(source.path, trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError) as error:
                raise ExportError(
                    f"cannot load the PyTorch model to export from {source.path}: {error}. "
                    f"Exporting needs transformers weights for {task.name} ({task.auto_class})."
                ) from error
        example = task.example_inputs(torch_model)
        with progress.stage(f"exporting {source} ({task.name}) to {backend.name}"):
            try:
                artifact = backend.export(torch_model, task, example, folder, options)
            except AcceleronError:
                raise
            except Exception as error:
                raise ExportError(
                    f"exporting {source} for {task.name} to {backend.name} failed: {type(error).__name__}: {error}"
                ) from error
        artifact = Path(artifact)
        if not artifact.is_file() or folder.resolve() not in artifact.resolve().parents:
            raise ExportError(f"backend {backend.name!r} export returned {artifact}, not a file inside {folder}")
        copy_preprocessor_files(source.path, folder)
        report = None
        if validate:
            with progress.stage("validating the export against PyTorch"):
                report = validate_artifact(backend, artifact, torch_model, task, options)
            (logger.info if report.passed else logger.warning)("acceleron: %s", report.summary())
            progress.note(report.summary())
            if strict:
                report.raise_if_failed()
        return {
            "artifact": artifact.resolve().relative_to(folder.resolve()).as_posix(),
            "validation": report.to_dict() if report is not None else None,
        }

    describe = {
        "task": task.name,
        "backend": backend.name,
        "options": {k: v for k, v in options.items() if k in backend.artifact_options},
        "source": {"id": source.model_id, "revision": source.revision, "fingerprint": parts["source"]},
        "versions": parts["versions"],
    }
    entry = cache.get_or_build(key, build, describe=describe)
    validation = entry.manifest.get("validation")
    if strict and isinstance(validation, dict) and not validation.get("passed", False):
        from acceleron.validate import ValidationReport

        ValidationReport(
            **{k: v for k, v in validation.items() if k in {"passed", "dtype", "atol", "rtol", "error"}}
        ).raise_if_failed()
    return entry


def _warn_on_option_mismatch(
    backend: Backend, manifest: Mapping[str, Any], options: Mapping[str, Any], source: ModelSource
) -> None:
    """A saved artifact was made with its own artifact options; say so when the caller asked for others."""
    made_with = manifest.get("options") or {}
    for name in sorted(backend.artifact_options):
        asked, made = options.get(name), made_with.get(name)
        if asked is None or made is None or (name == "dtype" and asked == "auto"):
            continue  # nothing asked for explicitly: the artifact is what the caller wants
        if asked != made:
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


# ---- the model ---------------------------------------------------------------------------------


class OptimizedModel(ABC):
    """A model of one backend, usable alone or in a transformers pipeline.

    Subclasses set ``backend_name``; plugins may add nothing else. Use
    ``XModel.from_pretrained(id_or_dir)``; ``model(**inputs)`` returns a transformers ``ModelOutput``.
    """

    backend_name: ClassVar[str]

    def __init__(
        self,
        *,
        backend: Backend,
        session: Any,
        config: PretrainedConfig,
        task: TaskSpec,
        artifact: Path,
        preprocessor_dir: Path,
        options: Mapping[str, Any],
        manifest: Mapping[str, Any] | None = None,
    ) -> None:
        if not getattr(type(self), "backend_name", None):
            raise TypeError("OptimizedModel is abstract: use a backend's model class or acceleron.pipeline()")
        self.backend = backend
        self.session = session
        self.config = config
        self.task = task
        self.artifact = artifact
        self.preprocessor_dir = preprocessor_dir
        self.options = dict(options)
        self.manifest = dict(manifest or {})
        self.generation_config = None
        self.main_input_name = {"text": "input_ids", "image": "pixel_values"}.get(task.modality, "input_values")

    # ---- loading ----

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike[str],
        *,
        export: bool | None = None,
        task: str | None = None,
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
        **backend_options: Any,
    ) -> OptimizedModel:
        """Load ``model_id_or_path`` on this class's backend.

        :param export: None loads the backend's artifact when the source has one and exports the
            PyTorch weights otherwise; True always exports; False never does (and raises if there
            is nothing to load).
        :param task: the task (or an alias); inferred from the folder when omitted.
        :param cache_dir: the Hugging Face hub cache; ``export_cache`` is acceleron's export cache.
        :param validate: compare a fresh export with PyTorch; ``strict`` raises when it differs.
        :param backend_options: ``device``, ``dtype``, ``num_threads`` and backend-specific options.
        """
        from acceleron.plugins import get_backend

        if export not in (None, True, False):
            raise TypeError(f"export must be None, True or False, got {export!r}")
        backend = get_backend(cls.backend_name)
        options = backend.check_options(backend_options)
        source = resolve_source(
            model_id_or_path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            subfolder=subfolder,
        )
        file_name = file_name or source.file_name
        manifest = read_manifest(source.path)
        if task is None:
            task = manifest.get("task") if manifest else None
        spec = get_task(task) if task is not None else get_task(infer_task(source.path))
        if spec.name not in backend.supported_tasks():
            raise TaskNotSupportedError(
                f"accelerator {backend.name!r} does not support {spec.name}; it supports: "
                f"{', '.join(sorted(backend.supported_tasks()))}."
            )
        artifact = None if export else backend.find_artifact(source.path, file_name)
        preprocessor_dir = source.path
        if artifact is not None and manifest:
            _warn_on_option_mismatch(backend, manifest, options, source)
        if artifact is None:
            if export is False:
                raise ArtifactNotFoundError(
                    f"{source} holds no {backend.name} artifact"
                    + (f" named {file_name!r}" if file_name else "")
                    + "; pass export=True (or leave export=None) to export it from the PyTorch weights."
                )
            cache = export_cache if isinstance(export_cache, ExportCache) else ExportCache(export_cache)
            entry = export_to_cache(
                backend,
                source,
                spec,
                options,
                cache=cache,
                trust_remote_code=trust_remote_code,
                validate=validate,
                strict=strict,
            )
            artifact = entry.path / entry.manifest["artifact"]
            manifest = entry.manifest
            preprocessor_dir = entry.path
        return cls._load(backend, artifact, spec, options, preprocessor_dir, manifest, trust_remote_code)

    @classmethod
    def _load(
        cls,
        backend: Backend,
        artifact: Path,
        task: TaskSpec,
        options: Mapping[str, Any],
        preprocessor_dir: Path,
        manifest: Mapping[str, Any] | None,
        trust_remote_code: bool,
    ) -> OptimizedModel:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(preprocessor_dir), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise ArtifactNotFoundError(
                f"{preprocessor_dir} has no usable config.json ({error}); it is needed next to the artifact."
            ) from error
        config._name_or_path = str(preprocessor_dir)
        session = backend.load(artifact, task, options)
        if task.generative:
            from acceleron.generation import generative_class_for

            cls = generative_class_for(cls)
        return cls(
            backend=backend,
            session=session,
            config=config,
            task=task,
            artifact=artifact,
            preprocessor_dir=preprocessor_dir,
            options=options,
            manifest=manifest,
        )

    # ---- what transformers pipelines use ----

    @property
    def name_or_path(self) -> str:
        return str(self.preprocessor_dir)

    @property
    def device(self) -> torch.device:
        import torch

        device = str(self.options.get("device", "cpu"))
        return torch.device(device if device.startswith(("cuda", "xpu")) else "cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype inputs are given in (pipelines cast floating inputs to it)."""
        import torch

        return getattr(torch, self.backend.input_dtype(self.options))

    @property
    def input_modalities(self) -> tuple[str, ...]:
        return (self.task.modality,)

    def can_generate(self) -> bool:
        return False

    def to(self, device: Any = None, *args: Any, **kwargs: Any) -> OptimizedModel:
        import torch

        if device is None or torch.device(device) == self.device:
            return self
        raise AcceleronError(
            f"{type(self).__name__} runs on {self.device}; to run on {device}, "
            f"load it again with device={str(device)!r}."
        )

    def eval(self) -> OptimizedModel:
        return self

    def __call__(self, **inputs: Any) -> ModelOutput:
        return self.forward(**inputs)

    def forward(self, **inputs: Any) -> ModelOutput:
        """Run the backend on model inputs (tensors by name); returns the task's ``ModelOutput``."""
        import torch

        tensors = {name: value for name, value in inputs.items() if value is not None}
        if not tensors:
            raise ValueError(f"{type(self).__name__} got no inputs")
        for name, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"input {name!r} must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() == 0 or value.shape[0] == 0:
                raise ValueError(f"input {name!r} is an empty batch (shape {tuple(value.shape)})")
        outputs = self.backend._forward(self.session, tensors, self.task)
        return self.task.wrap_outputs(outputs)

    def report(self) -> dict[str, Any]:
        """What this model is and runs with: backend, task, artifact, runtime settings, validation."""
        return {
            "backend": self.backend.name,
            "task": self.task.name,
            "artifact": str(self.artifact),
            "runtime": self.backend.describe(self.session, self.options),
            "validation": self.manifest.get("validation"),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self.backend.name!r}, task={self.task.name!r}, "
            f"artifact={str(self.artifact)!r})"
        )

    # ---- saving ----

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write config, preprocessors, artifact and manifest so that ``from_pretrained`` loads it as is.

        Files are written to a temporary folder first and moved in at the end, so a failure leaves
        the target as it was.
        """
        target = Path(save_directory).expanduser()
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(f"{target} exists and is not a folder")
        target.mkdir(parents=True, exist_ok=True)
        staging = target / f".acceleron-save-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            artifact_root = self.artifact.parent
            for path in self.backend.artifact_files(self.artifact):
                relative = path.relative_to(artifact_root)
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, staging / relative)
            self.config.save_pretrained(staging)
            if self.generation_config is not None:
                self.generation_config.save_pretrained(staging)
            copy_preprocessor_files(self.preprocessor_dir, staging)
            manifest = {
                key: value for key, value in self.manifest.items() if key not in {"files", "key", "build_seconds"}
            }
            manifest.update(
                task=self.task.name,
                backend=self.backend.name,
                artifact=self.artifact.name,
                options={k: v for k, v in self.options.items() if k in self.backend.artifact_options},
            )
            manifest["files"] = describe_files(staging)
            write_manifest(staging, manifest)
            for path in sorted(staging.rglob("*"), key=lambda p: len(p.parts)):
                if path.is_file():
                    destination = target / path.relative_to(staging)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
    ) -> Any:
        """Upload the saved model to the hub in one commit (``HfApi.upload_folder``); returns its info."""
        if not isinstance(repo_id, str) or not repo_id.strip():
            raise ValueError("repo_id must be a non-empty string such as 'user/model-ort'")
        if _offline():
            raise AcceleronError("HF_HUB_OFFLINE is set: unset it to push to the hub, or save_pretrained() instead.")
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="acceleron-push-") as folder:
            self.save_pretrained(folder)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message or f"Upload {self.task.name} model for acceleron[{self.backend.name}]",
            )


_model_classes: dict[str, type[OptimizedModel]] = {}


def model_class_for(backend_name: str) -> type[OptimizedModel]:
    """The default :class:`OptimizedModel` subclass for a backend (created once)."""
    cls = _model_classes.get(backend_name)
    if cls is None:
        title = "".join(part.capitalize() for part in backend_name.replace("-", "_").split("_"))
        cls = type(f"{title}Model", (OptimizedModel,), {"backend_name": backend_name, "__module__": __name__})
        _model_classes[backend_name] = cls
    return cls
