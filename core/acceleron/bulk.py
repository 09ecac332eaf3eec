"""Bulk inference over tables: a pipeline per worker, a batch of rows in, the same rows plus result columns out.

Two pieces serve every way of running a job (one process, Ray Data actors, the ``acceleron run
--input`` command):

* :func:`prepare_model` runs once, before any worker starts: it finds the backend's artifact in the
  model folder, or exports it into the export cache (or a folder of the caller's choice), and
  returns a :class:`PreparedModel` that says where workers load it from. Workers load with
  ``export=False``, so no worker ever exports and none waits on a cache lock.
* :class:`PipelinePredictor` is a callable class (``Dataset.map_batches`` builds one per actor): it
  builds one acceleron pipeline and turns each batch (a ``pyarrow.Table``, a ``pandas.DataFrame``
  or a dict of numpy arrays) into the same batch plus output columns Parquet can store: labels and
  scores, embeddings as fixed-size float lists, token spans as structs, generated text as strings.

A row that cannot be processed (null, not text, an empty string, or one the pipeline raises on)
never sinks the rows around it: with ``on_error="null"`` it gets null outputs and a message in the
error column, ``"skip"`` drops it (logged with its row id), ``"raise"`` stops with a
:class:`~acceleron.errors.RowError` naming it.

Needs pyarrow (``pip install 'acceleron[ray]'``); pandas only for pandas batches.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Backend
from acceleron.errors import AcceleronError, InvalidOptionError, RowError, TaskNotSupportedError
from acceleron.tasks import get_task

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

ON_ERROR = ("null", "skip", "raise")
#: Tasks whose rows are not one text each: bulk inference over a single column cannot feed them.
_NOT_ONE_COLUMN = {"question-answering": "a question and a context"}
#: The text pipelines of encoder-decoders and the key of their result (transformers 4's names).
_GENERATED_TEXT = {
    "text2text-generation": "generated_text",
    "summarization": "summary_text",
    "translation": "translation_text",
}
POOLING = ("mean", "cls", "none")
#: Default rows handed to a worker at once (a Ray batch); the pipeline batches them by ``batch_size``.
ROWS_PER_BATCH = 512
#: Internal column a file reader fills for a row it could not represent (a number in a text column of
#: a JSON Lines file); the predictor reports it as that row's error and drops the column.
READ_ERROR_COLUMN = "__acceleron_read_error__"
INSTALL_HINT = "pip install 'acceleron[ray]'"


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or an ImportError that says how to install it."""
    try:
        import pyarrow
    except ImportError as error:
        raise ImportError(
            f"bulk inference over tables needs pyarrow: {INSTALL_HINT} (or pip install pyarrow)"
        ) from error
    return pyarrow


# ---- preparing the model once, before the workers -------------------------------------------------


@dataclass(frozen=True)
class PreparedModel:
    """A model folder every worker loads with ``export=False``: nothing is exported after this.

    ``path`` is the folder (the model's own when it already holds the backend's artifact, a cache
    entry, or the folder passed as ``save_to``); ``file_name`` the artifact inside it. ``exported``
    says whether preparing it ran an export (False when an earlier export was reused).
    """

    task: str
    path: str
    accelerator: str | Backend
    backend: str
    file_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    exported: bool = False
    in_export_cache: bool = False

    def load_kwargs(self) -> dict[str, Any]:
        """``acceleron.pipeline()`` arguments that load this model without exporting."""
        options = dict(self.options)
        dtype = options.pop("dtype", None)
        kwargs: dict[str, Any] = {
            "task": self.task,
            "model": self.path,
            "accelerator": self.accelerator,
            "export": False,
            "accelerator_options": options,
        }
        if dtype is not None:
            kwargs["dtype"] = dtype
        if self.file_name:
            kwargs["model_kwargs"] = {"file_name": self.file_name}
        return kwargs


def prepare_model(
    task: str | None,
    model: str | os.PathLike[str],
    *,
    accelerator: str | Backend | None = None,
    dtype: str | None = None,
    accelerator_options: Mapping[str, Any] | None = None,
    save_to: str | os.PathLike[str] | None = None,
    export_cache: Any = None,
    revision: str | None = None,
    token: str | bool | None = None,
    trust_remote_code: bool = False,
    validate: bool = True,
    strict: bool = False,
) -> PreparedModel:
    """Find or export the backend's artifact once, on the driver; workers then only load it.

    A folder that already holds the backend's artifact (a ``save_pretrained`` folder) is used as it
    is. Otherwise the PyTorch weights are exported into the export cache, or reused from it when an
    earlier run exported the same thing (the cache is keyed by content). ``save_to`` also writes a
    saved model folder there and points the workers at it: on a cluster, pass a folder every node
    can read, since the export cache is local to this machine.

    ``accelerator_options`` may carry runtime options (``num_threads``, ...); they are passed on
    to the workers, which may override them.
    """
    from acceleron.loading import locate
    from acceleron.router import _normalize_dtype

    options: dict[str, Any] = dict(accelerator_options or {})
    if (dtype_name := _normalize_dtype(dtype)) is not None:
        options["dtype"] = dtype_name
    located = locate(
        model,
        accelerator=accelerator,
        task=task,
        options=options,
        revision=revision,
        token=token,
        trust_remote_code=trust_remote_code,
        export_cache=export_cache,
        validate=validate,
        strict=strict,
    )
    backend, spec, manifest, folder = located.backend, located.task, located.manifest, located.folder
    file_name: str | None = _relative(located.artifact, folder)
    in_cache = manifest.get("key") == folder.name  # only the export cache's entries record their key
    exported = located.sessions is not None  # sessions come back only from the call that built the entry
    del located  # the workers load their own session; this one was only needed to validate the export
    if manifest.get("options"):
        # The artifact fixes what it was made with (a bf16 export stays bf16); workers get the same.
        options.update({k: v for k, v in manifest["options"].items() if k == "dtype" and v is not None})
    accelerator_for_workers: str | Backend = accelerator if isinstance(accelerator, Backend) else backend.name
    if save_to is not None:
        from acceleron.modeling import OptimizedModel

        loaded = OptimizedModel.from_pretrained(
            folder, accelerator=accelerator_for_workers, task=spec.name, export=False, file_name=file_name, **options
        )
        target = loaded.save_pretrained(save_to)
        saved = backend.find_artifact(target, None)
        folder, file_name, in_cache = target, _relative(saved, target) if saved else None, False
    return PreparedModel(
        task=spec.name,
        path=str(folder),
        accelerator=accelerator_for_workers,
        backend=backend.name,
        file_name=file_name,
        options=options,
        exported=exported,
        in_export_cache=in_cache,
    )


def _relative(artifact: Path, folder: Path) -> str:
    try:
        return artifact.resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return artifact.name


# ---- output columns ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputColumns:
    """The columns a task's results go to (Arrow types Parquet stores) and how to read them from a result."""

    fields: tuple[pa.Field, ...]
    #: One pipeline result (one row) -> one value per field, plain Python (or numpy for embeddings).
    extract: Callable[[Any], tuple[Any, ...]]
    #: True when one row's result is itself a list (a list of entities, of predictions, ...).
    item_is_list: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def renamed(self, mapping: Mapping[str, str]) -> OutputColumns:
        unknown = sorted(set(mapping) - set(self.names))
        if unknown:
            raise InvalidOptionError(
                f"output_columns renames {unknown}, which this task does not produce; it produces {list(self.names)}."
            )
        fields = tuple(f.with_name(mapping.get(f.name, f.name)) for f in self.fields)
        return OutputColumns(fields, self.extract, self.item_is_list)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def task_outputs(
    task: str, call_args: Mapping[str, Any] | None = None, *, hidden_size: int | None = None, pooling: str = "mean"
) -> OutputColumns:
    """The output columns of ``task`` for these pipeline call arguments.

    The types do not depend on the data, so every batch (and a batch whose rows all failed) has
    the same schema and one Parquet file holds them all.
    """
    pa = require_pyarrow()
    args = dict(call_args or {})
    name = get_task(task).name
    fields: tuple[Any, ...]
    labels_scores = (pa.field("labels", pa.list_(pa.string())), pa.field("scores", pa.list_(pa.float64())))

    def ranked(result: Any) -> tuple[Any, ...]:
        return [_str(r["label"]) for r in result], [_float(r["score"]) for r in result]

    if name == "text-classification":
        if args.get("top_k") is None:
            fields = (pa.field("label", pa.string()), pa.field("score", pa.float64()))
            return OutputColumns(fields, lambda r: (_str(r["label"]), _float(r["score"])), item_is_list=False)
        return OutputColumns(labels_scores, ranked, item_is_list=True)
    if name in ("image-classification", "audio-classification"):
        return OutputColumns(labels_scores, ranked, item_is_list=True)
    if name == "zero-shot-classification":
        return OutputColumns(
            labels_scores,
            lambda r: ([_str(v) for v in r["labels"]], [_float(v) for v in r["scores"]]),
            item_is_list=False,
        )
    if name == "token-classification":
        grouped = args.get("aggregation_strategy") not in (None, "none", "NONE")
        key = "entity_group" if grouped else "entity"
        struct = [pa.field(key, pa.string()), pa.field("score", pa.float64())]
        if not grouped:
            struct.append(pa.field("index", pa.int64()))
        struct += [pa.field("word", pa.string()), pa.field("start", pa.int64()), pa.field("end", pa.int64())]
        converters: dict[str, Callable[[Any], Any]] = {
            key: _str,
            "score": _float,
            "index": _int,
            "word": _str,
            "start": _int,
            "end": _int,
        }
        names = [f.name for f in struct]

        def entities(result: Any) -> tuple[Any, ...]:
            return ([{n: converters[n](entity.get(n)) for n in names} for entity in result],)

        return OutputColumns((pa.field("entities", pa.list_(pa.struct(struct))),), entities, item_is_list=True)
    if name == "fill-mask":
        struct = pa.struct(
            [
                pa.field("token_str", pa.string()),
                pa.field("score", pa.float64()),
                pa.field("token", pa.int64()),
                pa.field("sequence", pa.string()),
            ]
        )

        def predictions(result: Any) -> tuple[Any, ...]:
            return (
                [
                    {
                        "token_str": _str(p.get("token_str")),
                        "score": _float(p.get("score")),
                        "token": _int(p.get("token")),
                        "sequence": _str(p.get("sequence")),
                    }
                    for p in result
                ],
            )

        return OutputColumns((pa.field("predictions", pa.list_(struct)),), predictions, item_is_list=True)
    if name == "text-generation":

        def generated(result: Any) -> tuple[Any, ...]:
            text = result[0]["generated_text"]
            if isinstance(text, list):  # chat messages: the reply is the last one
                text = text[-1]["content"] if text else ""
            return (_str(text),)

        return OutputColumns((pa.field("generated_text", pa.string()),), generated, item_is_list=True)
    if name in _GENERATED_TEXT:
        key = _GENERATED_TEXT[name]

        def first_text(result: Any) -> tuple[Any, ...]:
            record = result[0] if isinstance(result, list) else result  # the first of num_return_sequences
            return (_str(record.get(key)),)

        return OutputColumns((pa.field(key, pa.string()),), first_text, item_is_list=False)
    if name == "feature-extraction":
        if pooling == "none":
            field_ = pa.field("token_embeddings", pa.list_(pa.list_(pa.float32())))
        elif hidden_size is None:
            field_ = pa.field("embedding", pa.list_(pa.float32()))
        else:
            field_ = pa.field("embedding", pa.list_(pa.float32(), hidden_size))
        return OutputColumns((field_,), lambda r: (r,), item_is_list=False)
    raise TaskNotSupportedError(f"bulk inference has no output columns for {name}; run its pipeline directly.")


# ---- the predictor -------------------------------------------------------------------------------


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_settings(
    task: str,
    *,
    input_column: str | None = "text",
    on_error: str = "null",
    pooling: str = "mean",
    batch_size: int = 32,
    num_threads: int | None = None,
) -> str:
    """Validate a job's settings (on the driver, before any worker starts); returns the input column."""
    name = get_task(task).name
    if name in _NOT_ONE_COLUMN:
        raise TaskNotSupportedError(
            f"bulk inference reads one text column per row, but {name} needs {_NOT_ONE_COLUMN[name]}; "
            f"call acceleron.pipeline({name!r}, ...) on your rows instead."
        )
    task_outputs(name, pooling=pooling if pooling in POOLING else "mean")  # a task with no columns: refused now,
    # before anything is exported
    if on_error not in ON_ERROR:
        raise InvalidOptionError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}.")
    if pooling not in POOLING:
        raise InvalidOptionError(f"pooling must be one of {', '.join(POOLING)}, got {pooling!r}.")
    if not _positive_int(batch_size):
        raise InvalidOptionError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if num_threads is not None and not _positive_int(num_threads):
        raise InvalidOptionError(f"num_threads must be a positive integer, got {num_threads!r}.")
    if not input_column:
        raise InvalidOptionError(f"{name} needs input_column, the column holding its inputs.")
    return input_column


class PipelinePredictor:
    """A callable class for ``ray.data.Dataset.map_batches``: one acceleron pipeline per instance.

    ``model`` is a :class:`PreparedModel` (from :func:`prepare_model`, run on the driver) or a folder
    that already holds the backend's artifact; the pipeline is loaded with ``export=False``, so a
    worker never exports (a folder with nothing to load raises
    :class:`~acceleron.errors.ArtifactNotFoundError`).

    Calling it on a batch (``pyarrow.Table``, ``pandas.DataFrame`` or a dict of numpy arrays)
    returns the batch in the same format with the task's output columns added (see
    :func:`task_outputs`) and, with ``on_error="null"``, an ``error_column``.

    :param input_column: the column holding the inputs (texts; image paths or bytes; audio paths).
    :param output_columns: renames output columns, e.g. ``{"label": "sentiment"}``.
    :param batch_size: rows per model call.
    :param num_threads: threads this instance computes with (the backend's and torch's); None leaves
        the backend's default.
    :param on_error: ``"null"``, ``"skip"`` or ``"raise"`` for rows that fail.
    :param row_id_column: a column naming rows in error messages (default: the row's position in the batch).
    :param call_args: pipeline call arguments (``top_k``, ``candidate_labels``, ``max_new_tokens``, ...).
    :param pooling: feature-extraction: ``"mean"`` (mask-weighted mean over tokens, as
        sentence-transformers), ``"cls"`` (the first token) or ``"none"`` (every token's vector).
    :param normalize: feature-extraction: L2-normalise pooled embeddings.
    """

    def __init__(
        self,
        model: PreparedModel | str | os.PathLike[str],
        task: str | None = None,
        *,
        input_column: str | None = "text",
        output_columns: Mapping[str, str] | None = None,
        batch_size: int = 32,
        num_threads: int | None = None,
        on_error: str = "null",
        error_column: str = "error",
        row_id_column: str | None = None,
        call_args: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        accelerator: str | Backend | None = None,
        dtype: str | None = None,
        accelerator_options: Mapping[str, Any] | None = None,
    ) -> None:
        from acceleron.router import pipeline, resolve_task

        if isinstance(model, PreparedModel):
            load = model.load_kwargs()
            if accelerator_options:
                load["accelerator_options"] = {**load["accelerator_options"], **accelerator_options}
        else:
            load = {
                "task": resolve_task(task, str(model)),
                "model": str(model),
                "accelerator": accelerator,
                "export": False,
                "accelerator_options": dict(accelerator_options or {}),
            }
            if dtype is not None:
                load["dtype"] = dtype
        if task is not None and get_task(task).name != get_task(load["task"]).name:
            raise InvalidOptionError(f"the prepared model is for {load['task']}, not {task}; prepare it for {task}.")
        self.task = get_task(load["task"]).name
        self.input_column = check_settings(
            self.task,
            input_column=input_column,
            on_error=on_error,
            pooling=pooling,
            batch_size=batch_size,
            num_threads=num_threads,
        )
        self.batch_size = batch_size
        self.on_error = on_error
        self.error_column = error_column
        self.row_id_column = row_id_column
        self.call_args = dict(call_args or {})
        self.pooling = pooling
        self.normalize = normalize
        if num_threads is not None:
            load["accelerator_options"] = {**load["accelerator_options"], "num_threads": num_threads}
            # The thread budget covers tokenisation (its pool would take every core) and the torch
            # ops around the model (pooling, softmax) too.
            if num_threads == 1:
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            else:
                os.environ.setdefault("RAYON_NUM_THREADS", str(num_threads))
            import torch

            torch.set_num_threads(num_threads)
        self.pipe = pipeline(**load)
        hidden = getattr(self.pipe.model.config, "hidden_size", None)
        outputs = task_outputs(self.task, self.call_args, hidden_size=hidden, pooling=pooling)
        self.outputs = outputs.renamed(output_columns) if output_columns else outputs

    # ---- one batch ----

    def __call__(self, batch: Any) -> Any:
        """The batch plus the output columns (and the error column with ``on_error="null"``)."""
        frame = _Batch.wrap(batch)
        added_names = {*self.outputs.names, *([self.error_column] if self.on_error == "null" else [])}
        clashes = sorted(added_names & set(frame.column_names))
        if clashes:
            raise InvalidOptionError(
                f"the batch already has columns {clashes}, which the results would overwrite; rename them "
                "with output_columns={...} (and error_column=...)."
            )
        if self.input_column not in frame.column_names:
            raise InvalidOptionError(
                f"the batch has no column {self.input_column!r} (it has {frame.column_names}); pass "
                "input_column= naming the input column."
            )
        count = frame.num_rows
        row_ids = frame.values(self.row_id_column) if self.row_id_column in frame.column_names else None
        errors: list[str | None] = [None] * count
        if READ_ERROR_COLUMN in frame.column_names:
            errors = list(frame.values(READ_ERROR_COLUMN))
        inputs = frame.values(self.input_column)
        for row in range(count):
            if errors[row] is None:
                errors[row] = self._check_value(inputs[row])
        good = [row for row in range(count) if errors[row] is None]
        results: list[Any] = [None] * count
        for row, result in zip(good, self._run(inputs, good, errors), strict=True):
            results[row] = result
        failed = [row for row in range(count) if errors[row] is not None]
        names = [row_ids[row] if row_ids is not None else row for row in range(count)]
        if failed and self.on_error == "raise":
            row = failed[0]
            raise RowError(
                names[row],
                f"{_row_name(names[row], row_ids is not None)}: {errors[row]}. Fix the row, or pass "
                "on_error='null' (the error goes to a column) or 'skip' (the row is dropped).",
            )
        if self.on_error == "skip":  # the rows leave no trace in the output: say which they were
            for row in failed:
                logger.warning("acceleron: %s skipped: %s", _row_name(names[row], row_ids is not None), errors[row])
        values: list[list[Any]] = [[] for _ in self.outputs.fields]
        for row in range(count):
            extracted = self.outputs.extract(results[row]) if errors[row] is None else (None,) * len(values)
            for cells, value in zip(values, extracted, strict=True):
                cells.append(value)
        keep = None if self.on_error != "skip" or not failed else [row for row in range(count) if errors[row] is None]
        added = list(zip(self.outputs.fields, values))
        if self.on_error == "null":
            added.append((_error_field(self.error_column), errors))
        return frame.with_columns(added, keep=keep, drop=(READ_ERROR_COLUMN,))

    def _check_value(self, value: Any) -> str | None:
        """Why a cell cannot be an input (None when it can): null, not text, or empty."""
        column = self.input_column
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"column {column!r} is null"
        if get_task(self.task).modality == "text" or isinstance(value, (int, float)):
            if not isinstance(value, str):
                return f"column {column!r} holds {type(value).__name__} {value!r}, not text"
            if not value.strip():
                return f"column {column!r} is an empty string"
        return None

    def _run(self, inputs: Sequence[Any], rows: list[int], errors: list[str | None]) -> list[Any]:
        """Results of ``rows`` in order; a row the pipeline raises on gets an error and a None result."""
        if not rows:
            return []
        try:
            return self._infer(inputs, rows)
        except Exception as batch_error:
            if len(rows) == 1:
                errors[rows[0]] = f"{type(batch_error).__name__}: {batch_error}"
                return [None]
            # Find the rows that fail, one at a time: the others keep their results.
            results: list[Any] = []
            failures: list[BaseException] = []
            for row in rows:
                try:
                    [result] = self._infer(inputs, [row])
                except Exception as error:
                    errors[row] = f"{type(error).__name__}: {error}"
                    failures.append(error)
                    result = None
                results.append(result)
            if len(failures) == len(rows) and len({str(f) for f in failures}) == 1:
                # Every row failing the same way is a setup problem (a missing call argument, a
                # broken model), not bad rows: hiding it in an error column would hide it from everyone.
                raise AcceleronError(
                    f"every row of a batch failed with {type(batch_error).__name__}: {batch_error}; "
                    "check the task's call arguments and the model."
                ) from batch_error
            return results

    def _infer(self, inputs: Sequence[Any], rows: list[int]) -> list[Any]:
        if self.task == "feature-extraction":
            return self._embed([inputs[row] for row in rows])
        items = [_pipeline_input(self.task, inputs[row]) for row in rows]
        results = self.pipe(items, batch_size=self.batch_size, **self.call_args)
        return _per_row(results, len(rows), self.outputs.item_is_list)

    def _embed(self, texts: list[str]) -> list[Any]:
        """Sentence embeddings (or token embeddings), batched by length; results in the given order."""
        import numpy as np
        import torch

        tokenizer: Any = self.pipe.tokenizer
        options = {"truncation": True, **self.call_args.get("tokenize_kwargs", {})}
        lengths = [len(ids) for ids in tokenizer(texts, **options)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        results: list[Any] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = tokenizer([texts[i] for i in chunk], padding=True, return_tensors="pt", **options)
            with torch.inference_mode():
                hidden = self.pipe.model(**encoded).last_hidden_state.float()
            mask = encoded["attention_mask"]
            if self.pooling == "none":
                for index, row in enumerate(chunk):
                    results[row] = hidden[index, : int(mask[index].sum())].numpy().astype(np.float32)
                continue
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors = pooled.numpy().astype(np.float32)
            for index, row in enumerate(chunk):
                results[row] = vectors[index]
        return results


def _row_name(name: Any, named_by_column: bool) -> str:
    return f"row {name}" if named_by_column else f"row {name} of the batch"


def _error_field(name: str) -> pa.Field:
    pa = require_pyarrow()
    return pa.field(name, pa.string())


def _pipeline_input(task: str, value: Any) -> Any:
    """A cell as the pipeline takes it (image bytes become a PIL image; text and paths pass as they are)."""
    if get_task(task).modality == "image" and isinstance(value, (bytes, bytearray)):
        import io

        from PIL import Image

        return Image.open(io.BytesIO(value))
    return value


def _per_row(results: Any, count: int, item_is_list: bool) -> list[Any]:
    """One result per input: pipelines unwrap a one-item list, so wrap it back."""
    if count == 1:
        wrapped = isinstance(results, list) and len(results) == 1
        if not (wrapped and (isinstance(results[0], list) or not item_is_list)):
            results = [results]
    if not isinstance(results, list) or len(results) != count:
        raise AcceleronError(
            f"the pipeline returned {type(results).__name__} for {count} inputs, not one result per input; "
            "report this with the task and call arguments."
        )
    return results


class _Batch:
    """Column access and column addition for the batch formats Ray Data hands over."""

    def __init__(self, data: Any, kind: str) -> None:
        self.data = data
        self.kind = kind

    @classmethod
    def wrap(cls, batch: Any) -> _Batch:
        pa = require_pyarrow()
        if isinstance(batch, pa.Table):
            return cls(batch, "arrow")
        if isinstance(batch, pa.RecordBatch):
            return cls(pa.Table.from_batches([batch]), "arrow")
        if isinstance(batch, Mapping):
            return cls(dict(batch), "numpy")
        if type(batch).__name__ == "DataFrame" and hasattr(batch, "columns"):
            return cls(batch, "pandas")
        raise TypeError(
            f"a batch must be a pyarrow.Table, a pandas.DataFrame or a dict of numpy arrays, got {type(batch).__name__}"
        )

    @property
    def column_names(self) -> list[str]:
        if self.kind == "arrow":
            return list(self.data.column_names)
        return [str(name) for name in (self.data.keys() if self.kind == "numpy" else self.data.columns)]

    @property
    def num_rows(self) -> int:
        if self.kind == "numpy":
            return len(next(iter(self.data.values()))) if self.data else 0
        return len(self.data)

    def values(self, column: str) -> list[Any]:
        if self.kind == "arrow":
            return list(self.data.column(column).to_pylist())
        if self.kind == "pandas":
            return list(self.data[column].tolist())
        return [
            value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
            for value in self.data[column]
        ]

    def with_columns(self, added: list[tuple[pa.Field, list[Any]]], keep: list[int] | None, drop: Sequence[str]) -> Any:
        import numpy as np

        pa = require_pyarrow()
        if self.kind == "arrow":
            table = self.data.drop_columns([c for c in drop if c in self.data.column_names])
            for field_, values in added:
                table = table.append_column(field_, _arrow_array(values, field_.type))
            return table if keep is None else table.take(pa.array(keep, pa.int64()))
        if self.kind == "pandas":
            frame = self.data.drop(columns=[c for c in drop if c in self.data.columns]).copy()
            for field_, values in added:
                frame[field_.name] = values
            return frame if keep is None else frame.iloc[keep].reset_index(drop=True)
        out = {name: value for name, value in self.data.items() if name not in drop}
        for field_, values in added:
            if pa.types.is_fixed_size_list(field_.type) and all(v is not None for v in values) and values:
                out[field_.name] = np.stack(values)
            else:
                array = np.empty(len(values), dtype=object)
                array[:] = values
                out[field_.name] = array
        if keep is not None:
            out = {name: np.asarray(column)[keep] for name, column in out.items()}
        return out


def _arrow_array(values: list[Any], type_: pa.DataType) -> pa.Array:
    pa = require_pyarrow()
    if pa.types.is_fixed_size_list(type_):
        import numpy as np

        # Build from one flat float32 buffer: converting thousands of small arrays one by one is slow.
        width = type_.list_size
        valid = [v is not None for v in values]
        flat = np.zeros((len(values), width), dtype=np.float32)
        for row, vector in enumerate(values):
            if vector is not None:
                flat[row] = vector
        mask = pa.array([not v for v in valid], pa.bool_()) if not all(valid) else None
        array = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), width, mask=mask)
        return array
    if pa.types.is_list(type_) and pa.types.is_list(type_.value_type):
        values = [None if v is None else [list(map(float, token)) for token in v] for v in values]
    return pa.array(values, type=type_)
