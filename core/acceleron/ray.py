"""Batch inference on Ray Data: one acceleron pipeline per actor, the export done once before they start.

``pip install 'acceleron[ray]'``, then::

    ds = ray.data.read_parquet("reviews.parquet")
    ds = acceleron.ray.map_pipeline(ds, "sentiment-analysis", "path/to/model", input_column="text")

:func:`map_pipeline` prepares the model on the driver (:func:`~acceleron.bulk.prepare_model`: the
artifact is found in the folder, reused from the export cache, or exported once), then maps
:class:`~acceleron.bulk.PipelinePredictor` over the dataset on a pool of actors that load it with
``export=False``. The same code runs on a cluster after ``ray.init(address=...)``; the prepared
folder must then be on storage every node reads (``save_to=``), since the export cache is per machine.

Importing this module does not import ray; :func:`map_pipeline` does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from acceleron.backend import Backend
from acceleron.bulk import ROWS_PER_BATCH, PipelinePredictor, PreparedModel, check_settings, prepare_model
from acceleron.errors import AcceleronError, InvalidOptionError

if TYPE_CHECKING:
    import ray.data

__all__ = ["PipelinePredictor", "PreparedModel", "map_pipeline", "plan_actors", "prepare_model"]


def require_ray() -> Any:
    """The ``ray`` module (Ray Data included), or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data  # the extra, not just ray core
    except ImportError as error:
        raise ImportError(f"acceleron.ray needs Ray Data: pip install 'acceleron[ray]' ({error})") from error
    return ray


def plan_actors(cpus: int, num_threads: int | None = None, concurrency: int | None = None) -> tuple[int, int]:
    """``(actors, threads per actor)`` for a cluster of ``cpus`` CPUs; actors x threads never exceeds it.

    Defaults: one thread per actor and as many actors as CPUs; with only ``concurrency`` given,
    the CPUs are split between that many actors. Explicit values that oversubscribe the CPUs raise
    :class:`~acceleron.errors.InvalidOptionError`: each actor reserves its threads as Ray CPUs, so
    the extra actors would never start. ``cpus`` 0 (unknown, or an autoscaling cluster without
    workers yet) checks nothing.
    """
    for name, value in (("num_threads", num_threads), ("concurrency", concurrency)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidOptionError(f"{name} must be a positive integer, got {value!r}.")
    if cpus <= 0:
        return concurrency or 1, num_threads or 1
    threads = num_threads or (max(1, cpus // concurrency) if concurrency else 1)
    actors = concurrency or max(1, cpus // threads)
    if actors * threads > cpus:
        raise InvalidOptionError(
            f"{actors} actors x {threads} threads need {actors * threads} CPUs, but the Ray cluster has {cpus}; "
            f"pass concurrency <= {max(1, cpus // threads)} or num_threads <= {max(1, cpus // actors)}."
        )
    return actors, threads


def cluster_cpus() -> int:
    """CPUs in the Ray cluster this process is connected to (Ray is started locally if it is not)."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init()
    return int(ray.cluster_resources().get("CPU", 0))


def _check_shared(prepared: PreparedModel) -> None:
    """A model in this machine's export cache cannot serve actors on other machines."""
    ray = require_ray()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1 and prepared.in_export_cache:
        raise AcceleronError(
            f"the model was exported into this machine's export cache ({prepared.path}), which the other "
            f"{len(nodes) - 1} node(s) of the Ray cluster cannot read; pass save_to= a folder on storage every "
            "node reads (the CLI: --model-dir)."
        )


def map_pipeline(
    dataset: ray.data.Dataset,
    task: str | None,
    model: str | os.PathLike[str] | PreparedModel,
    *,
    accelerator: str | Backend | None = None,
    dtype: str | None = None,
    accelerator_options: Mapping[str, Any] | None = None,
    input_column: str | None = "text",
    output_columns: Mapping[str, str] | None = None,
    batch_size: int = 32,
    rows_per_batch: int = ROWS_PER_BATCH,
    num_threads: int | None = None,
    concurrency: int | None = None,
    on_error: str = "null",
    error_column: str = "error",
    row_id_column: str | None = None,
    call_args: Mapping[str, Any] | None = None,
    pooling: str = "mean",
    normalize: bool = True,
    save_to: str | os.PathLike[str] | None = None,
    export_cache: Any = None,
) -> ray.data.Dataset:
    """``dataset`` with the task's output columns added, computed by a pool of actors (lazy, as Ray Data is).

    :param model: a model id or folder (prepared here, on the driver: exported once, or reused),
        or a :class:`~acceleron.bulk.PreparedModel`.
    :param batch_size: rows per model call; ``rows_per_batch``: rows per Ray batch handed to an actor.
    :param num_threads: threads per actor (default 1); ``concurrency``: actors (default: the
        cluster's CPUs / ``num_threads``). See :func:`plan_actors`.
    :param save_to: also save the prepared model there and load it from there: on a cluster, a
        folder every node reads.

    The other arguments are :class:`~acceleron.bulk.PipelinePredictor`'s.
    """
    ray = require_ray()
    if isinstance(model, PreparedModel):
        prepared = model
        name = task or prepared.task
    else:
        prepared = prepare_model(
            task,
            model,
            accelerator=accelerator,
            dtype=dtype,
            accelerator_options=accelerator_options,
            save_to=save_to,
            export_cache=export_cache,
        )
        name = prepared.task
    check_settings(
        name,
        input_column=input_column,
        on_error=on_error,
        pooling=pooling,
        batch_size=batch_size,
        num_threads=num_threads,
    )
    if not isinstance(rows_per_batch, int) or isinstance(rows_per_batch, bool) or rows_per_batch < 1:
        raise InvalidOptionError(f"rows_per_batch must be a positive integer, got {rows_per_batch!r}.")
    actors, threads = plan_actors(cluster_cpus(), num_threads, concurrency)
    _check_shared(prepared)
    constructor = {
        "model": prepared,
        "task": name,
        "input_column": input_column,
        "output_columns": dict(output_columns) if output_columns else None,
        "batch_size": batch_size,
        "num_threads": threads,
        "on_error": on_error,
        "error_column": error_column,
        "row_id_column": row_id_column,
        "call_args": dict(call_args or {}),
        "pooling": pooling,
        "normalize": normalize,
        "accelerator_options": dict(accelerator_options)
        if accelerator_options and isinstance(model, PreparedModel)
        else None,
    }
    return dataset.map_batches(
        PipelinePredictor,
        fn_constructor_kwargs=constructor,
        batch_size=rows_per_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
    )
