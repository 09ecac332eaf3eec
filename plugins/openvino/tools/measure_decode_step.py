"""Where an OpenVINO decode step's time goes: the same step with a past of fixed or growing length.

Exports SmolLM2-135M-Instruct (``benchmarks/assets.py``) with ``accelerator="ov"`` into a temporary
cache, then times the compiled IR's raw ``infer`` on one new token at batch 1:

* with a past of the same length every call (40, 64, 104 and 128 tokens), and
* with a past one token longer at each call (40 to 103), as during ``generate()``.

The difference is what OpenVINO's CPU plugin spends on each new input shape. Medians of wall-clock
times; run it on a quiet machine::

    HF_HUB_OFFLINE=1 python plugins/openvino/tools/measure_decode_step.py --threads 2 --precision bf16
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

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def export_smollm2(cache: Path) -> Path:
    """The folder holding the ov export of SmolLM2 (float32 IR, the precision is chosen at compile)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import assets

    from acceleron import pipeline

    pipe = pipeline(
        "text-generation",
        model=str(assets.smollm2_path()),
        accelerator="ov",
        dtype="float32",
        model_kwargs={"export_cache": cache},
    )
    xml = next(cache.rglob("openvino_model.xml"), None)
    if xml is None:
        raise SystemExit(f"no openvino_model.xml under {cache} after exporting ({type(pipe.model).__name__})")
    return xml


def step_inputs(past_names: list[str], heads: int, head_dim: int, past: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(past)
    feed: dict[str, np.ndarray] = {
        "input_ids": np.full((1, 1), 42, dtype=np.int64),
        "attention_mask": np.ones((1, past + 1), dtype=np.int64),
        "position_ids": np.array([[past]], dtype=np.int64),
    }
    for name in past_names:
        feed[name] = rng.standard_normal((1, heads, past, head_dim)).astype(np.float32)
    return feed


def median_ms(call: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16", help="INFERENCE_PRECISION_HINT: bf16 or f32")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import openvino

    with tempfile.TemporaryDirectory(prefix="ov-decode-step-") as tmp:
        xml = export_smollm2(Path(tmp))
        core = openvino.Core()
        model = core.read_model(xml)
        config = {
            "INFERENCE_NUM_THREADS": args.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": args.precision,
        }
        request = core.compile_model(model, "CPU", config).create_infer_request()
        past_names = [port.get_any_name() for port in model.inputs if port.get_any_name().startswith("past_")]
        shape = model.input(past_names[0]).get_partial_shape()
        heads, head_dim = shape[1].get_length(), shape[3].get_length()

        def run(feed: dict[str, np.ndarray]) -> None:
            request.infer(feed, share_inputs=True, share_outputs=True)

        print(f"SmolLM2-135M decode step, {args.precision}, {args.threads} threads, batch 1 ({args.runs} runs)")
        for past in (40, 64, 104, 128):
            feed = step_inputs(past_names, heads, head_dim, past)
            run(feed)
            print(f"  past fixed at {past:>3} tokens: {median_ms(lambda feed=feed: run(feed), args.runs):6.2f} ms")
        growing = [step_inputs(past_names, heads, head_dim, past) for past in range(40, 104)]
        feeds = iter(growing)  # each call one token longer than the last
        print(f"  past growing 40 -> 103:     {median_ms(lambda: run(next(feeds)), len(growing)):6.2f} ms")


if __name__ == "__main__":
    main()
