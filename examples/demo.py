"""The acceleron demo: real models on every installed backend, side by side with eager PyTorch.

Run it with ``./nox -s demo`` (which installs acceleron and every plugin first) or, in an
environment that has them, ``python examples/demo.py``. It prepares the real models once
(see acceleron.testing.assets), then for each backend prints the seed examples' answers, the
MiniLM similarity check and a short speed line against eager PyTorch, and finally the greedy chat
answer of SmolLM2-135M-Instruct to "What is the capital of France?" on eager PyTorch and on every
backend that supports text-generation (exit status 1 if one of those fails or misses Paris).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from acceleron.testing import assets

SENTENCE = "This movie was absolutely wonderful!"
BATCH = ["Great film!", "Terrible movie."]
SIMILAR = ("A man is eating food.", "A man is eating a piece of bread.")
SPEED_SENTENCES = 256


def say(message: str = "") -> None:
    print(message, flush=True)


def cosine_of_mean_embeddings(features: Any) -> float:
    import torch

    vectors = [torch.tensor(item[0]).mean(dim=0) for item in features]
    a, b = (torch.nn.functional.normalize(v, dim=0) for v in vectors)
    return float(a @ b)


def throughput(pipe: Any, sentences: list[str]) -> float:
    pipe(sentences[:32], batch_size=32)  # warm-up
    started = time.perf_counter()
    pipe(sentences, batch_size=32)
    return len(sentences) / (time.perf_counter() - started)


def run_backend(name: str, sentiment: Path, minilm: Path, sentences: list[str]) -> float:
    from acceleron import pipeline

    say(f"\n== {name} ==")
    started = time.perf_counter()
    classify = pipeline("text-classification", model=str(sentiment), accelerator=name)
    say(f"  ready in {time.perf_counter() - started:.1f}s ({classify.model.report()['runtime']})")
    [answer] = classify(SENTENCE)
    say(f"  {SENTENCE!r}: {answer['label']} ({answer['score']:.3f})")
    for text, result in zip(BATCH, classify(BATCH, batch_size=32)):
        say(f"  {text!r}: {result['label']} ({result['score']:.3f})")
    embed = pipeline("feature-extraction", model=str(minilm), accelerator=name)
    similarity = cosine_of_mean_embeddings(embed(list(SIMILAR)))
    say(f"  MiniLM cosine of {SIMILAR[0]!r} / {SIMILAR[1]!r}: {similarity:.3f} (expected 0.755)")
    return throughput(classify, sentences)


def chat_answer(pipe: Any) -> str:
    """The pipeline's greedy answer (at most 64 new tokens) to the chat check, from chat-message input."""
    messages = [{"role": "user", "content": assets.SMOLLM2_CHECK_PROMPT}]
    out = pipe(messages, max_new_tokens=assets.SMOLLM2_CHECK_NEW_TOKENS, do_sample=False)
    generated = out[0]["generated_text"]
    return str(generated[-1]["content"] if isinstance(generated, list) else generated)


def generation_answers(backends: list[str]) -> bool:
    """Print SmolLM2's chat answer on eager PyTorch and each backend; True when every one names Paris."""
    import transformers

    from acceleron import get_backend, pipeline

    smollm2 = assets.smollm2_path()
    say(f"\n== text generation: SmolLM2-135M-Instruct ({smollm2}), greedy ==")
    say(f"  prompt: {assets.SMOLLM2_CHECK_PROMPT!r}")
    ok = True
    stock = transformers.pipeline("text-generation", model=str(smollm2), device="cpu")
    say(f"  {'stock transformers':<18} {chat_answer(stock)!r}")
    for name in backends:
        if "text-generation" not in get_backend(name).supported_tasks():
            say(f"  {name:<18} (text-generation not supported by this backend)")
            continue
        try:
            started = time.perf_counter()
            answer = chat_answer(pipeline("text-generation", model=str(smollm2), accelerator=name))
        except Exception as error:
            say(f"  {name:<18} FAILED: {type(error).__name__}: {error}")
            ok = False
            continue
        named = assets.SMOLLM2_CHECK_ANSWER in answer
        ok = ok and named
        mark = "" if named else "  <- does not name Paris"
        say(f"  {name:<18} {answer!r} ({time.perf_counter() - started:.1f}s, export included){mark}")
    return ok


def main() -> int:
    from acceleron import list_backends

    say("acceleron demo: preparing real models (cached after the first run)")
    minilm = assets.minilm_path()
    sentiment = assets.sentiment_model_path()
    sentences = [text for text, _ in assets.heldout_sentences(SPEED_SENTENCES)]
    say(f"  MiniLM: {minilm}\n  sentiment classifier: {sentiment}")

    statuses = list_backends()
    accelerated = [s.name for s in statuses if s.status == "ok" and s.auto_select]
    for status in statuses:
        if status.status != "ok" and status.name in {"ov", "ort", "ipex"}:
            say(f"  (skipping {status.name}: {status.status}, {status.reason})")
    if not accelerated:
        say("  no accelerated backend is installed; showing the PyTorch reference only")

    import transformers

    stock = transformers.pipeline("text-classification", model=str(sentiment), device="cpu")
    speeds = {"stock transformers": throughput(stock, sentences)}
    for name in ["torch", *accelerated]:
        speeds[name] = run_backend(name, sentiment, minilm, sentences)

    say(f"\n== speed: {SPEED_SENTENCES} held-out movie sentences, batch 32, {os.cpu_count()} cores ==")
    reference = speeds["stock transformers"]
    for name, rate in speeds.items():
        say(f"  {name:<18} {rate:8.1f} sentences/s  {rate / reference:5.2f}x stock transformers (eager PyTorch)")
    return 0 if generation_answers(["torch", *accelerated]) else 1


if __name__ == "__main__":
    sys.exit(main())
