"""Do runtimes in one process slow each other? Spinning threads on and off, measured in fresh processes.

A user may hold an acceleron ONNX Runtime pipeline and a stock PyTorch pipeline in one process. ONNX
Runtime's intra-op threads spin (busy-wait) for a while after each run before they sleep, and
PyTorch's OpenMP threads may do the same; a spinning pool takes cores the other runtime wants.

Each trial is a fresh process that measures one runtime (the "measured" one) on the sentiment
classifier, first alone, then again after a second runtime has been built and run once and left
idle in the same process. The ratio after/before, from the same process, is the figure that
matters; processes make the trials independent. Trials of all settings are interleaved.

Settings (``--settings``, comma separated; default all):

* ``torch|ort:spin-on``: stock PyTorch measured, an idle acceleron ORT pipeline beside it with
  ``session.intra_op.allow_spinning=1`` (ONNX Runtime's own default);
* ``torch|ort:spin-off``: the same with ``allow_spinning=0`` (acceleron's default);
* ``ort|torch:omp-default``: acceleron ORT measured, an idle stock PyTorch pipeline beside it;
* ``ort|torch:omp-passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep at once);
* ``ort-alone:spin-on`` and ``ort-alone:spin-off``: ORT's own throughput and single-sentence
  latency with spinning on and off;
* ``ort-decode:spin-on`` and ``ort-decode:spin-off`` (only when named): batch-1 greedy decoding of
  SmolLM2-135M-Instruct on ort, milliseconds per token.

Run: ``python benchmarks/coexist.py [--trials 3] [--sentences 256] [--threads 2] [--out coexist.json]``
(needs acceleron-ort and the real models of ``acceleron.testing.assets``). Timings are process
CPU time and wall time; nothing here is asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SETTINGS = (
    "torch|ort:spin-on",
    "torch|ort:spin-off",
    "ort|torch:omp-default",
    "ort|torch:omp-passive",
    "ort-alone:spin-on",
    "ort-alone:spin-off",
)
#: Decoding settings, on request only (``--settings ort-decode:spin-on,ort-decode:spin-off``): SmolLM2 on
#: ort, batch 1, 64 greedy tokens after a short prompt; milliseconds per token (wall and CPU).
DECODE_SETTINGS = ("ort-decode:spin-on", "ort-decode:spin-off")


def _rate(pipe: Any, sentences: list[str], rounds: int = 3) -> dict[str, float]:
    """Median sentences per second (wall) and CPU milliseconds per sentence over ``rounds`` passes."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        pipe(sentences, batch_size=32)
        walls.append(len(sentences) / (time.perf_counter() - wall))
        cpus.append(1000 * (time.process_time() - cpu) / len(sentences))
    return {"sentences_per_s": statistics.median(walls), "cpu_ms_per_sentence": statistics.median(cpus)}


def _latency_ms(pipe: Any, sentences: list[str]) -> float:
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        pipe(sentence)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def decode_trial(spinning: str, threads: int, new_tokens: int = 64) -> dict[str, Any]:
    """Batch-1 greedy decoding on ort with spinning on ("1") or off ("0"): ms per token, median of 3."""
    import torch
    import transformers

    from acceleron import OptimizedModel
    from acceleron.testing import assets

    folder = assets.smollm2_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = OptimizedModel.from_pretrained(
        folder,
        accelerator="ort",
        task="text-generation",
        num_threads=threads,
        session_options={"session.intra_op.allow_spinning": spinning},
    )
    inputs = tokenizer("The history of the city of Paris begins", return_tensors="pt")

    def once() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return 1000 * (time.perf_counter() - wall) / new_tokens, 1000 * (time.process_time() - cpu) / new_tokens

    once()  # warm-up
    walls, cpus = zip(*(once() for _ in range(3)))
    return {"ms_per_token": statistics.median(walls), "cpu_ms_per_token": statistics.median(cpus)}


def trial(setting: str, count: int, threads: int) -> dict[str, Any]:
    """One setting in this (fresh) process."""
    if setting.startswith("ort-decode:"):
        return decode_trial({"ort-decode:spin-on": "1", "ort-decode:spin-off": "0"}[setting], threads)
    import torch
    import transformers

    from acceleron import pipeline
    from acceleron.testing import assets

    torch.set_num_threads(threads)
    folder = str(assets.sentiment_model_path())
    sentences = [text for text, _ in assets.heldout_sentences(count)]
    pair, _, variant = setting.partition(":")
    spinning = {"spin-on": "1", "spin-off": "0"}.get(variant)  # else acceleron's default (off)
    session_options = {} if spinning is None else {"session.intra_op.allow_spinning": spinning}

    def ort_pipe() -> Any:
        options = {"num_threads": threads, "session_options": session_options}
        return pipeline("text-classification", folder, accelerator="ort", accelerator_options=options)

    def stock_pipe() -> Any:
        return transformers.pipeline("text-classification", model=folder, device="cpu")

    if pair == "ort-alone":
        ort = ort_pipe()
        _rate(ort, sentences, rounds=1)  # warm-up
        return {**_rate(ort, sentences), "latency_ms": _latency_ms(ort, sentences[:100])}
    measured_name, _, idle_name = pair.partition("|")
    build = {"torch": stock_pipe, "ort": ort_pipe}
    measured = build[measured_name]()
    _rate(measured, sentences, rounds=1)  # warm-up
    before = _rate(measured, sentences)
    idle = build[idle_name]()
    idle(sentences[:32], batch_size=32)  # runs once, then stays idle in this process
    after = _rate(measured, sentences)
    return {
        "before": before,
        "after": after,
        "ratio": after["sentences_per_s"] / before["sentences_per_s"],
        "cpu_ratio": after["cpu_ms_per_sentence"] / before["cpu_ms_per_sentence"],
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("coexist.json"))
    parser.add_argument("--trial", help=argparse.SUPPRESS)  # internal: run one setting in this process
    args = parser.parse_args(argv)
    if args.trial:
        print(json.dumps(trial(args.trial, args.sentences, args.threads)))
        return 0
    settings = args.settings.split(",")
    unknown = sorted(set(settings) - set(SETTINGS) - set(DECODE_SETTINGS))
    if unknown or min(args.trials, args.sentences, args.threads) < 1:
        known = ", ".join(SETTINGS + DECODE_SETTINGS)
        parser.error(f"unknown settings {unknown} (known: {known}) or a count below 1")
    results: dict[str, list[dict[str, Any]]] = {setting: [] for setting in settings}
    for number in range(args.trials):
        for setting in settings:
            print(f"trial {number + 1}/{args.trials}: {setting} ...", file=sys.stderr, flush=True)
            env = dict(os.environ)
            if setting.endswith(":omp-passive"):
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            command = [sys.executable, __file__, "--trial", setting]
            command += ["--sentences", str(args.sentences), "--threads", str(args.threads)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{setting} failed:\n{done.stderr[-3000:]}")
            results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = {"settings": vars(args) | {"out": str(args.out)}, "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'setting':<24}{'after/before':>14}{'cpu after/before':>18}{'sent/s':>9}{'latency ms':>12}")
    for setting, trials in results.items():
        if "ms_per_token" in trials[0]:
            per_token = ", ".join(f"{t['ms_per_token']:.1f}" for t in trials)
            print(f"{setting:<24}  ms per token: {per_token}")
        elif "ratio" in trials[0]:
            ratios = ", ".join(f"{t['ratio']:.2f}" for t in trials)
            cpu = ", ".join(f"{t['cpu_ratio']:.2f}" for t in trials)
            print(f"{setting:<24}{ratios:>14}{cpu:>18}")
        else:
            rates = statistics.median(t["sentences_per_s"] for t in trials)
            latency = statistics.median(t["latency_ms"] for t in trials)
            print(f"{setting:<24}{'':>14}{'':>18}{rates:>9.1f}{latency:>12.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
