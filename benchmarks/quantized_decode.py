"""Weight-only int8/int4 against float32 on SmolLM2-135M-Instruct: batch-1 decode speed and greedy agreement.

Each variant is ``backend:dtype`` with optional recipe overrides after a second colon, for trying
recipes without editing the plugins (each recipe gets its own export cache)::

    python benchmarks/quantized_decode.py --variants ort:float32 ort:int8 ort:int4 ov:int4 \\
        ov:int4:dq=0 ort:int4:block=64,sym=0 --threads 1 2 --rounds 3

Overrides: ``block`` (ort block size, ov group size), ``sym`` (1/0), ``all_layers`` (ov: 1 compresses
the embedding and LM head to int4 too), ``dq`` (ov ``DYNAMIC_QUANTIZATION_GROUP_SIZE``; 0 is off).

Reported per variant and thread count (medians over interleaved rounds; every variant lives in this
one process): decode ms/token (64 greedy tokens forced on the chat prompt, first token excluded),
process CPU ms/token over the same span, and against float32 PyTorch over 64 greedy tokens on the
eight chat prompts: the share of tokens before the first difference (``prefix``), rows identical
(``rows``), and the top-1 agreement with the reference's next token when fed the reference's own
tokens (``forced``); plus whether the chat answer to "What is the capital of France?" names Paris.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The bench's generation prompts, chat encoding and timed generate (this script sits next to bench.py, whose
# imports are the standard library).
from bench import GENERATION_PROMPTS as PROMPTS
from bench import _chat_batch
from bench import _hf_generate as hf_generate

NEW_TOKENS = 64


def generate(model: Any, inputs: dict[str, Any], pad: int) -> Any:
    """The new ids of a greedy run of exactly ``NEW_TOKENS`` tokens (the bench's own timed generate)."""
    return hf_generate(model, inputs, NEW_TOKENS, pad).ids


def apply_recipe(backend: str, dtype: str, overrides: dict[str, str]) -> dict[str, Any]:
    """Patch the plugin's recipe for this variant (before its export); returns extra load options."""
    options: dict[str, Any] = {}
    if backend == "ort" and dtype in ("int8", "int4"):
        from acceleron_ort import quantize

        recipe = quantize.WEIGHT_ONLY[dtype]
        if "block" in overrides:
            recipe = dataclasses.replace(recipe, block_size=int(overrides["block"]))
        if "sym" in overrides:
            recipe = dataclasses.replace(recipe, symmetric=overrides["sym"] == "1")
        quantize.WEIGHT_ONLY[dtype] = recipe
    if backend == "ov" and dtype in ("int8", "int4"):
        from acceleron_openvino import export

        settings = export.WEIGHT_COMPRESSION[dtype]
        if "block" in overrides:
            settings["group_size"] = int(overrides["block"])
        if "sym" in overrides:
            settings["mode"] = f"{dtype.upper()}_{'SYM' if overrides['sym'] == '1' else 'ASYM'}"
        if "all_layers" in overrides:
            settings["all_layers"] = overrides["all_layers"] == "1"
        if "dq" in overrides:
            options["ov_config"] = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": int(overrides["dq"])}
    return options


def load(spec: str, folder: Path, threads: int, cache_root: Path) -> Any:
    """Export (into this spec's own cache) and load one variant with the plugin's recipe as patched."""
    import copy

    from acceleron_openvino import export as ov_export
    from acceleron_ort import quantize

    from acceleron import OptimizedModel

    backend, dtype, *rest = spec.split(":")
    overrides = dict(item.split("=") for item in rest[0].split(",")) if rest else {}
    saved = copy.deepcopy(quantize.WEIGHT_ONLY), copy.deepcopy(ov_export.WEIGHT_COMPRESSION)
    try:
        options = apply_recipe(backend, dtype, overrides)
        cache = cache_root / spec.replace(":", "_").replace(",", "_").replace("=", "")
        return OptimizedModel.from_pretrained(
            folder,
            accelerator=backend,
            task="text-generation",
            dtype=dtype,
            num_threads=threads,
            export_cache=cache,
            **options,
        )
    finally:
        quantize.WEIGHT_ONLY.clear()
        quantize.WEIGHT_ONLY.update(saved[0])
        ov_export.WEIGHT_COMPRESSION.clear()
        ov_export.WEIGHT_COMPRESSION.update(saved[1])


def forced_agreement(model: Any, prompts: list[dict[str, Any]], references: list[Any]) -> float:
    """Top-1 agreement with the reference's tokens, each position fed the reference's own prefix."""
    import torch

    hits = total = 0
    for inputs, reference in zip(prompts, references):
        ids = torch.cat([inputs["input_ids"], reference], dim=1)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        start = inputs["input_ids"].shape[1] - 1
        predicted = logits[0, start : start + reference.shape[1]].argmax(-1)
        hits += int((predicted == reference[0]).sum())
        total += reference.shape[1]
    return hits / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    variants = ["ort:float32", "ort:int8", "ort:int4", "ov:float32", "ov:int8", "ov:int4"]
    parser.add_argument("--variants", nargs="+", default=variants)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="export caches (default: a temporary folder)")
    parser.add_argument("--no-agreement", action="store_true", help="timings only")
    args = parser.parse_args()

    import torch
    import transformers

    from acceleron.testing import assets

    folder = assets.smollm2_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [_chat_batch(tokenizer, [prompt]) for prompt in PROMPTS]
    cache_root = args.cache or Path(tempfile.mkdtemp(prefix="quantized-decode-"))

    references = []
    if not args.no_agreement:
        torch.set_num_threads(max(args.threads))
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        references = [generate(reference, inputs, pad) for inputs in prompts]
        del reference

    models = {}
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for spec in args.variants:
        for threads in args.threads:
            started = time.perf_counter()
            model = load(spec, folder, threads, cache_root)
            row: dict[str, Any] = {"load_s": time.perf_counter() - started, "ms": [], "cpu_ms": []}
            row["dtype"] = model.session.describe().get("dtype")
            if not args.no_agreement and threads == args.threads[0]:
                outputs = [generate(model, inputs, pad) for inputs in prompts]
                same = [(out == ref).long().cumprod(dim=1).sum().item() for out, ref in zip(outputs, references)]
                row["prefix"] = sum(same) / (len(same) * NEW_TOKENS)
                row["rows"] = sum(count == NEW_TOKENS for count in same)
                row["forced"] = forced_agreement(model, prompts, references)
                answer = tokenizer.decode(outputs[0][0], skip_special_tokens=True).split("<|im_end|>")[0]
                row["answer"] = answer.strip().splitlines()[0] if answer.strip() else ""
                row["paris"] = "Paris" in answer
            generate(model, prompts[0], pad)  # warm-up
            models[(spec, threads)] = model
            rows[(spec, threads)] = row
            print(f"loaded {spec} x{threads} in {row['load_s']:.1f}s", file=sys.stderr, flush=True)

    for index in range(args.rounds):
        for key, model in models.items():
            run = hf_generate(model, prompts[0], NEW_TOKENS, pad)  # wall[1] is the first new token
            steps = len(run.wall) - 2
            rows[key]["ms"].append((run.wall[-1] - run.wall[1]) / steps * 1000)
            rows[key]["cpu_ms"].append((run.cpu[-1] - run.cpu[1]) / steps * 1000)
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"{'variant':<28} {'thr':>3} {'ms/tok':>7} {'cpu ms':>7} {'prefix':>7} {'rows':>5} {'forced':>7}  answer")
    for (spec, threads), row in rows.items():
        agreement = (
            f"{row['prefix']:>7.1%} {row['rows']:>3}/{len(PROMPTS)} {row['forced']:>7.1%}  "
            f"[{'ok' if row['paris'] else 'NO PARIS'}] {row['answer'][:60]!r}"
            if "prefix" in row
            else ""
        )
        print(
            f"{spec + ' (' + str(row['dtype']) + ')':<28} {threads:>3} {statistics.median(row['ms']):>7.1f} "
            f"{statistics.median(row['cpu_ms']):>7.1f} {agreement}"
        )


if __name__ == "__main__":
    main()
