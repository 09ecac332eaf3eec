"""Measure the ort backend on the real models of issue 4: accuracy figures and throughput ratios.

Everything runs in one process, 2 threads, batch 32, on the 1024 held-out movie-review sentences;
throughputs are interleaved over rounds and reported as medians of per-round ratios against stock
transformers eager PyTorch, so a busy machine slows both sides alike. Usage, from the repository
root::

    HF_HUB_OFFLINE=1 python plugins/ort/tools/measure_real_models.py [--rounds 3] [--json out.json]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
THREADS = 2
BATCH_SIZE = 32


def _seconds(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def warm_start_seconds(model_path: Path, cache_dir: Path) -> float:
    """Time ``from_pretrained`` from a populated cache in a fresh process, after its imports."""
    code = f"""
import time, torch, transformers, onnxruntime, onnx
from transformers import AutoConfig, BertModel
from acceleron.plugins import get_backend
from acceleron.cache import ExportCache
import acceleron_ort.session, acceleron_ort.exporting
backend = get_backend("ort")
started = time.perf_counter()
backend.model_class().from_pretrained({str(model_path)!r}, task="feature-extraction",
    export_cache=ExportCache({str(cache_dir)!r}), num_threads={THREADS})
print(time.perf_counter() - started)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ACCELERON_PROGRESS", "0")
    sys.path.insert(0, str(ROOT))

    import torch
    from benchmarks import assets

    from acceleron import pipeline
    from acceleron.cache import ExportCache
    from acceleron.plugins import get_backend

    torch.set_num_threads(THREADS)
    figures: dict[str, Any] = {}
    cache_dir = Path(tempfile.mkdtemp(prefix="ort-measure-"))
    cache = ExportCache(cache_dir)
    heldout = assets.heldout_sentences(1024)
    sentences = [s for s, _ in heldout]

    # ---- MiniLM: embeddings, export time, warm start ----
    minilm, tokenizer = assets.load_minilm()
    backend = get_backend("ort")
    started = time.perf_counter()
    onnx_minilm = backend.model_class().from_pretrained(
        assets.minilm_path(), task="feature-extraction", export_cache=cache, num_threads=THREADS
    )
    figures["minilm_first_load_with_export_s"] = round(time.perf_counter() - started, 2)
    cosines = []
    for start in range(0, len(sentences), BATCH_SIZE):
        batch = sentences[start : start + BATCH_SIZE]
        expected = assets.minilm_embeddings(minilm, tokenizer, batch)
        got = assets.minilm_embeddings(onnx_minilm, tokenizer, batch)
        cosines.extend(torch.nn.functional.cosine_similarity(got, expected, dim=1).tolist())
    figures["minilm_cosine_min"] = round(min(cosines), 7)
    figures["minilm_cosine_mean"] = round(statistics.fmean(cosines), 7)
    figures["minilm_warm_start_s"] = [round(warm_start_seconds(assets.minilm_path(), cache_dir), 3) for _ in range(3)]

    # ---- sentiment: labels, accuracy ----
    eager = assets.load_sentiment_pipeline()
    options = {"num_threads": THREADS}
    ort32 = pipeline(
        "text-classification",
        model=str(assets.sentiment_model_path()),
        accelerator="ort",
        accelerator_options=options,
        model_kwargs={"export_cache": cache},
    )
    ort8 = pipeline(
        "text-classification",
        model=str(assets.sentiment_model_path()),
        accelerator="ort",
        accelerator_options={**options, "dtype": "int8"},
        model_kwargs={"export_cache": cache},
    )
    labels = {
        name: [out["label"] for out in pipe(sentences, batch_size=BATCH_SIZE)]
        for name, pipe in (("eager", eager), ("ort_float32", ort32), ("ort_int8", ort8))
    }
    gold = [assets.ID2LABEL[label] for _, label in heldout]
    for name, predicted in labels.items():
        figures[f"accuracy_{name}"] = round(sum(p == g for p, g in zip(predicted, gold)) / len(gold), 4)
    figures["float32_labels_differing_from_eager"] = sum(a != b for a, b in zip(labels["ort_float32"], labels["eager"]))
    figures["int8_agreement_with_float32"] = round(
        sum(a == b for a, b in zip(labels["ort_int8"], labels["ort_float32"])) / len(gold), 4
    )
    figures["seed_examples"] = {
        name: [pipe(sentence)[0]["label"] for sentence, _ in assets.SEED_EXAMPLES]
        for name, pipe in (("ort_float32", ort32), ("ort_int8", ort8))
    }

    # ---- throughput: pipelines, and bare sessions on the batches the pipelines run ----
    nospin = pipeline(
        "text-classification",
        model=str(assets.sentiment_model_path()),
        accelerator="ort",
        accelerator_options={**options, "session_options": {"session.intra_op.allow_spinning": "0"}},
        model_kwargs={"export_cache": cache},
    )
    tokenizer = eager.tokenizer

    def batches(texts: list[str]) -> list[dict[str, Any]]:
        return [
            dict(tokenizer(texts[i : i + BATCH_SIZE], padding=True, truncation=True, return_tensors="pt"))
            for i in range(0, len(texts), BATCH_SIZE)
        ]

    # The stock pipeline batches in the caller's order; acceleron's sorts by length first.
    stock_batches = batches(sentences)
    sorted_batches = batches(sorted(sentences, key=lambda s: len(tokenizer(s, truncation=True)["input_ids"])))

    def bare(model: Any) -> Callable[[], None]:
        def run() -> None:
            for batch in sorted_batches:
                model.backend._forward(model.session, batch, model.task)

        return run

    def bare_torch() -> None:
        with torch.inference_mode():
            for batch in stock_batches:
                eager.model(**batch)

    runs: dict[str, Callable[[], Any]] = {
        "eager_pipeline": lambda: eager(sentences, batch_size=BATCH_SIZE),
        "ort_float32_pipeline": lambda: ort32(sentences, batch_size=BATCH_SIZE),
        "ort_int8_pipeline": lambda: ort8(sentences, batch_size=BATCH_SIZE),
        "ort_float32_pipeline_no_spinning": lambda: nospin(sentences, batch_size=BATCH_SIZE),
        "eager_bare_model": bare_torch,
        "ort_float32_bare_session": bare(ort32.model),
        "ort_int8_bare_session": bare(ort8.model),
    }
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            timings[name].append(_seconds(run))
    figures["seconds_per_1024_sentences"] = {name: [round(t, 2) for t in times] for name, times in timings.items()}

    def speedup(faster: str, slower: str) -> float:
        """Median over rounds of time(slower) / time(faster), i.e. faster's throughput ratio."""
        return round(statistics.median(s / f for f, s in zip(timings[faster], timings[slower])), 3)

    figures["throughput_vs_eager_pipeline"] = {
        "ort_float32": speedup("ort_float32_pipeline", "eager_pipeline"),
        "ort_int8": speedup("ort_int8_pipeline", "eager_pipeline"),
        "ort_float32_no_spinning": speedup("ort_float32_pipeline_no_spinning", "eager_pipeline"),
    }
    figures["pipeline_share_of_bare_session"] = {
        "ort_float32": speedup("ort_float32_bare_session", "ort_float32_pipeline") ** -1,
        "ort_int8": speedup("ort_int8_bare_session", "ort_int8_pipeline") ** -1,
        "eager_stock": speedup("eager_bare_model", "eager_pipeline") ** -1,
    }

    # ---- single-sentence latency, in blocks so that one runtime's idle threads do not slow the next ----
    singles = sentences[:48]
    latency: dict[str, list[float]] = {"eager": [], "ort_float32": [], "ort_int8": []}
    for _ in range(args.rounds):
        for name, pipe in (("eager", eager), ("ort_float32", ort32), ("ort_int8", ort8)):
            pipe(singles[0])
            for sentence in singles:
                latency[name].append(_seconds(lambda pipe=pipe, sentence=sentence: pipe(sentence)))
    figures["single_sentence_latency_ms_median"] = {
        name: round(1000 * statistics.median(values), 2) for name, values in latency.items()
    }
    figures["latency_vs_eager"] = {
        name: round(statistics.median(values) / statistics.median(latency["eager"]), 3)
        for name, values in latency.items()
        if name != "eager"
    }

    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
