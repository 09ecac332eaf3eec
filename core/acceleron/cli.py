"""The ``acceleron`` command: list backends, export, run, manage the cache, report versions.

Parsing the command line loads no plugin, so ``acceleron --help`` works whatever is installed.
An error is one line on stderr (``acceleron: error: ...``) and a non-zero exit, never a
traceback; ``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acceleron import __version__
from acceleron.errors import AcceleronError


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acceleron",
        description="Run Hugging Face transformers pipelines on accelerated backends.",
    )
    parser.add_argument("--version", action="version", version=f"acceleron {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details (backend selection)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    backends = commands.add_parser("backends", help="list known and installed backends with their status")
    backends.add_argument("--json", action="store_true", help="print JSON")
    backends.add_argument(
        "--tasks", action="store_true", help="print the table of tasks by backend (Markdown, as in the README)"
    )

    export = commands.add_parser("export", help="export a model for a backend into a folder")
    export.add_argument("model", help="model id or local folder")
    export.add_argument("-o", "--output", required=True, type=Path, help="folder to write the exported model into")
    export.add_argument("--task", help="task (inferred from the folder when omitted)")
    export.add_argument("--accelerator", "-a", help="backend name (default: the best installed one)")
    export.add_argument("--dtype", help="float32, bfloat16, int8, int4 or auto (backend-dependent)")
    export.add_argument(
        "--option", dest="options", action="append", type=_parse_option, default=[], metavar="KEY=VALUE"
    )
    export.add_argument("--strict", action="store_true", help="fail when the export does not match PyTorch")
    export.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    export.add_argument("--force", action="store_true", help="write into a non-empty output folder")

    run = commands.add_parser(
        "run",
        help="run a pipeline on inputs and print the results as JSON, or over a table file into Parquet",
        description="Inputs given as arguments or with --input-file: the results are printed as JSON. "
        "A table given with --input (Parquet, CSV, JSON Lines): every row is run, with progress on stderr, "
        "and written with its results to the --output Parquet file; --ray runs the same job on Ray actors.",
    )
    run.add_argument("--task", required=True)
    run.add_argument("--model", required=True)
    run.add_argument("--accelerator", "-a")
    run.add_argument("--dtype")
    run.add_argument("--option", dest="options", action="append", type=_parse_option, default=[], metavar="KEY=VALUE")
    run.add_argument("--batch-size", type=int, default=None, help="rows per model call")
    run.add_argument("--input-file", type=Path, help="one input per line ('-' for stdin)")
    table = run.add_argument_group("table files (--input FILE --output FILE.parquet)")
    table.add_argument("--input", type=Path, help="a .parquet, .csv or .jsonl file of rows")
    table.add_argument("--output", type=Path, help="the Parquet file to write: the input's columns plus the results")
    table.add_argument("--column", default=None, help="the column holding the inputs (default: text)")
    table.add_argument(
        "--rename",
        dest="renames",
        action="append",
        type=_parse_option,
        default=[],
        metavar="OUTPUT=NAME",
        help="rename an output column, e.g. label=sentiment",
    )
    table.add_argument(
        "--on-error",
        choices=["null", "skip", "raise"],
        default="null",
        help="a failing row: null outputs and a message in the error column (default), left out, or stop",
    )
    table.add_argument("--error-column", default="error", help="the error column's name (default: error)")
    table.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: a local instance, or the cluster at ADDRESS (as ray.init(address=...) takes it)",
    )
    table.add_argument(
        "--threads", type=int, default=None, help="threads of the process, or of each Ray actor (default 1 on Ray)"
    )
    table.add_argument("--actors", type=int, default=None, help="Ray actors (default: the cluster's CPUs / --threads)")
    table.add_argument("--rows-per-batch", type=int, default=512, help="rows handed to a worker at once (default 512)")
    table.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="save the prepared model here and load it from here (on a cluster: a folder every node reads)",
    )
    table.add_argument(
        "--pooling",
        choices=["mean", "cls", "none"],
        default="mean",
        help="feature-extraction: mean over tokens (default), the first token, or every token's vector",
    )
    table.add_argument(
        "--no-normalize", action="store_true", help="feature-extraction: do not L2-normalise the pooled embedding"
    )
    table.add_argument("--force", action="store_true", help="replace an existing output file")
    run.add_argument(
        "--arg",
        dest="call_args",
        action="append",
        type=_parse_option,
        default=[],
        metavar="KEY=VALUE",
        help='pipeline call argument, e.g. candidate_labels=\'["a","b"]\'',
    )
    run.add_argument("inputs", nargs="*", help="inputs (texts); JSON objects are passed as dicts")

    cache = commands.add_parser("cache", help="list, verify or clear the export cache")
    cache.add_argument("--dir", type=Path, help="cache folder (default: $ACCELERON_CACHE_DIR or ~/.cache)")
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    cache_list = cache_commands.add_parser("list", help="list cached exports")
    cache_list.add_argument("--json", action="store_true")
    cache_clear = cache_commands.add_parser("clear", help="remove cached exports")
    cache_clear.add_argument("--backend", help="only this backend's exports")
    cache_clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    cache_verify = cache_commands.add_parser(
        "verify", help="re-hash every cached file; remove damaged entries (exit 1 when any was damaged)"
    )
    cache_verify.add_argument("--json", action="store_true")
    cache_commands.add_parser("dir", help="print the cache folder")

    env = commands.add_parser("env", help="print versions for bug reports")
    env.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.verbose:
        logging.getLogger("acceleron").setLevel(logging.DEBUG)
    logging.getLogger("acceleron.progress").setLevel(logging.INFO)
    if args.command is None:
        parser.print_help()
        return 0
    handlers = {"backends": _backends, "export": _export, "run": _run, "cache": _cache, "env": _env}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("acceleron: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except (AcceleronError, OSError, ValueError, TypeError, ImportError) as error:
        # What a user can cause (a bad path, option or input, a missing backend): our message is the answer.
        _report(error, args.debug)
        return 2
    except Exception as error:  # a bug: still one line, with the way to the details
        _report(error, args.debug, "internal error: ", " (rerun with --debug for the traceback, and report it)")
        return 1


def _report(error: BaseException, debug: bool, prefix: str = "", suffix: str = "") -> None:
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    text = str(error) if isinstance(error, AcceleronError) else f"{type(error).__name__}: {error}"
    if isinstance(error, OSError) and not isinstance(error, AcceleronError) and error.filename is not None:
        text = f"{error.strerror or type(error).__name__}: {error.filename}"
    print(f"acceleron: error: {prefix}{text}{suffix}", file=sys.stderr)


def _backends(args: argparse.Namespace) -> int:
    from acceleron.status import list_backends

    statuses = list_backends()
    if args.json:
        print(json.dumps([status.to_dict() for status in statuses], indent=2))
        return 0
    if args.tasks:
        from acceleron.status import task_table

        print(task_table(statuses))
        return 0
    rows = [("NAME", "PRIORITY", "STATUS", "DISTRIBUTION", "REASON")]
    for status in statuses:
        dist = f"{status.distribution} {status.version}" if status.version else (status.distribution or "")
        priority = "" if status.priority is None else str(status.priority)
        if status.status == "ok" and not status.auto_select:
            priority += " (by name only)"
        rows.append((status.name, priority, status.status, dist, status.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    for status in statuses:  # the tasks each backend declares it cannot run, with its reasons
        unexplained = [task for task, reason in status.unsupported.items() if not reason]
        if unexplained:
            print(f"{status.name} does not run {', '.join(unexplained)}")
        for task, reason in status.unsupported.items():
            if reason:
                print(f"{status.name} does not run {task}: {reason}")
    return 0


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    options = dict(args.options)
    if args.dtype:
        options["dtype"] = args.dtype
    return options


def _export(args: argparse.Namespace) -> int:
    from acceleron.modeling import OptimizedModel
    from acceleron.router import resolve_task

    output: Path = args.output
    # Checked before exporting, which may take minutes.
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"-o {output} is a file; give a folder to write the exported model into")
    if output.exists() and any(output.iterdir()) and not args.force:
        raise AcceleronError(f"{output} exists and is not an empty folder; pass --force to write into it")
    model = OptimizedModel.from_pretrained(
        args.model,
        accelerator=args.accelerator,
        task=resolve_task(args.task, args.model),
        export=True,
        strict=args.strict,
        validate=not args.no_validate,
        **_backend_options(args),
    )
    model.save_pretrained(output)
    report = model.report()
    print(json.dumps({"output": str(output.resolve()), **report}, indent=2, default=str))
    return 0


def _read_inputs(args: argparse.Namespace) -> list[Any]:
    texts: list[str] = list(args.inputs)
    if args.input_file is not None:
        if str(args.input_file) != "-" and args.input_file.is_dir():
            raise IsADirectoryError(f"--input-file {args.input_file} is a folder; give a text file, one input a line")
        stream = sys.stdin if str(args.input_file) == "-" else open(args.input_file, encoding="utf-8")  # noqa: SIM115
        with stream:
            texts.extend(line.rstrip("\n") for line in stream if line.strip())
    if not texts:
        raise ValueError("no inputs: give them as arguments or with --input-file")
    inputs: list[Any] = []
    for text in texts:
        if text.lstrip().startswith("{"):
            try:
                inputs.append(json.loads(text))
                continue
            except ValueError:
                pass
        inputs.append(text)
    return inputs


_TABLE_ONLY = ("output", "column", "ray", "threads", "actors", "model_dir")


def _run(args: argparse.Namespace) -> int:
    if args.input is not None:
        return _run_table(args)
    given = [f"--{name.replace('_', '-')}" for name in _TABLE_ONLY if getattr(args, name) is not None]
    given += ["--rename"] * bool(args.renames)
    if given:
        raise ValueError(f"{', '.join(given)} work on a table file: pass it with --input FILE")
    from acceleron.router import pipeline

    inputs = _read_inputs(args)
    pipe = pipeline(
        args.task,
        model=args.model,
        accelerator=args.accelerator,
        dtype=args.dtype or "auto",
        accelerator_options=dict(args.options),
    )
    call_args = dict(args.call_args)
    if args.batch_size:
        call_args["batch_size"] = args.batch_size
    results = pipe(inputs, **call_args)
    print(json.dumps(_jsonable(results), indent=2))
    return 0


def _run_table(args: argparse.Namespace) -> int:
    from acceleron.tables import JobSettings, run_file

    if args.inputs or args.input_file is not None:
        raise ValueError("give the inputs either as a table (--input) or as arguments / --input-file, not both")
    if args.output is None:
        raise ValueError("--input needs --output FILE.parquet, where the rows and their results are written")
    if args.output.exists() and not args.force:
        raise AcceleronError(f"{args.output} exists; pass --force to replace it")
    settings = JobSettings(
        task=args.task,
        model=args.model,
        accelerator=args.accelerator,
        dtype=args.dtype,
        accelerator_options=dict(args.options),
        input_column=args.column or "text",
        output_columns={name: str(value) for name, value in args.renames} or None,
        call_args=dict(args.call_args),
        batch_size=args.batch_size or 32,
        rows_per_batch=args.rows_per_batch,
        num_threads=args.threads,
        actors=args.actors,
        on_error=args.on_error,
        error_column=args.error_column,
        pooling=args.pooling,
        normalize=not args.no_normalize,
        ray_address=args.ray,
        model_dir=str(args.model_dir) if args.model_dir is not None else None,
    )
    # stdout carries the JSON summary and nothing else: whatever the job's libraries print meanwhile
    # (Ray prints its workers' and raylet's notes to stdout) goes to stderr.
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_file(settings, args.input, args.output)
    print(json.dumps(summary, indent=2), file=stdout)
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _cache(args: argparse.Namespace) -> int:
    from acceleron.cache import ExportCache

    cache = ExportCache(args.dir)
    if args.cache_command == "dir":
        print(cache.root)
        return 0
    if args.cache_command == "list":
        rows = [_entry_dict(entry) for entry in cache.entries()]
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        if not rows:
            print(f"the export cache at {cache.root} is empty")
            return 0
        for info in rows:
            print(
                f"{info['key']}  {info['backend']:<6} {info['task']:<26} {info['size_mb']:>8.1f} MB  "
                f"{info['validation']:<7} {info['source']}"
            )
        return 0
    if args.cache_command == "verify":
        return _cache_verify(cache, args.json)
    backend = args.backend.lower() if args.backend else None
    selected = [e for e in cache.entries() if backend is None or e.manifest.get("backend") == backend]
    if not selected and backend is not None:
        print(f"nothing to remove in {cache.root}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise AcceleronError("refusing to clear the cache without confirmation; pass --yes")
        answer = input(f"remove {len(selected)} cached exports from {cache.root}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing removed")
            return 1
    report = cache.clear(None if backend is None else (lambda entry: entry.manifest.get("backend") == backend))
    print(f"removed {len(report.removed)} cached exports from {cache.root}")
    _print_left_alone(report)
    return 0


def _cache_verify(cache: Any, as_json: bool) -> int:
    report = cache.verify()
    if as_json:
        print(json.dumps({"root": str(cache.root), **report.to_dict()}, indent=2))
    else:
        print(f"{len(report.verified)} cached exports verified in {cache.root}")
        for key, problem in report.damaged.items():
            fate = "left in place (another user's)" if key in report.kept else "removed"
            print(f"damaged: {key}: {problem}; {fate}")
        _print_left_alone(report)
    return 1 if report.damaged else 0


def _print_left_alone(report: Any) -> None:
    for key in report.busy:
        print(f"skipped {key}: another process is using it (its lock is held); run again later")
    for key in report.kept:
        if key not in report.damaged:
            print(f"skipped {key}: it belongs to another user")
    if report.foreign:
        print(f"left alone (not made by acceleron): {', '.join(report.foreign)}")
    if report.reclaimed:
        print(f"reclaimed {len(report.reclaimed)} temporary folders of interrupted exports")


def _entry_dict(entry: Any) -> dict[str, Any]:
    """One listing row. A manifest edited or damaged into other types is listed as ``DAMAGED``, not fatal:
    listing is how a user finds such an entry (and ``cache clear`` removes it)."""
    manifest = entry.manifest
    validation = manifest.get("validation")
    source = manifest.get("source")
    try:
        size_mb = entry.size / 1e6
    except (AttributeError, TypeError, ValueError):
        size_mb, validation = 0.0, "damaged"
    if validation == "damaged" or not isinstance(validation, (dict, type(None))):
        verdict = "DAMAGED"
    else:
        verdict = "skipped" if not validation else ("passed" if validation.get("passed") else "FAILED")
    return {
        "key": entry.key,
        "path": str(entry.path),
        "backend": str(manifest.get("backend", "?")),
        "task": str(manifest.get("task", "?")),
        "source": str(source.get("id", "?")) if isinstance(source, dict) else "?",
        "options": manifest.get("options", {}),
        "created": manifest.get("created"),
        "size_mb": size_mb,
        "validation": verdict,
    }


def _env(args: argparse.Namespace) -> int:
    from acceleron.backend import distribution_version
    from acceleron.cache import default_cache_dir
    from acceleron.status import list_backends

    packages = ["torch", "transformers", "tokenizers", "huggingface-hub", "pluggy", "numpy"]
    packages += ["onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "intel-extension-for-pytorch"]
    info: dict[str, Any] = {
        "acceleron": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: distribution_version(name) for name in packages},
        "cache_dir": str(default_cache_dir()),
        "backends": {},
    }
    for s in list_backends():  # the first row of a name is the one in use; a refused namesake comes later
        info["backends"].setdefault(s.name, {"status": s.status, "version": s.version, "reason": s.reason})
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"acceleron {info['acceleron']} on Python {info['python']} ({info['platform']})")
    for name, version in info["packages"].items():
        print(f"  {name:<30} {version or '-'}")
    print(f"  export cache: {info['cache_dir']}")
    for name, status in info["backends"].items():
        print(f"  backend {name:<10} {status['status']:<14} {status['version'] or ''} {status['reason']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
