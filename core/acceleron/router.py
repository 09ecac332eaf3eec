"""``acceleron.pipeline()``: pick the backend, load the model on it, hand over to transformers.

The router never patches transformers: it loads an :class:`~acceleron.OptimizedModel` through the
chosen backend and passes that instance to the stock ``transformers.pipeline(...)``, which does
the pre- and post-processing exactly as it does for PyTorch models. For a task the installed
transformers has no pipeline for any more (question-answering in transformers 5), it builds
acceleron's own pipeline class for the task instead (see :mod:`acceleron.pipelines`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Backend
from acceleron.cache import read_manifest
from acceleron.errors import AcceleronError, ArtifactNotFoundError, InvalidOptionError, TaskNotSupportedError
from acceleron.modeling import MODEL_CLASSES, OptimizedModel
from acceleron.plugins import get_plugin_manager
from acceleron.tasks import get_task, infer_task, normalize_task, translation_languages

if TYPE_CHECKING:
    from transformers import Pipeline

logger = logging.getLogger(__name__)

#: ``from_pretrained`` arguments a user may pass through ``model_kwargs``.
_LOAD_KWARGS = frozenset(
    {
        "cache_dir",
        "local_files_only",
        "subfolder",
        "file_name",
        "export_cache",
        "validate",
        "strict",
    }
)


def _normalize_device(device: Any) -> str | None:
    if device is None:
        return None
    if isinstance(device, bool):
        raise TypeError(f"device must be an int, a string or a torch.device, got {device!r}")
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    return str(device)


def _normalize_dtype(dtype: Any) -> str | None:
    if dtype is None or dtype == "auto":
        return None
    name = str(dtype).replace("torch.", "")
    return {
        "fp32": "float32",
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "float": "float32",
    }.get(name, name)


def resolve_task(task: str | None, model: Any) -> str:
    """The canonical task: the one given, or the one a local folder or model instance implies."""
    if task is not None:
        return normalize_task(task)
    if isinstance(model, OptimizedModel):
        return model.task.name
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        folder = Path(text).expanduser()
        if folder.is_file():  # a file in a model folder (an artifact named directly)
            folder = folder.parent
        if folder.is_dir():
            manifest = read_manifest(folder)
            if manifest and manifest.get("task"):
                return normalize_task(str(manifest["task"]))
            return infer_task(folder)
        if _looks_local(text):
            raise ArtifactNotFoundError(f"no such model folder: {text}; check the path.")
    raise TaskNotSupportedError(
        "task is required unless model is a local folder (its config.json names the architecture) "
        "or an acceleron model instance; pass task='text-classification' or similar."
    )


def _looks_local(text: str) -> bool:
    """A path rather than a hub id (``user/name``): the same rule :func:`acceleron.sources.resolve_source` uses."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def _check_passed_model(model: OptimizedModel, accelerator: str | Backend | None, task: str) -> None:
    """A loaded model runs on its own backend; refuse another accelerator or an incompatible task."""
    if accelerator is not None:
        backend = accelerator if isinstance(accelerator, Backend) else get_plugin_manager().get(accelerator)
        if not backend.owns(model):
            raise AcceleronError(
                f"the model passed runs on {model.backend.name!r} but accelerator={backend.name!r} was asked for; "
                "pass accelerator=None, or load the model with the other backend."
            )
    if model.task.name != task and get_task(task).auto_class != model.task.auto_class:
        raise TaskNotSupportedError(
            f"the model passed was loaded for {model.task.name}, which cannot serve {task}; "
            f"load it again with task={task!r}."
        )


def pipeline(
    task: str | None = None,
    model: str | os.PathLike[str] | OptimizedModel | None = None,
    config: Any = None,
    tokenizer: Any = None,
    feature_extractor: Any = None,
    image_processor: Any = None,
    video_processor: Any = None,
    processor: Any = None,
    revision: str | None = None,
    use_fast: bool = True,
    token: str | bool | None = None,
    device: Any = None,
    device_map: Any = None,
    dtype: Any = "auto",
    trust_remote_code: bool | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    pipeline_class: Any = None,
    *,
    accelerator: str | Backend | None = None,
    export: bool | None = None,
    accelerator_options: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
    length_sorted: bool = True,
    **kwargs: Any,
) -> Pipeline:
    """Build the task's ``transformers.Pipeline`` with the model's forward on an accelerated backend.

    Takes every argument of ``transformers.pipeline()`` plus:

    :param accelerator: ``"ov"``/``"openvino"``, ``"ort"``/``"onnxruntime"``, ``"ipex"``, ``"torch"``,
        a third-party backend's name, a :class:`~acceleron.Backend` instance, or None for the best
        installed backend that supports the task.
    :param export: see :meth:`OptimizedModel.from_pretrained`.
    :param accelerator_options: backend options (``num_threads`` and backend-specific ones).
    :param num_threads: threads the backend computes with (None: the runtime's default); the same as
        ``accelerator_options={"num_threads": n}``.
    :param length_sorted: batch lists of sentences by length (same results, less padding), for the
        tasks in :data:`acceleron.fast_pipelines.FAST_PIPELINES`; False gives the stock class.

    ``device`` and ``dtype`` map to the backend's own options; ``model_kwargs`` may carry
    ``from_pretrained`` arguments such as ``cache_dir``, ``local_files_only``, ``file_name``, ``strict``.
    """
    if model is None:
        raise ValueError(
            "acceleron.pipeline() needs a model (an id, a folder, or an acceleron model): "
            "it does not pick default models."
        )
    if isinstance(model, Path):
        model = str(model)
    if not isinstance(model, (str, os.PathLike, OptimizedModel)):
        raise TypeError(
            f"model must be a model id, a folder path or an acceleron OptimizedModel, got {type(model).__name__}; "
            "to run a PyTorch model instance, use transformers.pipeline() or save it and pass its folder."
        )
    if "torch_dtype" in kwargs:
        torch_dtype = kwargs.pop("torch_dtype")
        dtype = torch_dtype if dtype == "auto" else dtype
    canonical_task = resolve_task(task, model)
    if canonical_task == "sentence-embedding":  # refused before anything is exported
        raise TaskNotSupportedError(
            "sentence-embedding has no transformers pipeline: use acceleron.embed(sentences, model) or "
            "acceleron.SentenceEncoder(model).encode(sentences) for pooled sentence vectors, or "
            "pipeline('feature-extraction', ...) for token vectors."
        )
    if isinstance(model, OptimizedModel):
        _check_passed_model(model, accelerator, canonical_task)
    if device_map is not None:
        logger.warning("acceleron: device_map is not supported by accelerated backends and is ignored; use device=")

    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise TypeError(
            f"model_kwargs must be a mapping such as {{'cache_dir': ...}}, got {type(model_kwargs).__name__}"
        )
    load_kwargs = dict(model_kwargs or {})
    unknown = sorted(set(load_kwargs) - _LOAD_KWARGS - {"dtype", "torch_dtype"})
    if unknown:
        raise TypeError(
            f"model_kwargs {unknown} are not understood by acceleron; allowed: {', '.join(sorted(_LOAD_KWARGS))}. "
            "Put backend options in accelerator_options."
        )
    if accelerator_options is not None and not isinstance(accelerator_options, Mapping):
        raise InvalidOptionError(
            f"accelerator_options must be a mapping such as {{'num_threads': 2}}, "
            f"got {type(accelerator_options).__name__} {accelerator_options!r}"
        )
    options: dict[str, Any] = dict(accelerator_options or {})
    if num_threads is not None:
        if options.get("num_threads", num_threads) != num_threads:
            raise InvalidOptionError(
                f"num_threads={num_threads!r} and accelerator_options num_threads={options['num_threads']!r} "
                "disagree: give it once."
            )
        options["num_threads"] = num_threads
    model_dtype = load_kwargs.pop("dtype", None) or load_kwargs.pop("torch_dtype", None)
    if model_dtype is not None and dtype == "auto":
        dtype = model_dtype
    if (name := _normalize_dtype(dtype)) is not None:
        options["dtype"] = name
    if (device_name := _normalize_device(device)) is not None:
        options["device"] = device_name

    if isinstance(model, OptimizedModel):
        if options or export is not None or load_kwargs:
            logger.warning("acceleron: a loaded model was passed; device, dtype, export and load options are ignored")
        optimized = model
    else:
        optimized = OptimizedModel.from_pretrained(
            model,
            accelerator=accelerator,
            export=export,
            task=canonical_task,
            revision=revision,
            token=token,
            trust_remote_code=bool(trust_remote_code),
            **load_kwargs,
            **options,
        )
    return _build_pipeline(
        canonical_task,
        optimized,
        # translation_xx_to_yy names the languages: the pipeline gets the name as given
        pipeline_task=task if isinstance(task, str) and translation_languages(task) else canonical_task,
        config=config,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        image_processor=image_processor,
        video_processor=video_processor,
        processor=processor,
        use_fast=use_fast,
        token=token,
        trust_remote_code=trust_remote_code,
        pipeline_class=pipeline_class,
        length_sorted=length_sorted,
        **kwargs,
    )


class _DropOurModelTypeComplaint(logging.Filter):
    """transformers logs an error when the model's class is not one of its own; ours are on purpose."""

    names: tuple[str, ...] = (OptimizedModel.__name__, *(cls.__name__ for cls in MODEL_CLASSES))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("is not supported for" in message and any(name in message for name in self.names))


_filter_lock = threading.Lock()
_filter_installed = False


def _install_log_filter() -> None:
    """Once per process (never removed, so concurrent builds cannot race on it)."""
    global _filter_installed
    from transformers.pipelines import base as pipeline_base

    with _filter_lock:
        if not _filter_installed:
            logger_ = pipeline_base.logger
            (logger_.logger if hasattr(logger_, "logger") else logger_).addFilter(_DropOurModelTypeComplaint())
            _filter_installed = True


def _build_pipeline(
    task: str, model: OptimizedModel, *, length_sorted: bool, pipeline_task: str | None = None, **kwargs: Any
) -> Pipeline:
    import transformers
    from transformers.pipelines import check_task

    from acceleron.pipelines import replacement_pipeline

    replacement = replacement_pipeline(task)
    if replacement is not None:
        cls = kwargs.pop("pipeline_class", None) or replacement
        return _build_replacement(pipeline_task or task, model, cls, **kwargs)
    if kwargs.get("pipeline_class") is None and length_sorted:
        from acceleron.fast_pipelines import FAST_PIPELINES

        kwargs["pipeline_class"] = FAST_PIPELINES.get(task)
    # transformers infers preprocessors only from a model *id*; with a model instance we name the
    # folder that holds them (the source folder, or the cache entry they were copied into) for
    # every component the pipeline class loads.
    pipeline_class = kwargs.get("pipeline_class") or _resolve_class(check_task(task)[1]["impl"])
    for component in ("tokenizer", "feature_extractor", "image_processor", "processor"):
        if kwargs.get(component) is None and getattr(pipeline_class, f"_load_{component}", None) is not False:
            kwargs[component] = model.name_or_path
    if isinstance(kwargs.get("feature_extractor"), str):
        # transformers looks for a CTC decoder by model id when given a feature extractor path; an
        # instance skips that lookup, which needs a hub id we do not have.
        try:
            kwargs["feature_extractor"] = transformers.AutoFeatureExtractor.from_pretrained(
                kwargs["feature_extractor"], trust_remote_code=bool(kwargs.get("trust_remote_code"))
            )
        except OSError:
            if getattr(pipeline_class, "_load_feature_extractor", None):
                raise
            kwargs["feature_extractor"] = None  # optional for this pipeline, as transformers treats it
    _install_log_filter()
    build: Any = transformers.pipeline  # its overloads want a PreTrainedModel; ours quacks like one
    return build(task=task, model=model, device=model.device, **kwargs)


def _resolve_class(impl: Any) -> Any:
    """A pipeline class from transformers' task registry, which names some by dotted path (transformers 5)."""
    if not isinstance(impl, str):
        return impl
    import importlib

    module_name, _, class_name = impl.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


#: Pipeline components -> the transformers Auto class that loads each from a folder.
_COMPONENT_LOADERS = {
    "tokenizer": "AutoTokenizer",
    "feature_extractor": "AutoFeatureExtractor",
    "image_processor": "AutoImageProcessor",
    "video_processor": "AutoVideoProcessor",
    "processor": "AutoProcessor",
}


def _build_replacement(
    task: str,
    model: OptimizedModel,
    pipeline_class: Any,
    *,
    config: Any = None,
    use_fast: bool = True,
    token: str | bool | None = None,
    trust_remote_code: bool | None = None,
    **kwargs: Any,
) -> Pipeline:
    """Build acceleron's class for a task the installed transformers has no pipeline for (see
    :mod:`acceleron.pipelines`).

    ``transformers.pipeline()`` refuses such a task before it looks at ``pipeline_class``, so the class
    is built here: each component its ``_load_*`` flag asks for (True: needed, None: if the folder has
    one) is loaded from the folder holding the model's preprocessors unless passed; ``config`` is the
    loaded model's own.
    """
    import transformers

    for component, loader in _COMPONENT_LOADERS.items():
        given = kwargs.pop(component, None)
        wanted = getattr(pipeline_class, f"_load_{component}", None)
        if given is None and wanted is False:
            continue
        if given is None or isinstance(given, (str, os.PathLike)):
            source = model.name_or_path if given is None else os.fspath(given)
            options: dict[str, Any] = {"token": token, "trust_remote_code": bool(trust_remote_code)}
            if component == "tokenizer":
                options["use_fast"] = use_fast
            try:
                given = getattr(transformers, loader).from_pretrained(source, **options)
            except (OSError, ValueError):
                if wanted:
                    raise
                given = None  # optional for this pipeline
        if given is not None:
            kwargs[component] = given
    built: Pipeline = pipeline_class(model=model, task=task, device=model.device, **kwargs)
    return built
