"""The acceleron demo: real models on every installed backend, side by side with eager PyTorch.

Run it with ``./nox -s demo`` (which installs acceleron and every plugin first) or, in an
environment that has them, ``python examples/demo.py``. Models come from PyPI packages and are
prepared once (see acceleron.testing.assets). The quick results come first:

1. embeddings: all-MiniLM-L6-v2's similarity of two sentences on every backend;
2. speech: Whisper tiny.en transcribes a real recording (LibriVox) on every backend, with its word
   error rate against the known text;
3. generation: SmolLM2-135M-Instruct's greedy answer to "What is the capital of France?".

Then the sentiment classifier, which is fine-tuned from MiniLM on its first run (tens of minutes on
a 2-core machine, with progress on stderr): the seed examples' labels and a speed line against
eager PyTorch on every backend. Exit status 1 if a generation fails or misses Paris, or a
transcript is wrong on a backend where PyTorch's is right.
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


def embeddings(backends: list[str], minilm: Path) -> None:
    from acceleron import pipeline

    say(f"\n== embeddings: all-MiniLM-L6-v2 ({minilm}) ==")
    say(f"  cosine of {SIMILAR[0]!r} / {SIMILAR[1]!r} (mean-pooled; expected {assets.MINILM_CHECK_COSINE})")
    for name in backends:
        started = time.perf_counter()
        embed = pipeline("feature-extraction", model=str(minilm), accelerator=name)
        similarity = cosine_of_mean_embeddings(embed(list(SIMILAR)))
        say(f"  {name:<18} {similarity:.3f} ({time.perf_counter() - started:.1f}s, export included)")


def speech(backends: list[str]) -> bool:
    """Whisper tiny.en on one real recording, stock transformers then every backend; False if a backend errs."""
    import transformers

    from acceleron import get_backend, pipeline

    whisper = assets.whisper_path()
    name, waveform, text = next(item for item in assets.speech_recordings(include_long=False) if "librivox" in item[0])
    say(f"\n== speech: Whisper tiny.en ({whisper}), greedy ==")
    say(f"  recording: {name} ({len(waveform) / 16000:.1f} s, LibriVox), known text: {text!r}")
    settings = {"generate_kwargs": {"num_beams": 1}}
    stock = transformers.pipeline("automatic-speech-recognition", model=str(whisper), device="cpu")
    expected = stock(waveform, **settings)["text"]
    say(f"  {'stock transformers':<18} {expected!r} (WER {assets.word_error_rate(text, expected):.2f})")
    ok = True
    for backend in backends:
        if "automatic-speech-recognition" not in get_backend(backend).supported_tasks():
            say(f"  {backend:<18} (speech recognition not supported by this backend)")
            continue
        try:
            started = time.perf_counter()
            asr = pipeline("automatic-speech-recognition", model=str(whisper), accelerator=backend)
            heard = asr(waveform, **settings)["text"]
        except Exception as error:
            say(f"  {backend:<18} FAILED: {type(error).__name__}: {error}")
            ok = False
            continue
        error_rate = assets.word_error_rate(text, heard)
        ok = ok and error_rate <= assets.word_error_rate(text, expected) + 0.1
        say(f"  {backend:<18} {heard!r} (WER {error_rate:.2f}; {time.perf_counter() - started:.1f}s, export included)")
    return ok


def classifier(name: str, sentiment: Path, sentences: list[str]) -> float:
    from acceleron import pipeline

    started = time.perf_counter()
    classify = pipeline("text-classification", model=str(sentiment), accelerator=name)
    say(f"  {name}: ready in {time.perf_counter() - started:.1f}s ({classify.model.report()['runtime']})")
    [answer] = classify(SENTENCE)
    say(f"    {SENTENCE!r}: {answer['label']} ({answer['score']:.3f})")
    for text, result in zip(BATCH, classify(BATCH, batch_size=32)):
        say(f"    {text!r}: {result['label']} ({result['score']:.3f})")
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

    statuses = list_backends()
    accelerated = [s.name for s in statuses if s.status == "ok" and s.auto_select]
    for status in statuses:
        if status.status != "ok" and status.name in {"ov", "ort", "ipex"}:
            say(f"  (skipping {status.name}: {status.status}, {status.reason})")
    if not accelerated:
        say("  no accelerated backend is installed; showing the PyTorch reference only")
    backends = ["torch", *accelerated]

    say("acceleron demo: preparing real models (cached after the first run)")
    embeddings(backends, assets.minilm_path())
    heard = speech(backends)
    answered = generation_answers(backends)

    say("\n== sentiment classifier: MiniLM fine-tuned on movie-review sentences ==")
    say("  (the first run fine-tunes it: tens of minutes on 2 cores, progress on stderr; cached afterwards)")
    sentiment = assets.sentiment_model_path()
    sentences = [text for text, _ in assets.heldout_sentences(SPEED_SENTENCES)]
    import transformers

    stock = transformers.pipeline("text-classification", model=str(sentiment), device="cpu")
    speeds = {"stock transformers": throughput(stock, sentences)}
    for name in backends:
        speeds[name] = classifier(name, sentiment, sentences)
    say(f"\n== speed: {SPEED_SENTENCES} held-out movie sentences, batch 32, {os.cpu_count()} cores ==")
    reference = speeds["stock transformers"]
    for name, rate in speeds.items():
        say(f"  {name:<18} {rate:8.1f} sentences/s  {rate / reference:5.2f}x stock transformers (eager PyTorch)")
    return 0 if answered and heard else 1


if __name__ == "__main__":
    sys.exit(main())
