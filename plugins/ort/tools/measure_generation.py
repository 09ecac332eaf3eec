"""Decode speed of the ort backend on SmolLM2-135M-Instruct against eager PyTorch float32 ``generate``.

Batch 1, the chat prompt "What is the capital of France?", greedy. Each round times, for every
engine in turn, one new token (time to the first token) and 65 new tokens; decode tokens/s is
64 / (the difference). The ort engines run the exported graph step by step with its KV cache.
Ratios are per round against PyTorch, then the median. ``--cpu-time`` measures process CPU time
instead of wall clock (with ``--threads 1`` it is immune to other jobs on a shared machine)::

    HF_HUB_OFFLINE=1 python plugins/ort/tools/measure_generation.py --threads 1 --cpu-time
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

NEW_TOKENS = 64


def ort_generate(backend: Any, session: Any, config: Any, ids: torch.Tensor, mask: torch.Tensor, n: int) -> None:
    """Greedy decoding of ``n`` tokens through the backend, carrying the present key/values."""
    from acceleron import kv_cache
    from acceleron.tasks import TASKS

    task = TASKS["text-generation"]
    layout = kv_cache.CacheLayout.from_config(config)
    past = layout.empty_past(ids.shape[0])
    step = ids
    for _ in range(n):
        inputs = {
            "input_ids": step,
            "attention_mask": mask,
            "position_ids": kv_cache.position_ids_for(mask, step.shape[1]),
            **past,
        }
        outputs = backend._forward(session, inputs, task)
        past = kv_cache.to_flat(kv_cache.from_flat(outputs, layout, config), layout, ids.shape[0], torch.float32)
        step = outputs["logits"][:, -1, :].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall clock")
    parser.add_argument("--dtypes", default="float32,int8")
    parser.add_argument("--exports", type=Path, help="folder for the exports (default: a temporary one)")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root holds benchmarks/
    from benchmarks import assets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from acceleron import kv_cache
    from acceleron.plugins import get_backend
    from acceleron.tasks import TASKS

    torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    folder = assets.smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(text, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]

    def eager(n: int) -> None:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    engines: dict[str, Callable[[int], None]] = {"pytorch float32": eager}
    backend = get_backend("ort")
    task = TASKS["text-generation"]
    root = args.exports or Path(tempfile.mkdtemp(prefix="acceleron-ort-generation-"))
    for dtype in args.dtypes.split(","):
        path = root / dtype / "model.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            example = kv_cache.example_inputs(model.config)
            path = Path(backend.export(model, task, example, path.parent, {"dtype": dtype}))
            print(f"exported {dtype} in {time.perf_counter() - start:.0f} s", flush=True)
        session = backend.load(path, task, {"num_threads": args.threads})
        engines[f"ort {dtype}"] = lambda n, s=session: ort_generate(backend, s, model.config, ids, mask, n)

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for run in engines.values():
        run(2)  # warm up
    for _ in range(args.rounds):
        for name, run in engines.items():
            start = clock()
            run(1)
            first = clock()
            run(NEW_TOKENS + 1)
            end = clock()
            results[name].append((first - start, NEW_TOKENS / ((end - first) - (first - start))))
    base = results["pytorch float32"]
    print(f"threads {args.threads}, {'CPU time' if args.cpu_time else 'wall clock'}, prompt {ids.shape[1]} tokens")
    for name, rounds in results.items():
        ratios = [speed / reference[1] for (_, speed), reference in zip(rounds, base)]
        print(
            f"{name:16s} first token {statistics.median(r[0] for r in rounds) * 1000:6.0f} ms, "
            f"decode {statistics.median(r[1] for r in rounds):5.1f} tokens/s, "
            f"{statistics.median(ratios):.2f}x PyTorch (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main()
