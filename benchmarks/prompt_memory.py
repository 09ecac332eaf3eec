"""Peak memory of generating after a long prompt: stock transformers against an acceleron backend.

``python benchmarks/prompt_memory.py VARIANT TOKENS [--no-shrink]`` prints one JSON line: the peak
resident memory of this process (model loading included), the memory after loading, the seconds
``generate()`` took and the 4 new token ids (equal across variants). VARIANT is ``stock`` (eager
PyTorch float32) or a backend name (``ort``, ``ov``, ...). Run each variant in its own process, after
one run that fills the export cache (an export in the same process would count in the peak).
``--no-shrink`` keeps ONNX Runtime's memory arena from shrinking after large runs.
Model: SmolLM2-135M-Instruct from ``acceleron.testing.assets``; the prompt repeats one sentence.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant")
    parser.add_argument("tokens", type=int)
    parser.add_argument("--no-shrink", action="store_true")
    args = parser.parse_args()

    import torch
    import transformers

    from acceleron.testing import assets

    folder = assets.smollm2_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * (args.tokens // 10 + 10))
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, : args.tokens]
    if args.variant == "stock":
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    else:
        from acceleron import OptimizedModel

        options = {"arena_shrinkage": False} if args.no_shrink else {}
        model = OptimizedModel.from_pretrained(folder, accelerator=args.variant, task="text-generation", **options)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4, do_sample=False
        )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "variant": args.variant + ("-no-shrink" if args.no_shrink else ""),
        "tokens": int(ids.shape[1]),
        "peak_mb": round(peak / 1024),
        "after_load_mb": round(loaded / 1024),
        "seconds": round(seconds, 1),
        "new": out[0, -4:].tolist(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
