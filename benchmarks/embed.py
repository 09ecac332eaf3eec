"""Sentence embeddings of all-MiniLM-L6-v2: acceleron's backends against sentence-transformers' ``encode()``.

For each backend: the minimum cosine to sentence-transformers over the held-out sentences, and the
throughput (sentences/s, median of ``--repeats`` timed passes after a warm-up) of ``SentenceEncoder.encode``
beside ``SentenceTransformer.encode`` in the same process, same threads, same batch size. Needs
sentence-transformers and the real-model assets (``python -m acceleron.testing.assets prepare``)::

    HF_HUB_OFFLINE=1 python benchmarks/embed.py --sentences 200 --backends torch,ort,ov,ipex
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any


def _throughput(encode: Any, sentences: list[str], repeats: int, **kwargs: Any) -> float:
    encode(sentences[:64], **kwargs)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        encode(sentences, **kwargs)
        times.append(time.perf_counter() - started)
    return len(sentences) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--backends", default="torch,ort,ov,ipex")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from acceleron import SentenceEncoder
    from acceleron.cache import ExportCache
    from acceleron.testing import assets
    from acceleron.testing.conformance import cosines

    torch.set_num_threads(args.threads)
    path = assets.minilm_path()
    sentences = [sentence for sentence, _ in assets.heldout_sentences(args.sentences)]
    reference = SentenceTransformer(str(path), device="cpu")
    expected = reference.encode(sentences, batch_size=args.batch_size)
    rows = [
        (
            "sentence-transformers",
            1.0,
            _throughput(lambda s: reference.encode(s, batch_size=args.batch_size), sentences, args.repeats),
        )
    ]
    with tempfile.TemporaryDirectory(prefix="acceleron-embed-bench-") as folder:
        cache = ExportCache(folder)
        for name in args.backends.split(","):
            try:
                encoder = SentenceEncoder(
                    path, name, dtype=args.dtype, num_threads=args.threads, export=True, export_cache=cache
                )
            except Exception as error:
                print(f"{name}: skipped: {type(error).__name__}: {error}")
                continue
            got = encoder.encode(sentences, batch_size=args.batch_size)
            speed = _throughput(encoder.encode, sentences, args.repeats, batch_size=args.batch_size)
            rows.append((f"{name}/{encoder.model.options.compute_dtype}", float(cosines(got, expected).min()), speed))
    base = rows[0][2]
    print(f"{'variant':<24} {'min cos':>10} {'1 - min':>9} {'sent/s':>9} {'x':>7}")
    for name, cosine, speed in rows:
        print(f"{name:<24} {cosine:>10.7f} {1 - cosine:>9.1e} {speed:>9.1f} {speed / base:>6.2f}x")
    print(
        f"all-MiniLM-L6-v2, {len(sentences)} held-out sentences, batch {args.batch_size}, {args.threads} threads, "
        f"median of {args.repeats} passes; x = throughput / sentence-transformers' encode() in this process"
    )


if __name__ == "__main__":
    main()
