"""Issue 5's figures for the ``ov`` backend on the real models, measured in one run.

1. The project benchmark (``benchmarks/bench.py``) for stock transformers float32 and ``ov`` at its
   default dtype, float32 and int8: pipeline throughput, runtime-only throughput, latency, starts,
   label agreement and MiniLM cosine.
2. The bare compiled model: OpenVINO's own ``InferRequest.infer`` on pre-tokenised batches, interleaved
   with acceleron's model call on them. Batches as the benchmark forms them (in order, padded to their
   longest) and as the length-sorted pipeline forms them (sorted by length first): the pipeline's
   throughput over the bare model's on the latter is its own overhead.
3. Warm start of MiniLM in fresh processes (imports excluded), with and without the compiled-model cache.

Usage (from the repository root; the assets are built by ``python benchmarks/assets.py prepare``)::

    HF_HUB_OFFLINE=1 python plugins/openvino/tools/measure.py --out ov-results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ACCELERON_PROGRESS", "0")

from benchmarks import bench  # noqa: E402  (needs the repository root on the path)

WARM_START = """
import sys, time, json, tempfile
from acceleron import pipeline
from acceleron.testing import build_tiny_model
# Imports are not part of the start: a tiny model's pipeline imports everything first.
tiny = build_tiny_model("feature-extraction", tempfile.mkdtemp())
pipeline("feature-extraction", model=str(tiny), accelerator="ov", accelerator_options={"compile_cache": False})
started = time.perf_counter()
pipe = pipeline("feature-extraction", model=sys.argv[1], accelerator="ov", accelerator_options=json.loads(sys.argv[2]))
loaded = time.perf_counter()
pipe("A man is eating food.")
print(json.dumps({"start_s": loaded - started, "first_call_s": time.perf_counter() - loaded}))
"""


def _sorted_batches(tokenizer: Any, sentences: list[str], batch_size: int) -> list[dict[str, Any]]:
    """The batches a length-sorted pipeline runs: sentences ordered by token count, then chunked."""
    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True)["input_ids"]]
    ordered = [sentences[i] for i in sorted(range(len(sentences)), key=lambda i: lengths[i])]
    return [
        dict(tokenizer(ordered[i : i + batch_size], padding=True, truncation=True, return_tensors="pt"))
        for i in range(0, len(ordered), batch_size)
    ]


def _bare_rate(request: Any, arrays: list[dict[str, Any]], sentences: int) -> float:
    started = time.perf_counter()
    for feed in arrays:
        request.infer(feed, share_inputs=True)
    return sentences / (time.perf_counter() - started)


def _model_rate(model: Any, batches: list[dict[str, Any]], sentences: int) -> float:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(**batch)
    return sentences / (time.perf_counter() - started)


def bare_model_figures(variants: list[Any], sentences: list[str], batch_size: int, rounds: int) -> dict[str, Any]:
    """Sentences/s of OpenVINO alone and of acceleron's model call, in-order and length-sorted batches."""
    tokenizer = variants[0].pipe.tokenizer
    layouts = {
        "in_order": bench._batches(tokenizer, sentences, batch_size),
        "length_sorted": _sorted_batches(tokenizer, sentences, batch_size),
    }
    figures: dict[str, Any] = {}
    for variant in variants:
        session = variant.pipe.model.session
        request = session.compiled.create_infer_request()
        names = [spec.name for spec in session.inputs]
        count = len(sentences)
        timings: dict[str, list[float]] = {}
        for layout, batches in layouts.items():
            arrays = [{name: batch[name].numpy() for name in names} for batch in batches]
            for _ in range(rounds):
                timings.setdefault(f"{layout}_bare", []).append(_bare_rate(request, arrays, count))
                timings.setdefault(f"{layout}_model", []).append(_model_rate(variant.pipe.model, batches, count))
        # Medians, and the best round: on a shared machine the best round is the least disturbed one.
        row: dict[str, Any] = {name: round(statistics.median(values), 1) for name, values in timings.items()}
        row.update({f"{name}_best": round(max(values), 1) for name, values in timings.items()})
        pipeline = variant.timings["pipeline_sentences_per_s"]
        row["model_share_of_bare_in_order"] = round(row["in_order_model"] / row["in_order_bare"], 3)
        row["pipeline_share_of_bare_length_sorted"] = round(statistics.median(pipeline) / row["length_sorted_bare"], 3)
        row["pipeline_share_of_bare_length_sorted_best"] = round(max(pipeline) / row["length_sorted_bare_best"], 3)
        figures[variant.name] = row
    return figures


def warm_starts(minilm: Path, runs: int) -> dict[str, Any]:
    """MiniLM ``pipeline()`` time in fresh processes once its export is cached, cache on and off."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ov-warm-") as cache:
        env = {**os.environ, "ACCELERON_CACHE_DIR": cache}
        for label, options in (("compile_cache", {"num_threads": 2}), ("no_compile_cache", {"compile_cache": False})):
            samples = []
            for index in range(runs + 1):  # the first run exports (and fills the compiled-model cache)
                output = subprocess.run(
                    [sys.executable, "-c", WARM_START, str(minilm), json.dumps(options)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                if index:
                    samples.append(json.loads(output.strip().splitlines()[-1]))
            results[label] = {
                "start_s": [round(s["start_s"], 3) for s in samples],
                "first_call_s": [round(s["first_call_s"], 3) for s in samples],
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-calls", type=int, default=100)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--dtypes", default="auto,float32,int8", help="ov dtypes to measure, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("ov-results"))
    args = parser.parse_args()

    workload = bench.real_workload(args.sentences)
    variants = [bench.Variant(bench.STOCK, "float32")] + [
        bench.Variant("ov", dtype) for dtype in args.dtypes.split(",")
    ]
    report = bench.run(
        workload,
        variants,
        threads=args.threads,
        batch_size=args.batch_size,
        latency_calls=args.latency_calls,
        repeats=args.repeats,
        embed_sentences=256,
    )
    report["bare_model"] = bare_model_figures(variants[1:], workload.sentences, args.batch_size, args.repeats)
    if workload.embedder is not None:
        report["minilm_warm_start"] = warm_starts(workload.embedder, args.warm_runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ov-measure.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    bench.write_chart(report, args.out / "ov-measure.png")
    print(bench.format_table(report))
    print(
        json.dumps({"bare_model": report["bare_model"], "minilm_warm_start": report.get("minilm_warm_start")}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
