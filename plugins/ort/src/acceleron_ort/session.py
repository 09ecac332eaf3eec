"""One ``onnxruntime.InferenceSession`` per model: :class:`OrtSession`, and the runtime settings it opens with.

``InferenceSession.run`` is thread-safe, and :class:`OrtSession` holds nothing mutable, so one
session serves every thread of a pipeline. On CPU, torch tensors become numpy arrays and back
without copies (``Tensor.numpy()`` / ``torch.from_numpy``). On CUDA, inputs are bound where they
already live (IO binding) instead of being copied through host memory by ``run``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import torch

from acceleron.backend import Session
from acceleron.errors import AcceleronError, BackendUnavailableError, InvalidOptionError
from acceleron_ort.artifacts import KEEP_INPUT, METADATA_PREFIX

if TYPE_CHECKING:
    from acceleron.decoding import DecodeState
    from acceleron.kv_cache import CacheLayout
    from acceleron.tasks import TaskSpec
    from acceleron_ort.options import OrtOptions

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

_GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
#: The torch dtype each plain tensor input type takes (other inputs are fed as given).
_TORCH_TYPES = {
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(double)": torch.float64,
    "tensor(bool)": torch.bool,
}
_REEXPORT = (
    "The file may be corrupt or truncated, or its external data file missing: delete it and export "
    "again (export=True), or choose another .onnx file with file_name=..."
)


#: Runs fed more bytes than this hand the CPU arena's unused memory back afterwards (see OrtSession).
SHRINK_ABOVE_BYTES = 32 * 1024 * 1024
#: Config entries acceleron sets unless ``session_options`` names them. Idle intra-op threads sleep
#: instead of spinning: on a shared 2-core machine spinning cost ORT itself (128 sentences, batch 32:
#: 69 against 99 sentences/s; SmolLM2 decoding with 2 threads: 199-214 against 96-110 ms per token)
#: and, once in three trials, slowed a stock PyTorch pipeline in the same process to 0.21x
#: (benchmarks/coexist.py; figures in the ort README).
DEFAULT_CONFIG = {"session.intra_op.allow_spinning": "0"}


def session_options(options: OrtOptions) -> ort.SessionOptions:
    """``SessionOptions`` from the backend options: threads, graph optimisation, :data:`DEFAULT_CONFIG`, then the
    pass-through dict (which may override a default)."""
    settings = ort.SessionOptions()
    settings.graph_optimization_level = _GRAPH_LEVELS[options.graph_optimization]
    if options.num_threads:
        settings.intra_op_num_threads = options.num_threads
    for key, value in {**DEFAULT_CONFIG, **options.session_options}.items():
        if "." in key:  # a config entry such as "session.intra_op.allow_spinning"
            settings.add_session_config_entry(key, str(value))
            continue
        if not hasattr(settings, key) or key.startswith("_"):
            raise InvalidOptionError(
                f"session_options key {key!r} is neither an onnxruntime.SessionOptions attribute nor a "
                "config entry (keys with a dot, e.g. 'session.intra_op.allow_spinning')."
            )
        try:
            setattr(settings, key, value)
        except (TypeError, AttributeError) as error:
            raise InvalidOptionError(f"session_options[{key!r}] = {value!r} is not accepted: {error}") from error
    return settings


def execution_providers(options: OrtOptions) -> tuple[list[str], list[dict[str, Any]]]:
    """The execution providers (and their options) for ``device``, or for an explicit ``provider``."""
    extra = dict(options.provider_options)
    provider = options.provider
    kind, _, index = options.device.partition(":")
    if provider is None:
        if kind == "cpu":
            return [CPU], [extra]
        provider = CUDA  # the options allow only cpu and cuda[:N] without a provider
        extra = {"device_id": int(index or 0), **extra}
    available = ort.get_available_providers()
    if provider not in available:
        hint = " Install onnxruntime-gpu instead of onnxruntime." if provider == CUDA else ""
        raise BackendUnavailableError(
            f"onnxruntime {ort.__version__} here has no {provider} (it has: {', '.join(available)}).{hint}"
        )
    if provider == CPU:
        return [CPU], [extra]
    return [provider, CPU], [extra, {}]


class OrtSession(Session):
    """An inference session; runs the inputs its graph declares and returns every graph output by name."""

    computes_with_torch = False  # its own thread pool: generate()'s torch work stays on one thread

    def __init__(
        self, session: ort.InferenceSession, path: Path, options: OrtOptions, output_names: Sequence[str]
    ) -> None:
        inputs = session.get_inputs()
        #: A fused decoder's ``logits_to_keep``: fed here (0, every position) and by its decode state
        #: (the positions ``generate()`` keeps), never asked of the core.
        self.keeps_logits = any(node.name == KEEP_INPUT for node in inputs)
        names = [node.name for node in inputs if node.name != KEEP_INPUT]
        super().__init__(input_names=names, output_names=output_names, options=options)
        self.session = session
        self.path = path
        self.options: OrtOptions = options
        #: The graph's own output names, in the order of ``output_names``.
        self.graph_outputs = [node.name for node in session.get_outputs()]
        self.input_types = {node.name: _TORCH_TYPES.get(node.type) for node in inputs}
        self.metadata = {
            key.removeprefix(METADATA_PREFIX): value
            for key, value in session.get_modelmeta().custom_metadata_map.items()
            if key.startswith(METADATA_PREFIX)
        }
        #: Bind inputs and outputs where they live instead of copying them through ``run`` (on CUDA).
        self.io_binding = self.provider == CUDA
        #: onnxruntime keeps what its CPU arena once allocated, and inputs that grow call after call (a
        #: decoder's past, 256 prompt tokens at a time) leave it fragmented: an 8,000-token prompt on
        #: SmolLM2 peaked at 3.36-3.54 GB, at 2.87-2.93 GB with the arena shrunk after every run and at
        #: 2.58 GB shrunk after the runs fed more than :data:`SHRINK_ABOVE_BYTES` (stock transformers:
        #: 1.63-1.75 GB). Shrinking costs the next run fresh allocations (5% of a classifier's
        #: throughput when done after every batch), hence the threshold.
        self.run_options: ort.RunOptions | None = None
        if options.arena_shrinkage and self.provider == CPU:
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    @classmethod
    def open(cls, path: Path, task: TaskSpec, options: OrtOptions) -> OrtSession:
        """Open ``path``; a corrupt, truncated or incomplete file raises :class:`AcceleronError` naming it."""
        providers, provider_options = execution_providers(options)
        settings = session_options(options)
        if path.is_file() and path.stat().st_size == 0:
            raise AcceleronError(f"cannot load the ONNX model {path}: the file is empty. {_REEXPORT}")
        try:
            session = ort.InferenceSession(
                str(path), sess_options=settings, providers=providers, provider_options=provider_options
            )
        except Exception as error:
            cause = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
            raise AcceleronError(f"cannot load the ONNX model {path}: {cause}. {_REEXPORT}") from error
        if providers[0] != CPU and session.get_providers()[0] != providers[0]:
            logger.warning(
                "acceleron[ort]: %s could not start (see onnxruntime's log); %s runs on %s",
                providers[0],
                path.name,
                session.get_providers()[0],
            )
        # A graph acceleron exported names its outputs as the core's plan did (an encoder's included);
        # only a foreign file may need its single output renamed to the task's.
        ours = f"{METADATA_PREFIX}task" in session.get_modelmeta().custom_metadata_map
        wanted = () if ours else task.output_names
        return cls(session, path, options, _output_names(path, session, wanted))

    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feeds: dict[str, torch.Tensor] = {}
        for name in self.input_names:
            value = inputs[name]
            if value.dim() == 0 or value.shape[0] == 0:
                raise AcceleronError(
                    f"input {name!r} is an empty batch (shape {tuple(value.shape)}); pass at least one example."
                )
            wanted = self.input_types[name]
            feeds[name] = value if wanted is None else value.to(wanted)  # no copy when it already is
        if self.keeps_logits:
            feeds[KEEP_INPUT] = torch.tensor(0, dtype=torch.long)
        if self.io_binding:
            results = self._run_bound(feeds)
        else:
            arrays = {name: _as_numpy(value) for name, value in feeds.items()}
            results = self.session.run(self.graph_outputs, arrays, self._run_options_for(feeds.values()))
        return {name: torch.from_numpy(result) for name, result in zip(self.output_names, results)}

    def start_decoding(self, layout: CacheLayout, batch_size: int) -> DecodeState | None:
        """On the CPU, a generation's cache stays in onnxruntime between steps (:mod:`acceleron_ort.decode`)."""
        if self.provider != CPU or not all(name in self.input_types for name in layout.past_names):
            return None
        from acceleron_ort.decode import BoundDecode, SharedBufferDecode

        if self.metadata.get("decoder") == "fused":  # GroupQueryAttention appends in place
            return SharedBufferDecode(self, layout, batch_size)
        return BoundDecode(self, layout, batch_size)

    def _run_options_for(self, values: Iterable[torch.Tensor]) -> ort.RunOptions | None:
        """The shrinking run options for a large run, else None (the arena keeps its memory for the next)."""
        if self.run_options is None or sum(value.nbytes for value in values) <= SHRINK_ABOVE_BYTES:
            return None
        return self.run_options

    def _run_bound(self, feeds: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
        # One binding per call: a binding is not shared between threads. Each input is bound where
        # it lives (onnxruntime copies host inputs to the device itself); outputs stay on the device
        # until the one copy back that pipelines need anyway.
        binding = self.session.io_binding()
        on_cuda = self.provider == CUDA
        device_id = int(self.session.get_provider_options().get(CUDA, {}).get("device_id", 0)) if on_cuda else 0
        bound = [tensor.contiguous() for tensor in feeds.values()]  # alive until the run is over
        for name, tensor in zip(feeds, bound):
            binding.bind_input(
                name,
                "cuda" if tensor.is_cuda else "cpu",
                tensor.device.index or 0,
                torch.empty(0, dtype=tensor.dtype).numpy().dtype,
                list(tensor.shape),
                tensor.data_ptr(),
            )
        for name in self.graph_outputs:
            binding.bind_output(name, "cuda" if on_cuda else "cpu", device_id)
        self.session.run_with_iobinding(binding, self._run_options_for(bound))
        return list(binding.copy_outputs_to_cpu())

    def describe(self) -> dict[str, Any]:
        settings = self.session.get_session_options()
        return {
            **super().describe(),
            "provider": self.provider,
            "io_binding": self.io_binding,
            "arena_shrinkage": self.run_options is not None,
            "dtype": self.metadata.get("dtype") or self.compute_dtype,
            "num_threads": settings.intra_op_num_threads or "onnxruntime default (one per physical core)",
            "graph_optimization": self.options.graph_optimization,
            "exporter": self.metadata.get("exporter"),
            "fused": self.metadata.get("fused") or None,
            "decoder": self.metadata.get("decoder") or None,
        }


def _output_names(path: Path, session: ort.InferenceSession, wanted: Sequence[str]) -> list[str]:
    """The graph's output names; a graph without the task's only output has its first output renamed to it."""
    available = [node.name for node in session.get_outputs()]
    if all(name in available for name in wanted):
        return available
    if len(wanted) == 1 and available:
        logger.info("acceleron[ort]: using %s's first output %r as %r", path.name, available[0], wanted[0])
        return [wanted[0], *available[1:]]
    raise AcceleronError(
        f"{path.name} has the outputs {', '.join(available)}, not the task's {', '.join(wanted)}. "
        "Is the task right for this model? Otherwise export it again from the PyTorch weights (export=True)."
    )


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's data as a numpy array; shares memory for CPU tensors."""
    return tensor.detach().cpu().numpy()
