"""The bulk ``acceleron run``: a Parquet, CSV or JSON Lines file in, a Parquet file out, in one process or on Ray.

:func:`run_file` reads the input in chunks of ``rows_per_batch`` rows, numbers the rows (from 0, in
file order), runs :class:`~acceleron.bulk.PipelinePredictor` on each chunk (here, or on Ray actors
with ``ray_address``), and writes the rows in input order with their output columns into one
Parquet file. The model is prepared (exported, or found) once before any row is processed.

A failing row is reported on stderr with its row number. ``on_error``: ``"null"`` keeps it with
null outputs and the message in the error column, ``"skip"`` leaves it out of the output,
``"raise"`` stops at the first one (in file order) and writes nothing. Nothing else is lost.

The output is written to a temporary file next to the target and renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Backend
from acceleron.bulk import (
    READ_ERROR_COLUMN,
    ROWS_PER_BATCH,
    PipelinePredictor,
    PreparedModel,
    check_settings,
    prepare_model,
    require_pyarrow,
    task_outputs,
)
from acceleron.errors import AcceleronError, InvalidOptionError, RowError

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: Row numbers travel with the rows (to workers and back) in this column; it is not written.
ROW_ID_COLUMN = "__acceleron_row__"
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: Failing rows listed one by one on stderr; beyond this, only counted.
MAX_REPORTED = 20


@dataclass
class JobSettings:
    """What a bulk job runs: the pipeline, its inputs and outputs, and where (here or on Ray)."""

    task: str | None
    model: str
    accelerator: str | Backend | None = None
    dtype: str | None = None
    accelerator_options: Mapping[str, Any] = field(default_factory=dict)
    input_column: str | None = "text"
    output_columns: Mapping[str, str] | None = None
    call_args: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    rows_per_batch: int = ROWS_PER_BATCH
    #: Threads of the one process (None: the backend's default), or of each Ray actor (None: 1).
    num_threads: int | None = None
    #: Ray actors (None: the cluster's CPUs / threads).
    actors: int | None = None
    on_error: str = "null"
    error_column: str = "error"
    pooling: str = "mean"
    normalize: bool = True
    #: None: one process; "local": a local Ray instance; anything else: ``ray.init(address=...)``.
    ray_address: str | None = None
    #: Save the prepared model here (a folder every Ray node reads) instead of using the export cache.
    model_dir: str | None = None


# ---- reading -------------------------------------------------------------------------------------


@dataclass
class InputTable:
    """An input file opened for reading in chunks: its columns and, when known up front, its row count."""

    path: Path
    format: str
    schema: pa.Schema
    num_rows: int | None
    chunks: Iterator[pa.Table]


def input_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidOptionError(
            f"{path}: unknown input format {path.suffix or '(no suffix)'!r}; use a .parquet, .csv or .jsonl file."
        )
    return fmt


def open_input(path: Path, input_columns: Iterable[str], rows_per_batch: int = ROWS_PER_BATCH) -> InputTable:
    """Open ``path`` for reading ``rows_per_batch`` rows at a time, rows numbered in :data:`ROW_ID_COLUMN`.

    Input columns are read as text where the format allows: a CSV field always is text; a JSON
    value that is not a string (a number, a list) makes its row fail with a message, not the file.
    """
    pa = require_pyarrow()
    fmt = input_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    wanted = list(input_columns)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        schema, num_rows = parquet.schema_arrow, parquet.metadata.num_rows
        tables: Iterable[Any] = (
            pa.Table.from_batches([batch]) for batch in parquet.iter_batches(batch_size=rows_per_batch)
        )
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in wanted}),
        )
        schema, num_rows = reader.schema, None
        tables = (pa.Table.from_batches([batch]) for batch in reader)
    else:
        schema, num_rows = _jsonl_schema(path, wanted, rows_per_batch)
        tables = _jsonl_tables(path, wanted, schema, rows_per_batch)
    missing = [name for name in wanted if name not in schema.names]
    if missing:
        raise InvalidOptionError(
            f"{path} has no column {missing[0]!r}; its columns are {schema.names}. Name the input column with --column."
        )
    return InputTable(path, fmt, schema, num_rows, _numbered(_rechunk(tables, rows_per_batch)))


def _rechunk(tables: Iterable[Any], rows: int) -> Iterator[Any]:
    """Tables of exactly ``rows`` rows (the last one shorter): the same chunks whatever the reader's blocks."""
    pa = require_pyarrow()
    pending: list[Any] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, rows).combine_chunks()
            rest = merged.slice(rows)
            pending, held = [rest], rest.num_rows
    if held:
        yield pa.concat_tables(pending).combine_chunks()


def _numbered(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    pa = require_pyarrow()
    start = 0
    for table in tables:
        ids = pa.array(range(start, start + table.num_rows), pa.int64())
        start += table.num_rows
        yield table.append_column(ROW_ID_COLUMN, ids)


def _jsonl_records(path: Path, wanted: list[str]) -> Iterator[dict[str, Any]]:
    """One record per non-blank line; a line that is not a JSON object, or an input that is not text,
    becomes a record with that message in :data:`READ_ERROR_COLUMN`."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                yield {READ_ERROR_COLUMN: f"line {number} is not valid JSON ({error})"}
                continue
            if not isinstance(record, dict):
                yield {READ_ERROR_COLUMN: f"line {number} holds a JSON {type(record).__name__}, not an object"}
                continue
            for name in wanted:
                value = record.get(name)
                if value is not None and not isinstance(value, str):
                    record[name] = None
                    record.setdefault(
                        READ_ERROR_COLUMN, f"column {name!r} holds {type(value).__name__} {value!r}, not text"
                    )
            yield record


def _chunks(records: Iterable[dict[str, Any]], rows: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_schema(path: Path, wanted: list[str], rows: int) -> tuple[pa.Schema, int]:
    """One schema for the whole file (a first pass): each chunk's inferred types, unified; inputs are text."""
    pa = require_pyarrow()
    schemas, count = [], 0
    for chunk in _chunks(_jsonl_records(path, wanted), rows):
        count += len(chunk)
        plain = [{k: v for k, v in record.items() if k != READ_ERROR_COLUMN} for record in chunk]
        schemas.append(pa.Table.from_pylist(plain).schema)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InvalidOptionError(
            f"{path}: a column holds values of different types ({error}); make them one type."
        ) from error
    fields = [pa.field(f.name, pa.string()) if f.name in wanted else f for f in schema]
    fields += [pa.field(name, pa.string()) for name in wanted if name not in schema.names and count]
    return pa.schema(fields), count


def _jsonl_tables(path: Path, wanted: list[str], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    pa = require_pyarrow()
    with_errors = schema.append(pa.field(READ_ERROR_COLUMN, pa.string()))
    for chunk in _chunks(_jsonl_records(path, wanted), rows):
        yield pa.Table.from_pylist(chunk, schema=with_errors)


# ---- writing -------------------------------------------------------------------------------------


class ParquetOutput:
    """One Parquet file written chunk by chunk into a temporary file, renamed into place by :meth:`commit`."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema
        path.parent.mkdir(parents=True, exist_ok=True)
        self.temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.writer = pq.ParquetWriter(self.temp, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table.select(self.schema.names).cast(self.schema))
            self.rows += table.num_rows

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        self.writer.close()
        self.temp.unlink(missing_ok=True)


# ---- progress ------------------------------------------------------------------------------------


class Progress:
    """Rows done, failed and the rate, on stderr every few seconds (``ACCELERON_PROGRESS=0`` silences it)."""

    def __init__(self, total: int | None, interval: float = 2.0) -> None:
        self.total = total
        self.interval = interval
        self.enabled = os.environ.get("ACCELERON_PROGRESS", "1").strip().lower() not in {"0", "false", "no", "off"}
        self.started = time.perf_counter()
        self.last = 0.0
        self.rows = 0
        self.failed = 0

    def add(self, rows: int, failed: int) -> None:
        self.rows += rows
        self.failed += failed
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            self.show()

    def show(self) -> None:
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        done = (
            f"{self.rows:,}"
            if self.total is None
            else f"{self.rows:,}/{self.total:,} ({self.rows / max(self.total, 1):.0%})"
        )
        print(
            f"acceleron: {done} rows, {self.failed:,} failed, {self.rows / elapsed:,.0f} rows/s",
            file=sys.stderr,
            flush=True,
        )

    def note(self, message: str) -> None:
        if self.enabled:
            print(f"acceleron: {message}", file=sys.stderr, flush=True)


# ---- the job -------------------------------------------------------------------------------------


def run_file(settings: JobSettings, input_path: Path, output_path: Path) -> dict[str, Any]:
    """Run the job over ``input_path`` into ``output_path`` (Parquet); returns a summary (rows, failures, timings).

    Timings: ``prepare_seconds`` (finding or exporting the model), ``run_seconds`` (the rest: loading
    it in each worker, starting Ray, every row) with ``rows_per_s`` over it, ``first_output_seconds``
    (until the first batch of results) and ``steady_rows_per_s`` (the rows after that one, over the
    time after it: the throughput once every worker runs).
    """
    started = time.perf_counter()
    input_column = check_settings(
        _task_of(settings),
        input_column=settings.input_column,
        on_error=settings.on_error,
        pooling=settings.pooling,
        batch_size=settings.batch_size,
        num_threads=settings.num_threads,
    )
    if not isinstance(settings.rows_per_batch, int) or settings.rows_per_batch < 1:
        raise InvalidOptionError(f"rows per batch must be a positive integer, got {settings.rows_per_batch!r}.")
    if output_path.suffix.lower() not in (".parquet", ".pq"):
        raise InvalidOptionError(f"{output_path}: the output is written as Parquet; name it *.parquet.")
    source = open_input(input_path, [input_column], settings.rows_per_batch)
    prepared = prepare_model(
        settings.task,
        settings.model,
        accelerator=settings.accelerator,
        dtype=settings.dtype,
        accelerator_options=settings.accelerator_options,
        save_to=settings.model_dir,
    )
    prepared_seconds = time.perf_counter() - started
    schema = _output_schema(settings, prepared, source.schema)
    progress = Progress(source.num_rows)
    if prepared.exported:
        progress.note(f"exported {settings.model} for {prepared.backend} once, before any worker started")
    state: dict[str, Any] = {"rows_in": 0, "failed": 0, "skipped": 0, "reported": 0, "actors": None}
    output = ParquetOutput(output_path, schema)
    results: Generator[pa.Table, None, None]
    if settings.ray_address is None:
        results = _run_here(settings, prepared, source)
    else:
        results = _run_on_ray(settings, prepared, source, progress, state)
    try:
        for table in results:
            output.write(_settle(table, settings, state, progress))
            if "first_output" not in state:  # start-up (model loads, Ray actors) ends with the first batch
                state["first_output"] = (time.perf_counter(), state["rows_in"])
        output.commit()
    except BaseException:
        output.discard()
        raise
    finally:
        results.close()  # a run stopped early shuts down what it started (Ray)
    progress.show()
    if state["failed"] > state["reported"]:
        progress.note(f"... and {state['failed'] - state['reported']:,} more failed rows")
    finished = time.perf_counter()
    run_seconds = finished - started - prepared_seconds
    first_at, first_rows = state.get("first_output", (finished, state["rows_in"]))
    steady = (state["rows_in"] - first_rows) / (finished - first_at) if finished > first_at else None
    return {
        "output": str(output_path.resolve()),
        "rows_in": state["rows_in"],
        "rows_out": output.rows,
        "failed": state["failed"],
        "skipped": state["skipped"],
        "on_error": settings.on_error,
        "task": prepared.task,
        "backend": prepared.backend,
        "model_folder": prepared.path,
        "exported": prepared.exported,
        "ray": settings.ray_address,
        "actors": state["actors"],
        "threads": state.get("threads", settings.num_threads),
        "prepare_seconds": round(prepared_seconds, 3),
        "run_seconds": round(run_seconds, 3),
        "seconds": round(finished - started, 3),
        "rows_per_s": round(state["rows_in"] / run_seconds, 1) if run_seconds > 0 else None,
        "first_output_seconds": round(first_at - started - prepared_seconds, 3),
        "steady_rows_per_s": round(steady, 1) if steady else None,
    }


def _task_of(settings: JobSettings) -> str:
    from acceleron.router import resolve_task

    return resolve_task(settings.task, settings.model)


def _output_schema(settings: JobSettings, prepared: PreparedModel, schema: pa.Schema) -> pa.Schema:
    """The input's columns, then the task's outputs, then (``on_error="null"``) the error column."""
    pa = require_pyarrow()
    config = _config(prepared.path)
    outputs = task_outputs(
        prepared.task, settings.call_args, hidden_size=getattr(config, "hidden_size", None), pooling=settings.pooling
    )
    if settings.output_columns:
        outputs = outputs.renamed(settings.output_columns)
    fields = [f for f in schema if f.name not in (ROW_ID_COLUMN, READ_ERROR_COLUMN)]
    added = list(outputs.fields)
    if settings.on_error == "null":
        added.append(pa.field(settings.error_column, pa.string()))
    clashes = sorted({f.name for f in added} & {f.name for f in fields})
    if clashes:
        raise InvalidOptionError(
            f"the input already has columns {clashes}, which the results would overwrite; rename the outputs "
            "(--rename label=sentiment, --error-column NAME)."
        )
    return pa.schema([*fields, *added])


def _config(folder: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError):
        return None


def _predictor_kwargs(settings: JobSettings) -> dict[str, Any]:
    # Workers always record errors in the column: the driver applies on_error in file order, so
    # that "raise" names the first failing row and "skip" still reports what it skipped.
    return {
        "input_column": settings.input_column,
        "output_columns": dict(settings.output_columns) if settings.output_columns else None,
        "batch_size": settings.batch_size,
        "on_error": "null",
        "error_column": settings.error_column,
        "row_id_column": ROW_ID_COLUMN,
        "call_args": dict(settings.call_args),
        "pooling": settings.pooling,
        "normalize": settings.normalize,
    }


def _run_here(settings: JobSettings, prepared: PreparedModel, source: InputTable) -> Generator[pa.Table, None, None]:
    predictor = PipelinePredictor(
        prepared, prepared.task, num_threads=settings.num_threads, **_predictor_kwargs(settings)
    )
    for chunk in source.chunks:
        yield predictor(chunk)


def _run_on_ray(
    settings: JobSettings, prepared: PreparedModel, source: InputTable, progress: Progress, state: dict[str, Any]
) -> Generator[pa.Table, None, None]:
    from acceleron.ray import cluster_cpus, map_pipeline, plan_actors, require_ray

    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if settings.ray_address == "local" else settings.ray_address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            # Ray copies its workers' and raylet's log lines into this process's stdout, where the CLI
            # writes its JSON summary; a worker's failure reaches us as an exception anyway.
            log_to_driver=False,
        )
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    ray_data_logger = logging.getLogger("ray.data")
    saved_level = ray_data_logger.level
    try:
        context.execution_options.preserve_order = True  # rows are written in file order
        context.enable_progress_bars = False  # ours is the one progress display
        ray_data_logger.setLevel(logging.ERROR)  # its execution notes would bury ours
        actors, threads = plan_actors(cluster_cpus(), settings.num_threads, settings.actors)
        state.update(actors=actors, threads=threads)
        progress.note(f"running on Ray: {actors} actors x {threads} threads")
        refs = [ray.put(chunk) for chunk in source.chunks]
        if not refs:
            return
        dataset = ray.data.from_arrow_refs(refs)
        mapped = map_pipeline(
            dataset,
            prepared.task,
            prepared,
            rows_per_batch=settings.rows_per_batch,
            num_threads=threads,
            concurrency=actors,
            **_predictor_kwargs(settings),
        )
        try:
            yield from mapped.iter_batches(batch_format="pyarrow", batch_size=None)
        except Exception as error:
            raise _unwrap(error) from error
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        ray_data_logger.setLevel(saved_level)
        if started_here:
            ray.shutdown()


def _unwrap(error: BaseException) -> BaseException:
    """The acceleron error a Ray worker raised, out of Ray's wrappers; else one that says the job failed."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AcceleronError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return AcceleronError(f"the Ray job failed: {type(error).__name__}: {error}")


def _settle(table: pa.Table, settings: JobSettings, state: dict[str, Any], progress: Progress) -> pa.Table:
    """Apply ``on_error`` to a batch of results (in file order), report its failing rows, drop the row numbers."""
    import pyarrow.compute as pc

    errors = table.column(settings.error_column)
    processed = table.num_rows
    failed_rows = [] if errors.null_count == processed else pc.indices_nonzero(pc.is_valid(errors)).to_pylist()
    row_ids = table.column(ROW_ID_COLUMN)
    for index in failed_rows:
        row, message = row_ids[index].as_py(), errors[index].as_py()
        if settings.on_error == "raise":
            raise RowError(
                row,
                f"row {row} of the input failed: {message}. Fix the row, or pass --on-error null "
                "(the error goes to a column) or skip (the row is left out).",
            )
        if state["reported"] < MAX_REPORTED:
            state["reported"] += 1
            progress.note(f"row {row} failed ({'skipped' if settings.on_error == 'skip' else 'kept'}): {message}")
    state["rows_in"] += processed
    state["failed"] += len(failed_rows)
    if failed_rows and settings.on_error == "skip":
        state["skipped"] += len(failed_rows)
        table = table.filter(pc.is_null(errors))
    progress.add(processed, len(failed_rows))
    return table.drop_columns([ROW_ID_COLUMN])
