"""Side-by-side benchmark: every installed backend and dtype against eager PyTorch, same inputs.

``./nox -s bench`` runs it on the real models (see acceleron.testing.assets); ``--tiny`` runs it on a tiny random
model and synthetic sentences (used by the tests: it checks the output, never the timings).

Per variant (backend x dtype) it measures, with the thread count fixed and reported:

* cold start (first ``pipeline()``, export included, into an empty export cache) and warm start
  (a second ``pipeline()`` served from that cache); torch, transformers, acceleron, the
  backend's runtime modules and the model's code are imported before (what a backend imports
  lazily on its first load, such as an exporter, is part of its cold start);
* throughput of the pipeline over N sentences at ``batch_size`` and of the runtime alone on the
  batches acceleron's pipeline forms (length-sorted, pre-tokenised; the ratio is the pipeline's
  own overhead);
* the median latency of single-sentence calls;
* label agreement with the reference, accuracy against the human labels, and for embeddings the
  mean cosine similarity to the reference.

The reference is the stock ``transformers.pipeline`` on eager PyTorch float32 (row
``transformers/float32``); ``torch/...`` rows are acceleron's PyTorch reference backend.

``--workload generation`` (also run by the default ``--workload all``) benchmarks text generation on
SmolLM2-135M-Instruct (``--tiny``: a tiny random Llama). The reference is the stock transformers
model's ``generate()`` on eager PyTorch float32; every other variant is
``acceleron.pipeline("text-generation", accelerator=..., dtype=...)`` and its model's ``generate()``.
Per variant it measures, greedy, with ``--new-tokens`` new tokens forced (the end-of-sequence tokens
ruled out by a logits processor, as ``min_new_tokens`` equal to ``max_new_tokens`` would, and as the
anchors do, so every run generates the same count) on chat-formatted prompts:

* decode time per step (the first token excluded; at batch 1 that is ms per token), as wall time
  (``time.perf_counter``) and as CPU time of the variant's process (``time.process_time``: all its
  threads, spinning ones included), and decode throughput (new tokens per second over the batch),
  at batch 1 and at batch ``--generation-batch`` (that many different prompts, left-padded), timed
  token by token with a streamer; time to first token on those chat prompts;
* time to first token (wall and CPU) of a ``--prefill-tokens`` (128) token prompt at batch 1: plain
  text (no chat template, no BOS), :data:`PREFILL_TEXT` tokenised and repeated to exactly that count;
* the pipeline's greedy chat answer to "What is the capital of France?" (up to 64 new tokens,
  stopping at the end of the turn) and whether it names Paris;
* token agreement with the reference: the share of generated tokens before the first one that
  differs from the reference's, averaged over the sequences, and the count of identical sequences.

``--threads-list 1,2`` measures every variant at each thread count (one set of worker processes,
one table each; exports are shared). Before each, the memory bandwidth is measured with as many
threads (:func:`measure_bandwidth`), and the floor of each dtype class is computed: the bytes of
weights one decode step reads (every parameter once; a tied embedding is read whole as the LM head,
and its lookup row is not counted again) at 4 (float32), 2 (bfloat16), 1.0625 (int8, as Q8_0's 8.5
bits) and 0.5625 (int4, as Q4_0's 4.5 bits) bytes a weight, over the read bandwidth. ``--anchors``
adds other engines decoding the same model as variants of the same rounds (llama.cpp,
onnxruntime-genai; see benchmarks/anchors.py), given the same token ids. The report
(``generation.md``) has a markdown table per thread count: stock eager float32 first, then ours,
then the anchors, then the floors.

A variant whose ``pipeline()`` (or generation) raises for text-generation is skipped and listed;
the reference's failure ends the run.

Each variant lives in its own worker process for the whole run (``bench.py --worker``, steps and
figures pickled over its stdin and stdout); this process only orchestrates. The workers start
together and import their runtime (untimed), then, one variant at a time, build their pipelines
(cold and warm start) and take the warm-up outputs the agreement figures come from. Timed runs
are repeated and interleaved across variants after that warm-up: each round asks every variant
in turn for one timed run, so only one worker is busy at any moment while the others sit idle,
blocked on their pipe, their runtime's threads (an ONNX Runtime session's spinning intra-op
threads, torch's OpenMP pool) in another process. ``--same-process`` loads every variant in this
one process instead, as earlier versions did, to see what co-loaded runtimes do to each other;
the report's ``settings`` say which (``isolation``: ``process`` or ``none``). Medians are
reported with min and max. Output: a table on the terminal, a JSON file and a PNG chart per
workload (``bench.json``/``bench.png`` for classification, ``generation.json``/``generation.md``/
``generation.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import pickle
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

BENCH_DTYPES = ("float32", "bfloat16", "int8")
#: Generation also measures int4 where a backend offers it (a variant whose pipeline() refuses it is skipped).
GENERATION_DTYPES = (*BENCH_DTYPES, "int4")
#: The reference every speed-up and agreement is measured against: stock ``transformers.pipeline``.
STOCK = "transformers"
#: ``bench.py --worker``: the process one variant lives in (see :func:`serve_worker`).
WORKER_FLAG = "--worker"

#: What one step of a variant measured, as it travels back to the orchestrating process:
#: ``{"timings": {metric: one value}, "results": {name: value}}`` (plain values, lists, torch tensors).
Update = dict[str, dict[str, Any]]


@dataclass
class Variant:
    backend: str
    dtype: str
    #: The runtime objects, only in the process the variant runs in: its pipelines, and the
    #: inputs its timed calls run on.
    pipe: Any = None
    embed: Any = None
    inputs: Any = None
    #: The figures, in the orchestrating process.
    timings: dict[str, list[float]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.dtype}"

    def record(self, metric: str, value: float) -> None:
        self.timings.setdefault(metric, []).append(value)

    def apply(self, update: Update) -> None:
        """Keeps what one step measured: one more value per timing metric, and its results."""
        for metric, value in update.get("timings", {}).items():
            self.record(metric, value)
        self.results.update(update.get("results", {}))


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
    from acceleron.testing import assets

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


def variants_for(backends: Sequence[str] | None, dtypes: Sequence[str] = BENCH_DTYPES) -> list[Variant]:
    from acceleron import get_backend, list_backends

    names = (
        list(backends)
        if backends
        else ["torch"] + [s.name for s in list_backends() if s.status == "ok" and s.auto_select]
    )
    variants = [Variant(STOCK, "float32")]
    for name in names:
        backend = get_backend(name)
        variants += [Variant(backend.name, dtype) for dtype in dtypes if dtype in backend.dtypes]
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


def _setup(backend: str, threads: int, models: Sequence[Path | None]) -> Update:
    """Imports what the variant runs on and fixes torch's thread count, before anything is timed.

    Cold starts leave out the imports every variant pays alike: the backend's runtime modules and
    the models' code (transformers imports a model class on its first use) are imported here.
    """
    import torch
    import transformers

    from acceleron import get_backend
    from acceleron.backend import module_installed

    torch.set_num_threads(threads)
    modules = ("torch", "transformers") if backend == STOCK else get_backend(backend).runtime_modules
    for module in modules:
        if module_installed(module):
            with contextlib.suppress(Exception):  # a broken runtime: pipeline() says so, and the variant is skipped
                importlib.import_module(module)
    for folder in filter(None, models):
        for architecture in transformers.AutoConfig.from_pretrained(str(folder)).architectures or ():
            getattr(transformers, architecture, None)
    return {}


def _acceleron_kwargs(variant: Variant, threads: int, cache_root: Path) -> dict[str, Any]:
    """``acceleron.pipeline`` arguments for a variant: its backend, dtype, thread count and own export cache."""
    return {
        "accelerator": variant.backend,
        "dtype": variant.dtype,
        "accelerator_options": {"num_threads": threads},
        "model_kwargs": {"export_cache": cache_root / variant.name.replace("/", "-")},
    }


def _runtime(pipe: Any) -> dict[str, Any]:
    report = getattr(pipe.model, "report", None)
    return report()["runtime"] if report else {"dtype": "float32", "engine": "eager"}


@dataclass
class ClassificationJob:
    """Text classification and embeddings: the steps of one variant, run in the process it lives in.

    The fields are plain values (a worker process is sent them and builds its own job); the steps
    keep the variant's runtime objects on the variant and return what they measured.
    """

    task: ClassVar[str] = "text-classification"
    classifier: Path
    embedder: Path | None
    sentences: list[str]
    threads: int
    batch_size: int
    latency_calls: int
    embed_sentences: int
    cache_root: Path

    def setup(self, variant: Variant) -> Update:
        return _setup(variant.backend, self.threads, [self.classifier, self.embedder])

    def prepare(self, variant: Variant) -> Update:
        """Cold start into the variant's empty export cache, then warm start from it; skipped on an AcceleronError."""
        import transformers

        from acceleron import pipeline
        from acceleron.errors import AcceleronError

        build: Callable[..., Any]
        kwargs: dict[str, Any]
        if variant.backend == STOCK:
            build, kwargs = transformers.pipeline, {"device": "cpu"}
        else:
            build, kwargs = pipeline, _acceleron_kwargs(variant, self.threads, self.cache_root)
        try:
            cold, _ = _timed(build, "text-classification", model=str(self.classifier), **kwargs)
        except AcceleronError as error:  # e.g. int8 without the backend's optional extra
            return {"results": {"skipped": str(error)}}
        warm, variant.pipe = _timed(build, "text-classification", model=str(self.classifier), **kwargs)
        if self.embedder is not None:
            variant.embed = build("feature-extraction", model=str(self.embedder), **kwargs)
        # The stock pipeline's tokenizer, loaded the same way in every variant's process: the same batches for all.
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.classifier))
        variant.inputs = _batches(tokenizer, self.sentences, self.batch_size)
        return {"timings": {"cold_start_s": cold, "warm_start_s": warm}, "results": {"runtime": _runtime(variant.pipe)}}

    def outputs(self, variant: Variant) -> Update:
        """The warm-up, and the outputs agreement and accuracy are measured on."""
        outputs = variant.pipe(self.sentences, batch_size=self.batch_size)
        results: dict[str, Any] = {"labels": [out["label"] for out in outputs]}
        if variant.embed is not None:
            results["embeddings"] = _mean_pooled(variant.embed(self.sentences[: self.embed_sentences]))
        return {"results": results}

    def time_round(self, variant: Variant) -> Update:
        """One timed round: the pipeline over every sentence, the runtime alone on the batches, single calls."""
        import torch

        count = len(self.sentences)
        pipeline_s, _ = _timed(variant.pipe, self.sentences, batch_size=self.batch_size)
        with torch.inference_mode():
            runtime_s, _ = _timed(_run_batches, variant.pipe.model, variant.inputs)
        latencies = [_timed(variant.pipe, sentence)[0] * 1000 for sentence in self.sentences[: self.latency_calls]]
        return {
            "timings": {
                "pipeline_sentences_per_s": count / pipeline_s,
                "runtime_sentences_per_s": count / runtime_s,
                "latency_ms": statistics.median(latencies),
            }
        }


def run(
    workload: Workload,
    variants: list[Variant],
    *,
    threads: int,
    batch_size: int,
    latency_calls: int,
    repeats: int,
    embed_sentences: int,
    same_process: bool = False,
) -> dict[str, Any]:
    """Measures the variants (skipped ones are removed from ``variants``) and returns the report."""
    job = ClassificationJob(
        classifier=workload.classifier,
        embedder=workload.embedder,
        sentences=workload.sentences,
        threads=threads,
        batch_size=batch_size,
        latency_calls=latency_calls,
        embed_sentences=embed_sentences,
        cache_root=Path(tempfile.mkdtemp(prefix="acceleron-bench-cache-")),
    )
    measure(job, variants, repeats=repeats, same_process=same_process)
    return _summarise(
        workload,
        variants,
        threads=threads,
        batch_size=batch_size,
        repeats=repeats,
        isolation=_isolation(same_process),
    )


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


def _isolation(same_process: bool) -> str:
    """The report's ``settings["isolation"]``: ``process`` (a process per variant) or ``none`` (``--same-process``)."""
    return "none" if same_process else "process"


def _isolation_note(settings: dict[str, Any]) -> str:
    if settings["isolation"] == "process":
        return "each variant in its own process"
    return "every variant in one process (--same-process)"


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
        f"{settings['repeats']} interleaved rounds (medians), {_isolation_note(settings)}; "
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


# ------------------------------------------------------------------------------------------ generation

#: One prompt per row of the larger batch; the first is the chat check.
GENERATION_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "Give me three tips for learning a new language.",
    "What is the difference between a virus and a bacterium?",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "How do I reverse a list in Python?",
    "Suggest a name for a friendly robot and say why you chose it.",
)
CHAT_CHECK_PROMPT, CHAT_CHECK_ANSWER, CHAT_CHECK_NEW_TOKENS = "What is the capital of France?", "Paris", 64
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}<|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
#: The long prompt of the time-to-first-token figure: this plain text (no chat template), its token
#: ids repeated until there are ``--prefill-tokens`` of them, cut there.
PREFILL_TEXT = " ".join(GENERATION_PROMPTS)
#: Bytes read per weight, per dtype class, for the bandwidth floor (int8: Q8_0's 8.5 bits a weight,
#: int4: Q4_0's 4.5, both with their per-block scales).
FLOOR_BYTES_PER_WEIGHT = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0625, "int4": 0.5625}
#: Our dtypes are floor classes already; an anchor's dtype maps to one (anchors.ANCHOR_DTYPES).
OUR_FLOOR_CLASS = {dtype: dtype for dtype in FLOOR_BYTES_PER_WEIGHT}
ANCHOR_ENGINES = ("llama.cpp", "ort-genai", "ov-genai")


def tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A tiny random Llama with a word-level tokenizer and a chat template, saved to ``folder``."""
    import re

    import tokenizers
    import torch
    import transformers

    from acceleron.testing import WORDS

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    prompt_words = {w.lower() for p in GENERATION_PROMPTS for w in re.findall(r"\w+|[^\w\s]", p)}
    words = sorted(prompt_words | {w.lower() for w in WORDS} | {"user", "assistant", "system"})
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = tokenizers.normalizers.Lowercase()
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=256,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"],
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class _TokenClock:
    """A streamer that notes, wall and process CPU time, when ``generate()`` hands over each new token.

    ``generate()`` first hands over the prompt (not noted), then every new token; ``wall[0]`` and
    ``cpu[0]`` are taken when the clock is made, just before the call.
    """

    def __init__(self) -> None:
        self.wall: list[float] = [time.perf_counter()]
        self.cpu: list[float] = [time.process_time()]
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def end(self) -> None:
        pass


@dataclass
class _Run:
    """One greedy run, in any engine: wall and CPU time at the call and at each new token, the new ids."""

    wall: list[float]
    cpu: list[float]
    ids: Any  # a (rows, new tokens) torch tensor


def _chat_batch(tokenizer: Any, prompts: Sequence[str]) -> dict[str, Any]:
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    encoded = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _rows(batch: dict[str, Any]) -> list[list[int]]:
    """A left-padded batch's rows without their padding: the token ids every anchor is given."""
    return [
        [int(token) for token, keep in zip(ids, mask) if keep]
        for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())
    ]


def _prefill_prompt(tokenizer: Any, count: int) -> dict[str, Any]:
    """Exactly ``count`` token ids of plain text (:data:`PREFILL_TEXT` repeated; no chat template, no BOS)."""
    import torch

    ids = tokenizer(PREFILL_TEXT, add_special_tokens=False)["input_ids"]
    ids = (ids * (count // len(ids) + 1))[:count]
    tensor = torch.tensor([ids])
    return {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)}


def _hf_generate(model: Any, inputs: dict[str, Any], new_tokens: int, pad_token_id: int) -> _Run:
    """Greedy ``generate()`` of exactly ``new_tokens`` tokens, timed token by token with a streamer."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    end_ids = torch.tensor(_id_list(model.generation_config.eos_token_id), dtype=torch.long)

    class NoEndYet(LogitsProcessor):
        """Rules out the end-of-sequence tokens, as the anchors do (``min_new_tokens`` without its cost:
        transformers' processor for it rebuilds a vocabulary-wide mask every step, 0.25 ms here)."""

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores[:, end_ids] = -float("inf")
            return scores

    with torch.inference_mode():
        clock = _TokenClock()
        output = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=new_tokens,
            logits_processor=LogitsProcessorList([NoEndYet()]),
            pad_token_id=pad_token_id,
            streamer=clock,
        )
    return _Run(clock.wall, clock.cpu, output[:, inputs["input_ids"].shape[1] :])


def _figures(run: _Run, new_tokens: int, rows: int) -> dict[str, float]:
    """Time to first token, and the decode (first token excluded) per step, wall and CPU, and in tokens/s."""
    if tuple(run.ids.shape) != (rows, new_tokens) or len(run.wall) != new_tokens + 1:
        raise RuntimeError(
            f"expected {rows} x {new_tokens} new tokens, got {tuple(run.ids.shape)} ({len(run.wall) - 1} timed)"
        )
    first = {
        "first_token_ms": (run.wall[1] - run.wall[0]) * 1000,
        "first_token_cpu_ms": (run.cpu[1] - run.cpu[0]) * 1000,
    }
    steps = new_tokens - 1
    if not steps:
        return first
    decode_wall = run.wall[-1] - run.wall[1]
    return {
        **first,
        "decode_ms_per_step": decode_wall * 1000 / steps,
        "decode_cpu_ms_per_step": (run.cpu[-1] - run.cpu[1]) * 1000 / steps,
        "decode_tokens_per_s": rows * steps / decode_wall,
    }


def _chat_answer(pipe: Any) -> str:
    """The pipeline's greedy answer to the chat check (chat-message input, stops at the end of the turn)."""
    out = pipe([{"role": "user", "content": CHAT_CHECK_PROMPT}], max_new_tokens=CHAT_CHECK_NEW_TOKENS, do_sample=False)
    generated = out[0]["generated_text"]
    if isinstance(generated, list):  # the conversation, with the answer as the last message
        return str(generated[-1]["content"])
    return str(generated)


def _agreement(ids: Any, reference: Any) -> tuple[float, int]:
    """Mean share of tokens before the first difference from the reference, and identical rows."""
    same = (ids == reference).long()
    prefix = same.cumprod(dim=1).sum(dim=1)
    return float(prefix.float().mean() / ids.shape[1]), int((prefix == ids.shape[1]).sum())


def _default_backend(task: str, folder: Path) -> str | None:
    from acceleron.selection import resolve_backend

    try:
        return resolve_backend(None, task, str(folder)).name
    except Exception:  # no backend serves the task yet
        return None


def _skipped(error: BaseException) -> Update:
    """A generation variant skipped for ``error``: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return {"results": {"skipped": f"{type(error).__name__}: {lines[0] if lines else ''}"}}


def _anchors_module() -> Any:
    """benchmarks/anchors.py (a script folder, not a package: imported from next to this file)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import anchors

    return anchors


def _end_ids(folder: Path) -> list[int]:
    """The generation config's end-of-sequence ids: what ``min_new_tokens`` rules out until the count is reached."""
    import transformers

    return _id_list(transformers.GenerationConfig.from_pretrained(str(folder)).eos_token_id)


def _id_list(end: Any) -> list[int]:
    """A generation config's ``eos_token_id`` (None, one id or several) as a list."""
    return [] if end is None else [end] if isinstance(end, int) else list(end)


def is_anchor(variant: Variant) -> bool:
    return variant.backend in ANCHOR_ENGINES


def floor_class(variant: Variant) -> str | None:
    """The dtype class whose bandwidth floor the variant is compared to (None: no floor)."""
    if is_anchor(variant):
        found = _anchors_module().ANCHOR_DTYPES.get(variant.backend, {}).get(variant.dtype)
        return str(found) if found else None
    return OUR_FLOOR_CLASS.get(variant.dtype)


def anchor_variants(engines: Sequence[str], gguf: Path | None) -> tuple[list[Variant], list[dict[str, str]]]:
    """The anchor variants of ``--anchors`` (every dtype of each engine named), and those skipped at once.

    An engine that cannot run here (its package is missing, the tiny model has no GGUF file) is
    skipped without a worker process, its reason listed like any skipped variant's.
    """
    anchors = _anchors_module()
    variants, skipped = [], []
    for engine in engines:
        reason = anchors.unavailable(engine, gguf)
        for dtype in anchors.ANCHOR_DTYPES[engine]:
            if reason is None:
                variants.append(Variant(engine, dtype))
            else:
                skipped.append({"variant": f"{engine}/{dtype}", "reason": reason})
    return variants, skipped


@dataclass
class GenerationJob:
    """Text generation: the steps of one variant, run in the process it lives in (see :class:`ClassificationJob`).

    A variant whose ``pipeline()`` (an anchor: its conversion or load) or warm-up generation raises
    is skipped; the reference never is.
    """

    task: ClassVar[str] = "text-generation"
    folder: Path
    threads: int
    new_tokens: int
    sizes: list[int]
    cache_root: Path
    prefill_tokens: int = 128
    #: Anchors: where their converted models are cached, and the GGUF file llama.cpp starts from.
    anchor_cache: Path | None = None
    gguf: Path | None = None

    def setup(self, variant: Variant) -> Update:
        if is_anchor(variant):
            import torch
            import transformers  # noqa: F401  (the tokenizer, and the tensors agreement is measured on)

            torch.set_num_threads(self.threads)
            _anchors_module().setup(variant.backend)
            return {}
        return _setup(variant.backend, self.threads, [self.folder])

    def prepare(self, variant: Variant) -> Update:
        import torch
        import transformers

        from acceleron import pipeline

        # The stock pipeline's tokenizer, loaded the same way in every variant's process: the same prompts for all.
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder))
        tokenizer.padding_side = "left"
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        prompts = {size: _chat_batch(tokenizer, GENERATION_PROMPTS[:size]) for size in self.sizes}
        prefill = _prefill_prompt(tokenizer, self.prefill_tokens)
        timings: dict[str, float] = {}
        try:
            if variant.backend == STOCK:
                load_s, variant.pipe = _timed(
                    transformers.pipeline, "text-generation", model=str(self.folder), device="cpu", dtype=torch.float32
                )
                runtime = _runtime(variant.pipe)
            elif is_anchor(variant):
                anchors = _anchors_module()
                every_row = {token for batch in (*prompts.values(), prefill) for row in _rows(batch) for token in row}
                free_id = next(i for i in range(len(tokenizer)) if i not in every_row)
                load_s, variant.pipe = _timed(
                    anchors.Anchor,
                    variant.backend,
                    variant.dtype,
                    folder=self.folder,
                    gguf=self.gguf,
                    threads=self.threads,
                    cache=self.anchor_cache or anchors.default_cache(),
                    batch_sizes=self.sizes,
                    pad_token_id=free_id,
                    end_ids=_end_ids(self.folder),
                )
                load_s -= variant.pipe.convert_s
                timings["convert_s"] = variant.pipe.convert_s
                runtime = variant.pipe.runtime()
            else:
                load_s, variant.pipe = _timed(
                    pipeline,
                    "text-generation",
                    str(self.folder),
                    **_acceleron_kwargs(variant, self.threads, self.cache_root),
                )
                runtime = _runtime(variant.pipe)
        except Exception as error:  # a backend without text-generation (yet), a missing extra or anchor package
            if variant.backend == STOCK:
                raise
            return _skipped(error)
        variant.inputs = (prompts, prefill, pad_token_id, tokenizer)
        return {"timings": {"cold_start_s": load_s, **timings}, "results": {"runtime": runtime}}

    def _generate(self, variant: Variant, inputs: dict[str, Any], new_tokens: int, stop: int | None = None) -> _Run:
        """Greedy generation of ``new_tokens`` tokens (``stop``: an anchor stops at that token, batch 1)."""
        import torch

        _, _, pad_token_id, _ = variant.inputs
        if not is_anchor(variant):
            return _hf_generate(variant.pipe.model, inputs, new_tokens, pad_token_id)
        generated = variant.pipe.generate(_rows(inputs), new_tokens, stop)
        return _Run(generated.wall, generated.cpu, torch.tensor(generated.ids))

    def _chat_answer(self, variant: Variant) -> str:
        if not is_anchor(variant):
            return _chat_answer(variant.pipe)
        _, _, _, tokenizer = variant.inputs
        check = _chat_batch(tokenizer, [CHAT_CHECK_PROMPT])
        run = self._generate(variant, check, CHAT_CHECK_NEW_TOKENS, stop=tokenizer.eos_token_id)
        return str(tokenizer.decode(run.ids[0], skip_special_tokens=True))

    def outputs(self, variant: Variant) -> Update:
        """The warm-up: the tokens agreement is measured on, and the chat answer."""
        prompts, prefill, _, _ = variant.inputs
        try:
            results: dict[str, Any] = {}
            for size in self.sizes:
                run = self._generate(variant, prompts[size], self.new_tokens)
                _figures(run, self.new_tokens, size)  # the count of new tokens is checked
                results[f"ids_b{size}"] = run.ids
            _figures(self._generate(variant, prefill, 1), 1, 1)
            results["chat_answer"] = self._chat_answer(variant)
        except Exception as error:  # a backend whose generation fails is reported, not fatal
            if variant.backend == STOCK:
                raise
            return _skipped(error)
        return {"results": results}

    def time_round(self, variant: Variant) -> Update:
        prompts, prefill, _, _ = variant.inputs
        timings = {}
        for size in self.sizes:
            figures = _figures(self._generate(variant, prompts[size], self.new_tokens), self.new_tokens, size)
            timings.update({f"{name}_b{size}": value for name, value in figures.items()})
        first = _figures(self._generate(variant, prefill, 1), 1, 1)
        timings[f"first_token_ms_p{self.prefill_tokens}"] = first["first_token_ms"]
        timings[f"first_token_cpu_ms_p{self.prefill_tokens}"] = first["first_token_cpu_ms"]
        return {"timings": timings}


# ------------------------------------------------------------------------------ bandwidth and its floor


def measure_bandwidth(threads: int, megabytes: int, repeats: int = 5) -> dict[str, Any]:
    """DRAM bandwidth with ``threads`` threads, measured with numpy (its loops release the GIL).

    Read: a ``megabytes`` float32 array (filled first, so its pages exist) is reduced, split in
    ``threads`` equal parts reduced at once by as many Python threads, with two kernels: a sum
    (``numpy.add.reduce``) and a maximum (``numpy.maximum.reduce``, SIMD in numpy, so the memory
    rather than the adds sets its pace); read bandwidth = the array's bytes / the time of the faster.
    Copy: half the array is copied into another array the same way (``numpy.copyto``); copy
    bandwidth = bytes read + bytes written / the time. Each is the best of ``repeats`` runs (the
    floor is what the memory can do). The floor uses the read bandwidth: decoding reads the weights.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    count = megabytes * (1 << 20) // 4
    data = np.ones(count, dtype=np.float32)
    source = data[: count // 2]
    target = np.empty_like(source)
    target.fill(0.0)
    parts = np.array_split(data, threads)
    copies = list(zip(np.array_split(target, threads), np.array_split(source, threads)))

    def best(work: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return min(times)

    with ThreadPoolExecutor(threads) as pool:
        sum_s = best(lambda: list(pool.map(np.add.reduce, parts)))
        max_s = best(lambda: list(pool.map(np.maximum.reduce, parts)))
        copy_s = best(lambda: list(pool.map(lambda pair: np.copyto(*pair), copies)))
    return {
        "threads": threads,
        "read_gb_s": data.nbytes / min(sum_s, max_s) / 1e9,
        "sum_gb_s": data.nbytes / sum_s / 1e9,
        "max_gb_s": data.nbytes / max_s / 1e9,
        "copy_gb_s": 2 * source.nbytes / copy_s / 1e9,
        "array_mb": megabytes,
        "method": f"numpy in {threads} Python thread(s): {megabytes} MiB float32 array read by a sum and by a max "
        f"(the faster counts), half of it copied (read + write counted); best of {repeats}",
    }


def model_weights(folder: Path) -> dict[str, Any]:
    """The parameters a decode step reads: every tensor of the checkpoint once (a tied LM head is the embedding).

    Counted from the safetensors headers, without loading the weights. The embedding lookup reads
    one row, but a tied LM head reads the whole matrix: it is counted once, as the LM head.
    """
    import struct

    config = json.loads((folder / "config.json").read_text())
    shapes: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        shapes.update({name: entry["shape"] for name, entry in header.items() if name != "__metadata__"})
    tied = bool(config.get("tie_word_embeddings"))
    if tied:
        shapes.pop("lm_head.weight", None)
    count = sum(_product(shape) for shape in shapes.values())
    return {"parameters": count, "tied_embedding": tied}


def _product(shape: Sequence[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def bandwidth_floor(parameters: int, bandwidth: dict[str, Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Per dtype class: weight bytes read per decode step / read bandwidth (KV cache and activations left out)."""
    rows = []
    for dtype, per_weight in FLOOR_BYTES_PER_WEIGHT.items():
        step_bytes = parameters * per_weight
        ms = step_bytes / (bandwidth["read_gb_s"] * 1e9) * 1000
        rows.append(
            {
                "variant": f"floor/{dtype}",
                "dtype": dtype,
                "bytes_per_weight": per_weight,
                "bytes_per_step": step_bytes,
                "ms_per_step": ms,
                **{f"tokens_per_s_b{size}": size * 1000 / ms for size in sizes},
            }
        )
    return rows


# ----------------------------------------------------------------------------------------- the report


def run_generation(
    folder: Path,
    variants: list[Variant],
    *,
    threads: int,
    new_tokens: int,
    batch: int,
    repeats: int,
    model_name: str = "SmolLM2-135M-Instruct",
    same_process: bool = False,
    prefill_tokens: int = 128,
    cache_root: Path | None = None,
    anchor_cache: Path | None = None,
    gguf: Path | None = None,
    bandwidth: dict[str, Any] | None = None,
    skipped_before: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """Measures the variants at one thread count (skipped ones are removed and listed) and returns the report."""
    sizes = sorted({1, batch})
    job = GenerationJob(
        folder=folder,
        threads=threads,
        new_tokens=new_tokens,
        sizes=sizes,
        cache_root=cache_root or Path(tempfile.mkdtemp(prefix="acceleron-bench-gen-cache-")),
        prefill_tokens=prefill_tokens,
        anchor_cache=anchor_cache,
        gguf=gguf,
    )
    everyone = list(variants)
    measure(job, variants, repeats=repeats, same_process=same_process)
    skipped = [
        {"variant": variant.name, "reason": variant.results["skipped"]}
        for variant in everyone
        if "skipped" in variant.results
    ] + list(skipped_before)
    settings = {
        "threads": threads,
        "new_tokens": new_tokens,
        "batch_sizes": sizes,
        "prefill_tokens": prefill_tokens,
        "repeats": repeats,
        "isolation": _isolation(same_process),
    }
    report = _summarise_generation(folder, variants, skipped, sizes=sizes, model_name=model_name, settings=settings)
    if bandwidth is not None:
        weights = model_weights(folder)
        report["bandwidth"] = bandwidth
        report["weights"] = weights
        report["floor"] = bandwidth_floor(weights["parameters"], bandwidth, sizes)
        floors = {row["dtype"]: row["ms_per_step"] for row in report["floor"]}
        for row, variant in zip(report["results"], variants):
            floor = floors.get(floor_class(variant) or "")
            if floor is not None:
                row["floor_ms_per_step"] = floor
                row["x_over_floor_b1"] = row["decode_ms_per_step_b1"]["median"] / floor
    return report


def _summarise_generation(
    folder: Path,
    variants: list[Variant],
    skipped: list[dict[str, str]],
    *,
    sizes: list[int],
    model_name: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    reference = variants[0]
    rows = []
    for variant in variants:
        stats = {metric: _stats(values) for metric, values in variant.timings.items()}
        answer = variant.results["chat_answer"]
        row: dict[str, Any] = {
            "variant": variant.name,
            "backend": variant.backend,
            "dtype": variant.dtype,
            "kind": "stock" if variant.backend == STOCK else "anchor" if is_anchor(variant) else "ours",
            "floor_class": floor_class(variant),
            "runtime": variant.results["runtime"],
            **stats,
            "chat_answer": answer,
            "names_paris": CHAT_CHECK_ANSWER in answer,
        }
        for size in sizes:
            rate = f"decode_tokens_per_s_b{size}"
            row[f"decode_speedup_vs_stock_b{size}"] = stats[rate]["median"] / statistics.median(reference.timings[rate])
            agreement, identical = _agreement(variant.results[f"ids_b{size}"], reference.results[f"ids_b{size}"])
            row[f"token_agreement_b{size}"] = agreement
            row[f"identical_sequences_b{size}"] = identical
        rows.append(row)
    return {
        "workload": "text-generation",
        "settings": {
            **settings,
            "model": str(folder),
            "model_name": model_name,
            "prompts": list(GENERATION_PROMPTS[: max(sizes)]),
            "prefill_prompt": f"{settings.get('prefill_tokens', 128)} token ids of plain text (no chat template, "
            f"no BOS): {PREFILL_TEXT[:60]!r}... repeated, cut at the count",
            "default_backend": _default_backend("text-generation", folder),
        },
        "machine": _machine(),
        "versions": _versions(),
        "results": rows,
        "skipped": skipped,
    }


def _machine() -> dict[str, Any]:
    """The platform, the CPU model name (from /proc/cpuinfo where there is one) and the CPU count."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {"platform": platform.platform(), "processor": model, "cpus": os.cpu_count()}


def _cell(row: dict[str, Any], metric: str, scale: str = "{:.1f}") -> str:
    return scale.format(row[metric]["median"]) if metric in row else "-"


def format_generation_markdown(report: dict[str, Any]) -> str:
    """One markdown table: stock eager float32 first, then ours, then anchors, then the bandwidth floor."""
    settings = report["settings"]
    sizes = settings["batch_sizes"]
    big = max(sizes)
    prefill = settings["prefill_tokens"]
    threads = settings["threads"]
    lines = [f"### {settings['model_name']}, {threads} thread{'s' if threads > 1 else ''}", ""]
    header = ["variant", "dtype", "b1 ms/tok wall", "b1 ms/tok CPU"]
    if big > 1:
        header += [f"b{big} ms/step wall", f"b{big} ms/step CPU", f"b{big} tok/s"]
    header += [f"TTFT-{prefill} ms", "x eager f32 (b1)", "x floor (b1)", "agree b1" + (f" / b{big}" if big > 1 else "")]
    header += ["Paris", "load s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = {"stock": 0, "ours": 1, "anchor": 2}
    for row in sorted(report["results"], key=lambda r: order[r["kind"]]):
        dtype = row["dtype"] if row["floor_class"] in (row["dtype"], None) else f"{row['dtype']} ({row['floor_class']})"
        cells = [row["variant"], dtype, _cell(row, "decode_ms_per_step_b1"), _cell(row, "decode_cpu_ms_per_step_b1")]
        if big > 1:
            cells += [
                _cell(row, f"decode_ms_per_step_b{big}"),
                _cell(row, f"decode_cpu_ms_per_step_b{big}"),
                _cell(row, f"decode_tokens_per_s_b{big}"),
            ]
        agree = f"{row['token_agreement_b1']:.0%}"
        if big > 1:
            agree += f" / {row[f'token_agreement_b{big}']:.0%}"
        load = f"{row['cold_start_s']['median']:.1f}"
        if "convert_s" in row:
            load += f" (+{row['convert_s']['median']:.0f} convert)"
        cells += [
            _cell(row, f"first_token_ms_p{prefill}"),
            f"{row['decode_speedup_vs_stock_b1']:.2f}x",
            f"{row['x_over_floor_b1']:.1f}x" if "x_over_floor_b1" in row else "-",
            agree,
            "yes" if row["names_paris"] else "NO",
            load,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    stock_ms = next(row for row in report["results"] if row["kind"] == "stock")["decode_ms_per_step_b1"]["median"]
    for floor in report.get("floor", []):
        cells = [f"floor/{floor['dtype']}", f"{floor['dtype']} ({floor['bytes_per_weight']:g} B/weight)"]
        cells += [f"{floor['ms_per_step']:.1f}", "-"]
        if big > 1:
            cells += [f"{floor['ms_per_step']:.1f}", "-", f"{floor[f'tokens_per_s_b{big}']:.0f}"]
        cells += ["-", f"{stock_ms / floor['ms_per_step']:.2f}x", "1.0x", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for entry in report["skipped"]:
        lines.append(f"- skipped {entry['variant']}: {entry['reason'][:200]}")
    for row in report["results"]:
        answer = " ".join(row["chat_answer"].split())
        lines.append(f"- chat answer of {row['variant']}: {answer[:100]!r}")
    notes = [
        f"greedy, {settings['new_tokens']} new tokens forced per row, chat prompts (batch {big}: "
        f"{big} different prompts, left-padded; anchors get the same ids unpadded); "
        f"{settings['repeats']} interleaved rounds (medians), {_isolation_note(settings)}",
        "ms/tok, ms/step: decode only (first token excluded), per step of the batch; wall = time.perf_counter, "
        "CPU = time.process_time of the variant's process (all its threads)",
        f"TTFT-{prefill}: time to first token of one {prefill}-token plain-text prompt (no chat template), batch 1",
        "x eager f32 = stock transformers decode ms/tok at b1 / this row's; x floor = this row's / its dtype's floor; "
        "agree = greedy tokens equal to stock transformers' up to the first difference",
    ]
    if "bandwidth" in report:
        bandwidth, weights = report["bandwidth"], report["weights"]
        notes.append(
            f"floor = {weights['parameters'] / 1e6:.1f}M weights (tied embedding counted once) x bytes/weight / "
            f"read bandwidth {bandwidth['read_gb_s']:.1f} GB/s (copy {bandwidth['copy_gb_s']:.1f} GB/s; "
            f"{bandwidth['method']})"
        )
    notes.append(f"default backend: {settings['default_backend']}; machine: {report['machine']['processor']}")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


def write_generation_chart(reports: Sequence[dict[str, Any]], path: Path) -> None:
    """Decode ms per token at batch 1, per variant, one bar per thread count; the floors as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for report in reports:
        names += [row["variant"] for row in report["results"] if row["variant"] not in names]
    width = 0.8 / len(reports)
    figure, axis = plt.subplots(figsize=(max(7.0, 0.9 * len(names)), 5.0))
    for index, report in enumerate(reports):
        values = {row["variant"]: row["decode_ms_per_step_b1"]["median"] for row in report["results"]}
        positions = [i + (index - (len(reports) - 1) / 2) * width for i, name in enumerate(names) if name in values]
        heights = [values[name] for name in names if name in values]
        threads = report["settings"]["threads"]
        bars = axis.bar(positions, heights, width, label=f"{threads} thread{'s' if threads > 1 else ''}")
        for bar, height in zip(bars, heights):
            axis.annotate(
                f"{height:.0f}", (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom", fontsize=6
            )
        for floor in report.get("floor", []):
            axis.axhline(floor["ms_per_step"], color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=0.7)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel("decode ms per token, batch 1 (dashed: bandwidth floors)")
    settings = reports[0]["settings"]
    axis.set_title(f"text-generation, {settings['model_name']}, greedy, {settings['new_tokens']} new tokens")
    axis.legend(loc="upper right", fontsize=8)
    plt.setp(axis.get_xticklabels(), rotation=30, ha="right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------ where variants run, and the timing loop

Job = ClassificationJob | GenerationJob
#: The jobs a worker process can be sent, by class name.
JOBS: dict[str, type[Job]] = {job.__name__: job for job in (ClassificationJob, GenerationJob)}


class WorkerError(RuntimeError):
    """A variant's worker process failed a step or died; the message names the variant."""


class _InProcess:
    """``--same-process``: the variant's steps run in this process, next to every other variant's runtime."""

    def __init__(self, job: Job, variant: Variant) -> None:
        self.job, self.variant, self.step = job, variant, ""

    def send(self, step: str) -> None:
        self.step = step

    def receive(self) -> Update:
        update: Update = getattr(self.job, self.step)(self.variant)
        return update

    def close(self) -> None:
        self.variant.pipe = self.variant.embed = self.variant.inputs = None


class _WorkerProcess:
    """The process a variant lives in for the whole run: ``bench.py --worker`` (see :func:`serve_worker`).

    It is sent the job and the variant, then one step name at a time, pickled over its stdin; it
    answers each step on its stdout. Its stderr is this process's.
    """

    def __init__(self, job: Job, variant: Variant) -> None:
        self.variant, self.step = variant, "start"
        script = str(Path(__file__).resolve())
        self.process = subprocess.Popen(
            [sys.executable, script, WORKER_FLAG], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._write((type(job).__name__, dataclasses.asdict(job), variant.backend, variant.dtype, sys.path))

    def send(self, step: str) -> None:
        self.step = step
        self._write(step)

    def receive(self) -> Update:
        assert self.process.stdout is not None
        try:
            status, payload = pickle.load(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as error:
            raise self._died() from error
        if status == "error":
            raise WorkerError(f"{self.variant.name}: {self.step} failed in its worker process:\n{payload}")
        update: Update = payload
        return update

    def close(self) -> None:
        """Ends the worker: the end of its input stops it; one still busy after 10 s is terminated."""
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _write(self, message: object) -> None:
        assert self.process.stdin is not None
        try:
            pickle.dump(message, self.process.stdin)
            self.process.stdin.flush()
        except OSError as error:  # BrokenPipeError: it is gone
            raise self._died() from error

    def _died(self) -> WorkerError:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            how = "it closed its output but still runs"
        else:
            how = f"exit code {code}"
            if code < 0:
                with contextlib.suppress(ValueError):
                    how = f"killed by {signal.Signals(-code).name}"
        return WorkerError(
            f"the worker process of {self.variant.name} died during {self.step} ({how}); its output is above"
        )


_Runner = _InProcess | _WorkerProcess


def measure(job: Job, variants: list[Variant], *, repeats: int, same_process: bool = False) -> None:
    """Runs the benchmark's steps on every variant; the skipped ones are removed from ``variants``.

    Each variant lives in its own worker process (``same_process``: all in this one). The workers
    start together (imports, nothing timed), then each variant is prepared and warmed up in turn,
    then timed in ``repeats`` interleaved rounds: only one variant is busy at any moment. The
    workers are shut down at the end, also when a step fails.
    """
    with contextlib.ExitStack() as stack:
        runners: dict[str, _Runner] = {}
        for variant in variants:
            runner = _InProcess(job, variant) if same_process else _WorkerProcess(job, variant)
            stack.callback(runner.close)
            runners[variant.name] = runner
            runner.send("setup")
        for variant in variants:
            variant.apply(runners[variant.name].receive())

        for variant in variants:
            print(f"preparing {variant.name} for {job.task} ...", file=sys.stderr, flush=True)
            _step(runners[variant.name], variant, "prepare")
        variants[:] = [variant for variant in variants if "skipped" not in variant.results]
        for variant in variants:  # the warm-up, and the outputs agreement is measured on
            _step(runners[variant.name], variant, "outputs")
        variants[:] = [variant for variant in variants if "skipped" not in variant.results]

        for repeat in range(repeats):
            print(f"{job.task} timing, round {repeat + 1} of {repeats} ...", file=sys.stderr, flush=True)
            for variant in variants:
                _step(runners[variant.name], variant, "time_round")


def _step(runner: _Runner, variant: Variant, step: str) -> None:
    runner.send(step)
    variant.apply(runner.receive())
    if "skipped" in variant.results:
        print(f"skipping {variant.name}: {variant.results['skipped']}", file=sys.stderr, flush=True)
        runner.close()


def serve_worker() -> int:
    """A variant's worker process (``bench.py --worker``): runs the steps it is sent until its input ends."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what a library prints must not land in the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then shuts the workers down
    commands = sys.stdin.buffer
    job_name, fields, backend, dtype, parent_path = pickle.load(commands)
    sys.path += [entry for entry in parent_path if entry not in sys.path]  # import what the parent can import
    job, variant = JOBS[job_name](**fields), Variant(backend, dtype)
    while True:
        try:
            step = pickle.load(commands)
        except EOFError:  # the parent closed our input: the run is over
            return 0
        try:
            reply = pickle.dumps(("ok", getattr(job, step)(variant)))
        except Exception:
            reply = pickle.dumps(("error", traceback.format_exc()))
        try:
            replies.write(reply)
            replies.flush()
        except BrokenPipeError:  # the parent is gone (killed, or it gave up on this step)
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ACCELERON_PROGRESS", "0")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", help="comma-separated backends (default: torch and every installed one)")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--embed-sentences", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for JSON and PNG")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and synthetic sentences")
    parser.add_argument(
        "--workload",
        choices=("all", "classification", "generation", "asr"),
        default="all",
        help="classification (and embeddings) on the sentiment model, text generation on SmolLM2, both (all), "
        "or speech recognition on Whisper tiny.en against CTranslate2 (asr: benchmarks/asr.py, not part of all)",
    )
    parser.add_argument("--new-tokens", type=int, default=64, help="generation: new tokens per run (forced)")
    parser.add_argument(
        "--generation-batch",
        type=int,
        default=len(GENERATION_PROMPTS),
        help="generation: the larger batch (different prompts); batch 1 is always measured",
    )
    parser.add_argument(
        "--threads-list",
        help="generation: comma-separated thread counts, one table each (default: --threads)",
    )
    parser.add_argument(
        "--prefill-tokens", type=int, default=128, help="generation: the long prompt of the TTFT figure, in tokens"
    )
    parser.add_argument(
        "--anchors",
        default="",
        help="generation: comma-separated anchor engines measured in the same rounds "
        f"({', '.join(ANCHOR_ENGINES)}, or all; see benchmarks/anchors.py); default none",
    )
    parser.add_argument("--anchor-cache", type=Path, help="generation: where anchors' converted models are cached")
    parser.add_argument(
        "--dtypes",
        help=f"generation: comma-separated dtypes of our backends (default: {','.join(GENERATION_DTYPES)})",
    )
    parser.add_argument(
        "--export-cache",
        type=Path,
        help="generation: our backends' export cache (default: a new empty folder, so load s is a cold start)",
    )
    parser.add_argument(
        "--bandwidth-mb",
        type=int,
        help="generation: the array the memory bandwidth is measured on, MiB (default 1024; --tiny: 32)",
    )
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="load every variant in this one process (default: each variant in a worker process of its own)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    counts = (args.sentences, args.batch_size, args.repeats, args.threads, args.latency_calls, args.generation_batch)
    if min(counts) < 1:
        parser.error("counts must be positive")
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (decode throughput excludes the first token)")
    if args.generation_batch > len(GENERATION_PROMPTS):
        parser.error(f"--generation-batch is at most {len(GENERATION_PROMPTS)} (one prompt per row)")
    try:
        args.threads_list = [int(n) for n in args.threads_list.split(",")] if args.threads_list else [args.threads]
    except ValueError:
        parser.error("--threads-list takes comma-separated integers")
    if min(args.threads_list) < 1 or args.prefill_tokens < 1:
        parser.error("thread counts and --prefill-tokens must be positive")
    anchors = [name for name in args.anchors.split(",") if name]
    args.anchors = list(ANCHOR_ENGINES) if anchors == ["all"] else anchors
    unknown = sorted(set(args.anchors) - set(ANCHOR_ENGINES))
    if unknown:
        parser.error(f"unknown anchors {unknown}; known: {', '.join(ANCHOR_ENGINES)}, all")
    if args.bandwidth_mb is None:
        args.bandwidth_mb = 32 if args.tiny else 1024

    backends = args.backends.split(",") if args.backends else None
    args.out.mkdir(parents=True, exist_ok=True)
    if args.workload == "asr":
        return _asr_main(args, backends)
    if args.workload in ("all", "classification"):
        _classification_main(args, backends)
    if args.workload in ("all", "generation"):
        _generation_main(args, backends)
    return 0


def _asr_main(args: argparse.Namespace, backends: list[str] | None) -> int:
    """The speech workload: benchmarks/asr.py with this run's backends, threads, repeats and output folder."""
    sys.path.insert(0, str(Path(__file__).parent))
    import asr

    variants = backends or ["torch", *(name for name in _installed_backends() if name != "torch")]
    for name in list(variants):  # float32 next to each accelerated backend's default dtype
        if ":" not in name and name != "torch" and f"{name}:float32" not in variants:
            variants.append(f"{name}:float32")
    argv = ["--backends", ",".join(variants), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    return int(asr.main([*argv, "--out", str(args.out / "asr.json")]))


def _installed_backends() -> list[str]:
    from acceleron import list_backends

    return [status.name for status in list_backends() if status.status == "ok" and status.auto_select]


def _generation_main(args: argparse.Namespace, backends: list[str] | None) -> None:
    """The generation workload at every thread count of ``--threads-list``: one set of workers, one table each."""
    gguf = None
    if args.tiny:
        folder = tiny_causal_lm(Path(tempfile.mkdtemp(prefix="acceleron-bench-tiny-lm-")))
    else:
        from acceleron.testing import assets

        folder = assets.smollm2_path()
        if "llama.cpp" in args.anchors:
            gguf = assets.smollm2_gguf()
    # Exports are shared by the thread counts: only the first count's load is a cold start.
    cache_root = args.export_cache or Path(tempfile.mkdtemp(prefix="acceleron-bench-gen-cache-"))
    dtypes = args.dtypes.split(",") if args.dtypes else GENERATION_DTYPES
    reports = []
    for threads in args.threads_list:
        print(f"measuring memory bandwidth with {threads} thread(s) ...", file=sys.stderr, flush=True)
        bandwidth = measure_bandwidth(threads, args.bandwidth_mb)
        anchors, skipped = anchor_variants(args.anchors, gguf)
        variants = variants_for(backends, dtypes) + anchors
        reports.append(
            run_generation(
                folder,
                variants,
                threads=threads,
                new_tokens=args.new_tokens,
                batch=args.generation_batch,
                repeats=args.repeats,
                model_name="tiny random Llama" if args.tiny else "SmolLM2-135M-Instruct",
                same_process=args.same_process,
                prefill_tokens=args.prefill_tokens,
                cache_root=cache_root,
                anchor_cache=args.anchor_cache,
                gguf=gguf,
                bandwidth=bandwidth,
                skipped_before=skipped,
            )
        )
        _write_generation(args, reports)  # after each thread count: a long run leaves what it measured so far
    print(format_generation_markdown_all(reports))
    print(f"\nwrote {args.out / 'generation.json'}, {args.out / 'generation.md'} and {args.out / 'generation.png'}")


def format_generation_markdown_all(reports: Sequence[dict[str, Any]]) -> str:
    return "\n\n".join(format_generation_markdown(run) for run in reports)


def _write_generation(args: argparse.Namespace, reports: list[dict[str, Any]]) -> None:
    report = {
        "workload": "text-generation",
        "threads_list": args.threads_list,
        "anchors": args.anchors,
        "command": "bench.py " + " ".join(args.argv),
        "runs": reports,
    }
    (args.out / "generation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "generation.md").write_text(format_generation_markdown_all(reports) + "\n")
    write_generation_chart(reports, args.out / "generation.png")


def _classification_main(args: argparse.Namespace, backends: list[str] | None) -> None:
    if args.tiny:
        workload = tiny_workload(args.sentences, Path(tempfile.mkdtemp(prefix="acceleron-bench-tiny-")))
    else:
        workload = real_workload(args.sentences)
    variants = variants_for(backends)
    report = run(
        workload,
        variants,
        threads=args.threads,
        batch_size=args.batch_size,
        latency_calls=min(args.latency_calls, len(workload.sentences)),
        repeats=args.repeats,
        embed_sentences=min(args.embed_sentences, len(workload.sentences)),
        same_process=args.same_process,
    )
    (args.out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_chart(report, args.out / "bench.png")
    print(format_table(report))
    print(f"\nwrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")


if __name__ == "__main__":
    sys.exit(serve_worker() if sys.argv[1:] == [WORKER_FLAG] else main())
