"""Side-by-side benchmark: every installed backend and dtype against eager PyTorch, same inputs.

``./nox -s bench`` runs it on the real models (see assets.py); ``--tiny`` runs it on a tiny random
model and synthetic sentences (used by the tests: it checks the output, never the timings).

Per variant (backend x dtype) it measures, with the thread count fixed and reported:

* cold start (first ``pipeline()``, export included, into an empty export cache) and warm start
  (a second ``pipeline()`` served from that cache), Python imports excluded;
* throughput of the pipeline over N sentences at ``batch_size`` and of the runtime alone on the
  batches acceleron's pipeline forms (length-sorted, pre-tokenised; the ratio is the pipeline's
  own overhead);
* the median latency of single-sentence calls;
* label agreement with the reference, accuracy against the human labels, and for embeddings the
  mean cosine similarity to the reference.

The reference is the stock ``transformers.pipeline`` on eager PyTorch float32 (row
``transformers/float32``); ``torch/...`` rows are acceleron's PyTorch reference backend.

Timed runs are repeated and interleaved across variants after one warm-up; medians are reported
with min and max. Output: a table on the terminal, a JSON file and a PNG chart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ACCELERON_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH_DTYPES = ("float32", "bfloat16", "int8")
#: The reference every speed-up and agreement is measured against: stock ``transformers.pipeline``.
STOCK = "transformers"


@dataclass
class Variant:
    backend: str
    dtype: str
    pipe: Any = None
    embed: Any = None
    timings: dict[str, list[float]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.dtype}"

    def record(self, metric: str, value: float) -> None:
        self.timings.setdefault(metric, []).append(value)


@dataclass
class Workload:
    classifier: Path
    embedder: Path | None
    sentences: list[str]
    labels: list[int] | None
    id2label: dict[int, str]


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def _timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return time.perf_counter() - started, result


def real_workload(count: int) -> Workload:
    from benchmarks import assets

    pairs = assets.heldout_sentences(count)
    return Workload(
        classifier=assets.sentiment_model_path(),
        embedder=assets.minilm_path(),
        sentences=[text for text, _ in pairs],
        labels=[label for _, label in pairs],
        id2label=dict(assets.ID2LABEL),
    )


def tiny_workload(count: int, folder: Path) -> Workload:
    from acceleron.testing import WORDS, build_tiny_model

    classifier = build_tiny_model("text-classification", folder / "classifier")
    embedder = build_tiny_model("feature-extraction", folder / "embedder")
    sentences = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 9)) for i in range(count)]
    labels = [i % 2 for i in range(count)]
    return Workload(classifier, embedder, sentences, labels, {0: "NEGATIVE", 1: "POSITIVE"})


def variants_for(backends: Sequence[str] | None) -> list[Variant]:
    from acceleron import get_backend, list_backends

    names = (
        list(backends)
        if backends
        else ["torch"] + [s.name for s in list_backends() if s.status == "ok" and s.auto_select]
    )
    variants = [Variant(STOCK, "float32")]
    for name in names:
        backend = get_backend(name)
        variants += [Variant(backend.name, dtype) for dtype in BENCH_DTYPES if dtype in backend.dtypes]
    return variants


def _batches(tokenizer: Any, sentences: list[str], batch_size: int) -> list[dict[str, Any]]:
    """The batches acceleron's text-classification pipeline forms: sorted by token count, padded.

    The runtime-alone figure is measured on these for every variant, so ``pipe/rt`` is the
    pipeline's own overhead on the same work (for the stock pipeline, which batches in input
    order, it also shows what the extra padding costs).
    """
    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True)["input_ids"]]
    order = sorted(range(len(sentences)), key=lengths.__getitem__)
    return [
        dict(
            tokenizer(
                [sentences[i] for i in order[start : start + batch_size]],
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
        )
        for start in range(0, len(order), batch_size)
    ]


def _run_batches(model: Any, batches: list[dict[str, Any]]) -> None:
    for batch in batches:
        model(**batch)


def _mean_pooled(features: list[Any]) -> Any:
    import torch

    return torch.stack([torch.nn.functional.normalize(torch.tensor(f[0]).mean(dim=0), dim=0) for f in features])


def run(
    workload: Workload,
    variants: list[Variant],
    *,
    threads: int,
    batch_size: int,
    latency_calls: int,
    repeats: int,
    embed_sentences: int,
) -> dict[str, Any]:
    import torch
    import transformers

    from acceleron import pipeline
    from acceleron.errors import AcceleronError

    torch.set_num_threads(threads)
    options = {"num_threads": threads}
    cache_root = Path(tempfile.mkdtemp(prefix="acceleron-bench-cache-"))
    for variant in variants:
        print(f"preparing {variant.name} ...", file=sys.stderr, flush=True)
        if variant.backend == STOCK:
            build: Callable[..., Any] = transformers.pipeline
            load: dict[str, Any] = {"model": str(workload.classifier), "device": "cpu"}
            embed_load: dict[str, Any] = {"model": str(workload.embedder), "device": "cpu"}
        else:
            cache = cache_root / variant.name.replace("/", "-")
            build = pipeline
            kwargs = {
                "accelerator": variant.backend,
                "dtype": variant.dtype,
                "accelerator_options": options,
                "model_kwargs": {"export_cache": cache},
            }
            load = {"model": str(workload.classifier), **kwargs}
            embed_load = {"model": str(workload.embedder), **kwargs}
        try:
            cold, _ = _timed(build, "text-classification", **load)
        except AcceleronError as error:  # e.g. int8 without the backend's optional extra
            print(f"skipping {variant.name}: {error}", file=sys.stderr, flush=True)
            variant.results["skipped"] = str(error)
            continue
        warm, variant.pipe = _timed(build, "text-classification", **load)
        variant.record("cold_start_s", cold)
        variant.record("warm_start_s", warm)
        report = getattr(variant.pipe.model, "report", None)
        variant.results["runtime"] = report()["runtime"] if report else {"dtype": "float32", "engine": "eager"}
        if workload.embedder is not None:
            variant.embed = build("feature-extraction", **embed_load)

    variants[:] = [variant for variant in variants if "skipped" not in variant.results]
    tokenizer = variants[0].pipe.tokenizer
    batches = _batches(tokenizer, workload.sentences, batch_size)
    singles = workload.sentences[:latency_calls]
    for variant in variants:  # warm-up, and the outputs the accuracy figures come from
        outputs = variant.pipe(workload.sentences, batch_size=batch_size)
        variant.results["labels"] = [out["label"] for out in outputs]
        if variant.embed is not None:
            variant.results["embeddings"] = _mean_pooled(variant.embed(workload.sentences[:embed_sentences]))

    for repeat in range(repeats):
        print(f"timing, round {repeat + 1} of {repeats} ...", file=sys.stderr, flush=True)
        for variant in variants:
            elapsed, _ = _timed(variant.pipe, workload.sentences, batch_size=batch_size)
            variant.record("pipeline_sentences_per_s", len(workload.sentences) / elapsed)
            with torch.inference_mode():
                elapsed, _ = _timed(_run_batches, variant.pipe.model, batches)
            variant.record("runtime_sentences_per_s", len(workload.sentences) / elapsed)
            latencies = []
            for sentence in singles:
                elapsed, _ = _timed(variant.pipe, sentence)
                latencies.append(elapsed * 1000)
            variant.record("latency_ms", statistics.median(latencies))

    return _summarise(workload, variants, threads=threads, batch_size=batch_size, repeats=repeats)


def _summarise(workload: Workload, variants: list[Variant], **settings: Any) -> dict[str, Any]:
    import torch

    reference = next(v for v in variants if v.backend == STOCK)
    reference_speed = statistics.median(reference.timings["pipeline_sentences_per_s"])
    rows = []
    for variant in variants:
        stats = {metric: _stats(values) for metric, values in variant.timings.items()}
        labels = variant.results["labels"]
        row: dict[str, Any] = {
            "variant": variant.name,
            "backend": variant.backend,
            "dtype": variant.dtype,
            "runtime": variant.results["runtime"],
            **stats,
            "speedup_vs_stock": stats["pipeline_sentences_per_s"]["median"] / reference_speed,
            "pipeline_share_of_runtime": stats["pipeline_sentences_per_s"]["median"]
            / stats["runtime_sentences_per_s"]["median"],
            "agreement_with_stock": sum(a == b for a, b in zip(labels, reference.results["labels"])) / len(labels),
        }
        if workload.labels is not None:
            expected = [workload.id2label[label] for label in workload.labels]
            row["accuracy"] = sum(a == b for a, b in zip(labels, expected)) / len(labels)
        if "embeddings" in variant.results:
            cosines = (variant.results["embeddings"] * reference.results["embeddings"]).sum(dim=1)
            row["embedding_cosine_to_stock"] = float(torch.mean(cosines))
        rows.append(row)
    return {
        "settings": {**settings, "sentences": len(workload.sentences), "classifier": str(workload.classifier)},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": _versions(),
        "results": rows,
    }


def _versions() -> dict[str, str | None]:
    from acceleron.backend import distribution_version

    names = (
        "acceleron",
        "acceleron-ort",
        "acceleron-openvino",
        "acceleron-ipex",
        "torch",
        "transformers",
        "onnxruntime",
        "openvino",
    )
    return {name: distribution_version(name) for name in names}


def format_table(report: dict[str, Any]) -> str:
    header = (
        f"{'variant':<18}{'speed-up':>9}{'sent/s':>9}{'runtime/s':>10}{'pipe/rt':>8}{'lat ms':>8}"
        f"{'cold s':>8}{'warm s':>8}{'agree':>8}{'acc':>7}{'cos':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        acc = f"{row['accuracy']:.1%}" if "accuracy" in row else "-"
        cos = f"{row['embedding_cosine_to_stock']:.5f}" if "embedding_cosine_to_stock" in row else "-"
        lines.append(
            f"{row['variant']:<18}{row['speedup_vs_stock']:>8.2f}x"
            f"{row['pipeline_sentences_per_s']['median']:>9.1f}{row['runtime_sentences_per_s']['median']:>10.1f}"
            f"{row['pipeline_share_of_runtime']:>8.0%}{row['latency_ms']['median']:>8.1f}"
            f"{row['cold_start_s']['median']:>8.2f}{row['warm_start_s']['median']:>8.2f}"
            f"{row['agreement_with_stock']:>8.1%}{acc:>7}{cos:>8}"
        )
    settings = report["settings"]
    lines.append(
        f"{settings['sentences']} sentences, batch {settings['batch_size']}, {settings['threads']} threads, "
        f"{settings['repeats']} interleaved rounds (medians); "
        "speed-up = pipeline throughput / the stock transformers pipeline's (eager float32)"
    )
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [row["variant"] for row in rows]
    speedups = [row["speedup_vs_stock"] for row in rows]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(rows)), 4.5))
    bars = axis.bar(
        names, speedups, color=["#999999" if n.split("/")[0] in (STOCK, "torch") else "#2b6cb0" for n in names]
    )
    axis.axhline(1.0, color="black", linewidth=0.8)
    for bar, row in zip(bars, rows):
        note = f"{row['speedup_vs_stock']:.2f}x\nagree {row['agreement_with_stock']:.1%}"
        if "accuracy" in row:
            note += f"\nacc {row['accuracy']:.1%}"
        axis.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    settings = report["settings"]
    axis.set_ylabel("pipeline throughput vs stock transformers (eager float32)")
    axis.set_title(
        f"text-classification, {settings['sentences']} sentences, batch {settings['batch_size']}, "
        f"{settings['threads']} threads"
    )
    axis.set_ylim(0, max(speedups) * 1.35)
    plt.setp(axis.get_xticklabels(), rotation=20, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", help="comma-separated backends (default: torch and every installed one)")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--embed-sentences", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for JSON and PNG")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model and synthetic sentences")
    args = parser.parse_args(argv)
    if min(args.sentences, args.batch_size, args.repeats, args.threads, args.latency_calls) < 1:
        parser.error("counts must be positive")

    if args.tiny:
        workload = tiny_workload(args.sentences, Path(tempfile.mkdtemp(prefix="acceleron-bench-tiny-")))
    else:
        workload = real_workload(args.sentences)
    variants = variants_for(args.backends.split(",") if args.backends else None)
    report = run(
        workload,
        variants,
        threads=args.threads,
        batch_size=args.batch_size,
        latency_calls=min(args.latency_calls, len(workload.sentences)),
        repeats=args.repeats,
        embed_sentences=min(args.embed_sentences, len(workload.sentences)),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_chart(report, args.out / "bench.png")
    print(format_table(report))
    print(f"\nwrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
