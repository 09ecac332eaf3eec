"""Ray local against one process: ``acceleron run --input`` over 20,000 real sentences, same outputs, throughput.

The input is the first 20,000 of the 23,703 rated sentences of the four files in the
``vaderSentiment`` sdist (tweets, New York Times editorials, Amazon and movie reviews; see
assets.py). Two jobs: the sentiment classifier labels them (text-classification) and MiniLM embeds
them (feature-extraction, mean-pooled, normalised). Each job runs, in one invocation of this script,
as the ``acceleron run`` command a user types (a fresh process each time):

* one process at 2 threads (the reference every other run is compared with), and at 1 thread;
* ``--ray`` (a local Ray started by the command) with 1 actor x 1 thread and 2 actors x 1 thread.

The model is prepared (exported into the export cache) before the first run, so no run exports.
Per run: the command's wall time, its ``rows_per_s`` (every row over the time after preparing the
model: model loads and Ray's start included) and ``steady_rows_per_s`` (after the first batch of
results: once every worker runs); outputs against the reference: labels identical row by row, the
largest score difference, and for embeddings the largest element difference and the lowest cosine.

Ray's batch handoff per row is measured twice: a Ray Data job whose actor returns each batch as it
is (everything Ray does per row, no model), and the difference in time per row between Ray with one
actor at one thread and one process at one thread.

Usage::

    python benchmarks/ray_bench.py [--sentences 20000] [--accelerator ov] [--repeats 1] [--out DIR]
    python benchmarks/ray_bench.py --tiny   # tiny random models, synthetic sentences: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# TOKENIZERS_PARALLELISM is left to each run: `acceleron run --threads N` gives the tokenizer N threads.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (name, extra ``acceleron run`` arguments); the first is the reference.
RUNS = (
    ("one process, 2 threads", ("--threads", "2")),
    ("one process, 1 thread", ("--threads", "1")),
    ("ray, 1 actor x 1 thread", ("--ray", "--actors", "1", "--threads", "1")),
    ("ray, 2 actors x 1 thread", ("--ray", "--actors", "2", "--threads", "1")),
)
ROWS_PER_BATCH = 512
BATCH_SIZE = 32


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def real_inputs(count: int) -> tuple[list[str], dict[str, Path]]:
    from benchmarks import assets

    rows = assets.rated_sentences()
    if count > len(rows):
        raise SystemExit(f"asked for {count} sentences; the four files hold {len(rows)}")
    models = {"text-classification": assets.sentiment_model_path(), "feature-extraction": assets.minilm_path()}
    return [sentence for sentence, _ in rows[:count]], models


def tiny_inputs(count: int, folder: Path) -> tuple[list[str], dict[str, Path]]:
    from acceleron.testing import WORDS, build_tiny_model

    sentences = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(2 + i % 23)) for i in range(count)]
    models = {
        "text-classification": build_tiny_model("text-classification", folder / "cls"),
        "feature-extraction": build_tiny_model("feature-extraction", folder / "emb"),
    }
    return sentences, models


def run_command(
    task: str, model: Path, accelerator: str | None, source: Path, output: Path, extra: Sequence[str]
) -> dict[str, Any]:
    """One ``acceleron run`` in a fresh process; its JSON summary, with the wall time and the command."""
    command = [sys.executable, "-m", "acceleron", "run", "--task", task, "--model", str(model)]
    command += ["-a", accelerator] if accelerator else []
    command += ["--input", str(source), "--column", "text", "--output", str(output), "--force"]
    command += ["--rows-per-batch", str(ROWS_PER_BATCH), "--batch-size", str(BATCH_SIZE), *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {shlex.join(command)}\n{result.stderr[-4000:]}")
    summary = json.loads(result.stdout)
    summary.update(wall_seconds=round(wall, 3), command=shlex.join(command))
    return summary


def compare(task: str, reference: Path, other: Path) -> dict[str, Any]:
    """Row-by-row agreement of two output files of one job."""
    import numpy as np
    import pyarrow.parquet as pq

    left, right = pq.read_table(reference), pq.read_table(other)
    same_rows = left.column("text").to_pylist() == right.column("text").to_pylist()
    same_errors = left.column("error").to_pylist() == right.column("error").to_pylist()
    result: dict[str, Any] = {"rows": left.num_rows, "same_rows_in_order": same_rows, "same_errors": same_errors}
    if task == "text-classification":
        labels_left, labels_right = left.column("label").to_pylist(), right.column("label").to_pylist()
        result["labels_identical"] = sum(a == b for a, b in zip(labels_left, labels_right))
        scores = np.array(left.column("score").to_pylist(), dtype=float) - np.array(
            right.column("score").to_pylist(), dtype=float
        )
        result["max_score_diff"] = float(np.nanmax(np.abs(scores)))
    else:
        a = np.array(left.column("embedding").to_pylist(), dtype=np.float32)
        b = np.array(right.column("embedding").to_pylist(), dtype=np.float32)
        result["max_abs_diff"] = float(np.abs(a - b).max())
        result["min_cosine"] = float(
            ((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min()
        )
        result["within_1e-4"] = bool(np.allclose(a, b, atol=1e-4))
    return result


class Identity:
    """A Ray Data actor that returns each batch as it is: what Ray costs per row, without a model."""

    def __call__(self, batch: Any) -> Any:
        return batch


def handoff_per_row(source: Path, repeats: int) -> dict[str, Any]:
    """Ray's cost per row for the same chunks, one actor, no model: from the driver's put to its receipt."""
    import pyarrow.parquet as pq
    import ray

    table = pq.read_table(source)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        timings = []
        for _ in range(repeats + 1):  # the first also starts Ray's worker processes
            started = time.perf_counter()
            refs = [ray.put(table.slice(i, ROWS_PER_BATCH)) for i in range(0, table.num_rows, ROWS_PER_BATCH)]
            mapped = ray.data.from_arrow_refs(refs).map_batches(
                Identity,
                batch_size=ROWS_PER_BATCH,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=1,
            )
            arrivals = []
            for batch in mapped.iter_batches(batch_format="pyarrow", batch_size=None):
                arrivals.append((time.perf_counter(), batch.num_rows))
            total = time.perf_counter() - started
            first_at, first_rows = arrivals[0]
            steady = (arrivals[-1][0] - first_at) / max(1, table.num_rows - first_rows)
            timings.append(
                {"total_s": total, "steady_us_per_row": steady * 1e6, "total_us_per_row": total / table.num_rows * 1e6}
            )
        kept = timings[1:] or timings
        return {
            "rows": table.num_rows,
            "rows_per_batch": ROWS_PER_BATCH,
            "steady_us_per_row": statistics.median(t["steady_us_per_row"] for t in kept),
            "total_us_per_row": statistics.median(t["total_us_per_row"] for t in kept),
            "runs": timings,
        }
    finally:
        ray.shutdown()


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{'job':<20} {'run':<26} {'wall s':>7} {'rows/s':>8} {'steady':>8} {'vs ref':>7}  outputs vs the reference",
        "-" * 120,
    ]
    for task, job in report["jobs"].items():
        reference = job["runs"][0]["summary"]
        for run in job["runs"]:
            summary = run["summary"]
            ratio = summary["steady_rows_per_s"] / reference["steady_rows_per_s"]
            agreement = run.get("agreement")
            if agreement is None:
                note = f"reference ({summary['backend']}, {summary['rows_in']} rows, {summary['failed']} failed)"
            elif task == "text-classification":
                note = (
                    f"labels identical {agreement['labels_identical']}/{agreement['rows']}, "
                    f"max |score diff| {agreement['max_score_diff']:.2e}"
                )
            else:
                note = f"max |diff| {agreement['max_abs_diff']:.2e}, min cosine {agreement['min_cosine']:.6f}"
            lines.append(
                f"{task:<20} {run['name']:<26} {summary['wall_seconds']:>7.1f} {summary['rows_per_s']:>8.1f} "
                f"{summary['steady_rows_per_s']:>8.1f} {ratio:>6.2f}x  {note}"
            )
        lines.append(
            f"{'':<20} handoff per row (ray 1x1 - one process 1 thread, steady): {job['handoff_us_per_row']:.1f} us"
        )
    handoff = report["identity_handoff"]
    lines.append(
        f"Ray handoff alone (identity actor, {handoff['rows']} rows in batches of {handoff['rows_per_batch']}): "
        f"{handoff['steady_us_per_row']:.1f} us/row steady, "
        f"{handoff['total_us_per_row']:.1f} us/row with the job's start"
    )
    lines.append(
        f"{report['sentences']} sentences, {report['cpus']} CPUs ({report['cpu']}), batch {BATCH_SIZE}, "
        f"{ROWS_PER_BATCH} rows per Ray batch; rows/s: all rows over the run after preparing the model "
        "(loads and Ray's start included); steady: after the first batch of results; vs ref: steady / the reference's"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--accelerator", "-a", default=None, help="backend (default: the best installed)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the four runs, interleaved; medians")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and synthetic sentences")
    parser.add_argument("--out", type=Path, default=Path("bench-results/ray"))
    args = parser.parse_args(argv)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from acceleron.bulk import prepare_model

    args.out.mkdir(parents=True, exist_ok=True)
    sentences, models = tiny_inputs(args.sentences, args.out / "tiny") if args.tiny else real_inputs(args.sentences)
    source = args.out / "sentences.parquet"
    pq.write_table(pa.table({"id": list(range(len(sentences))), "text": sentences}), source)
    report: dict[str, Any] = {
        "sentences": len(sentences),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "command": shlex.join([sys.executable, *sys.argv]),
        "jobs": {},
    }
    for task, model in models.items():
        prepared = prepare_model(task, model, accelerator=args.accelerator)  # exports now, not in a timed run
        print(f"{task}: {prepared.backend} model ready in {prepared.path}", file=sys.stderr, flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in RUNS}
        for repeat in range(args.repeats):
            for name, extra in RUNS:
                print(f"{task}: {name} (round {repeat + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
                output = args.out / f"{task}-{name.replace(' ', '_').replace(',', '')}.parquet"
                rounds[name].append(run_command(task, model, args.accelerator, source, output, extra))
        runs = []
        for index, (name, _) in enumerate(RUNS):
            summaries = rounds[name]
            summary = dict(summaries[-1])
            for key in ("wall_seconds", "rows_per_s", "steady_rows_per_s"):
                summary[key] = statistics.median(s[key] for s in summaries)
            run: dict[str, Any] = {"name": name, "summary": summary, "rounds": summaries}
            if index:
                run["agreement"] = compare(task, Path(rounds[RUNS[0][0]][-1]["output"]), Path(summary["output"]))
            runs.append(run)
        by_name = {run["name"]: run["summary"] for run in runs}
        handoff = (
            1 / by_name["ray, 1 actor x 1 thread"]["steady_rows_per_s"]
            - 1 / by_name["one process, 1 thread"]["steady_rows_per_s"]
        )
        report["jobs"][task] = {"model": str(model), "runs": runs, "handoff_us_per_row": handoff * 1e6}
    report["identity_handoff"] = handoff_per_row(source, max(1, args.repeats))
    table = format_table(report)
    print(table)
    (args.out / "ray-bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "ray-bench.txt").write_text(table + "\n")
    print(f"written: {args.out / 'ray-bench.json'}, {args.out / 'ray-bench.txt'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
