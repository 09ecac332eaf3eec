"""One ``onnxruntime.InferenceSession`` per model, and running model inputs through it.

``InferenceSession.run`` is thread-safe, and :class:`OrtSession` holds nothing mutable, so one
session serves every thread of a pipeline. On CPU, torch tensors become numpy arrays and back
without copies (``Tensor.numpy()`` / ``torch.from_numpy`` share memory). On CUDA, inputs are bound
where they already live (IO binding) instead of being copied through host memory by ``run``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from acceleron.errors import AcceleronError, BackendUnavailableError, InvalidOptionError
from acceleron_ort.artifacts import METADATA_PREFIX
from acceleron_ort.options import DEFAULT_GRAPH_OPTIMIZATION

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

_GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_NUMPY_TYPES: dict[str, Any] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}
#: Inputs a graph may lack: dropping them changes nothing when they hold their neutral value.
_NEUTRAL_INPUTS = {"token_type_ids": 0, "attention_mask": 1}
#: Inputs a text-generation graph may lack whatever their value: the exporter drops the inputs a
#: model does not read (a model that ignores ``position_ids`` derives positions itself).
_GENERATIVE_UNUSED_INPUTS = frozenset({"position_ids"})
#: Outputs of a text-generation graph: the logits, then the present key/values (acceleron.kv_cache).
_LOGITS = "logits"
_PRESENT_PREFIX = "present."


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: Any  # the numpy dtype the graph wants, or None when it is not a plain tensor type


def session_options(options: Mapping[str, Any]) -> ort.SessionOptions:
    """``SessionOptions`` from the backend options: threads, graph optimisation, then the pass-through dict."""
    settings = ort.SessionOptions()
    level = str(options.get("graph_optimization") or DEFAULT_GRAPH_OPTIMIZATION)
    settings.graph_optimization_level = _GRAPH_LEVELS[level]
    if options.get("num_threads"):
        settings.intra_op_num_threads = int(options["num_threads"])
    for key, value in dict(options.get("session_options") or {}).items():
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


def execution_providers(options: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The execution providers (and their options) for ``device``, or for an explicit ``provider``."""
    available = ort.get_available_providers()
    extra = dict(options.get("provider_options") or {})
    provider = options.get("provider")
    device = str(options.get("device") or "cpu")
    kind, _, index = device.partition(":")
    if provider is None:
        if kind == "cpu":
            return [CPU], [extra]
        if kind != "cuda":
            raise InvalidOptionError(
                f"the ort backend runs on device 'cpu' or 'cuda[:N]', not {device!r}; "
                "for another execution provider pass provider='...ExecutionProvider'."
            )
        provider = CUDA
        extra = {"device_id": int(index or 0), **extra}
    if provider not in available:
        hint = " Install onnxruntime-gpu instead of onnxruntime." if provider == CUDA else ""
        raise BackendUnavailableError(
            f"onnxruntime {ort.__version__} here has no {provider} (it has: {', '.join(available)}).{hint}"
        )
    if provider == CPU:
        return [CPU], [extra]
    return [provider, CPU], [extra, {}]


@dataclass(frozen=True)
class OrtSession:
    """An inference session with what running it needs: the graph's inputs and the task's outputs."""

    session: ort.InferenceSession
    path: Path
    inputs: tuple[GraphInput, ...]
    #: (graph output name, task output name) for each output the task wants.
    outputs: tuple[tuple[str, str], ...]
    metadata: Mapping[str, str]
    #: Bind inputs and outputs where they live instead of copying them through ``run`` (on CUDA).
    io_binding: bool = False
    #: Inputs the caller may pass although the graph does not take them (its exporter dropped them).
    unused_inputs: frozenset[str] = frozenset()

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    @classmethod
    def create(
        cls, path: Path, output_names: Sequence[str], options: Mapping[str, Any], *, generative: bool = False
    ) -> OrtSession:
        """Open ``path``; a corrupt, truncated or incomplete file raises :class:`AcceleronError` naming it.

        ``generative``: a text-generation graph, whose outputs are the logits and every
        ``present.*`` key/value (``output_names`` is then ignored).
        """
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
        inputs = tuple(GraphInput(node.name, _NUMPY_TYPES.get(node.type)) for node in session.get_inputs())
        metadata = {
            key.removeprefix(METADATA_PREFIX): value
            for key, value in session.get_modelmeta().custom_metadata_map.items()
            if key.startswith(METADATA_PREFIX)
        }
        outputs = _generative_outputs(path, session) if generative else _match_outputs(path, session, output_names)
        return cls(
            session,
            path,
            inputs,
            outputs,
            metadata,
            io_binding=session.get_providers()[0] == CUDA,
            unused_inputs=_GENERATIVE_UNUSED_INPUTS if generative else frozenset(),
        )

    # ---- running ----

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the graph on ``inputs``; returns the task's outputs as CPU torch tensors."""
        feeds = self._feeds(inputs)
        names = [graph_name for graph_name, _ in self.outputs]
        if self.io_binding:
            results = self._run_bound(feeds, names)
        else:
            arrays = {name: _as_numpy(tensor) for name, tensor in feeds.items()}
            results = self.session.run(names, arrays)
        return {task_name: torch.from_numpy(result) for (_, task_name), result in zip(self.outputs, results)}

    def _feeds(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        declared = {graph_input.name for graph_input in self.inputs}
        self._check_extra_inputs({name: value for name, value in inputs.items() if name not in declared})
        feeds: dict[str, torch.Tensor] = {}
        for graph_input in self.inputs:
            value = inputs.get(graph_input.name)
            if value is None and graph_input.name == "token_type_ids" and "input_ids" in inputs:
                value = torch.zeros_like(inputs["input_ids"])
            if value is None:
                raise AcceleronError(
                    f"{self.path.name} needs the input {graph_input.name!r}, which was not given "
                    f"(got {', '.join(inputs) or 'nothing'}). Pass it, e.g. with a tokenizer or processor "
                    "that produces it."
                )
            if value.dim() == 0 or value.shape[0] == 0:
                raise AcceleronError(
                    f"input {graph_input.name!r} is an empty batch (shape {tuple(value.shape)}); "
                    "pass at least one example."
                )
            feeds[graph_input.name] = _cast(value, graph_input.dtype)
        return feeds

    def _check_extra_inputs(self, extra: Mapping[str, torch.Tensor]) -> None:
        unknown = [
            name
            for name, value in extra.items()
            if name not in self.unused_inputs
            and not (name in _NEUTRAL_INPUTS and bool((value == _NEUTRAL_INPUTS[name]).all()))
        ]
        if unknown:
            takes = ", ".join(graph_input.name for graph_input in self.inputs)
            raise AcceleronError(
                f"{self.path.name} does not take the input(s) {', '.join(unknown)}: its graph takes {takes}. "
                "Drop them, or export the model again so that its graph takes them."
            )

    def _run_bound(self, feeds: Mapping[str, torch.Tensor], names: list[str]) -> list[np.ndarray]:
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
                _as_numpy_dtype(tensor),
                list(tensor.shape),
                tensor.data_ptr(),
            )
        for name in names:
            binding.bind_output(name, "cuda" if on_cuda else "cpu", device_id)
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


_REEXPORT = (
    "The file may be corrupt or truncated, or its external data file missing: delete it and export "
    "again (export=True), or choose another .onnx file with file_name=..."
)


def _match_outputs(path: Path, session: ort.InferenceSession, wanted: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Pair the task's outputs with the graph's, by name; a single output pairs with a single output."""
    available = [node.name for node in session.get_outputs()]
    if all(name in available for name in wanted):
        return tuple((name, name) for name in wanted)
    if len(wanted) == 1 and available:
        logger.info("acceleron[ort]: using %s's first output %r as %r", path.name, available[0], wanted[0])
        return ((available[0], wanted[0]),)
    raise AcceleronError(
        f"{path.name} has the outputs {', '.join(available)}, not the task's {', '.join(wanted)}. "
        "Is the task right for this model? Otherwise export it again from the PyTorch weights (export=True)."
    )


def _generative_outputs(path: Path, session: ort.InferenceSession) -> tuple[tuple[str, str], ...]:
    """A text-generation graph's logits and present key/values, checked against its past inputs."""
    available = [node.name for node in session.get_outputs()]
    presents = [name for name in available if name.startswith(_PRESENT_PREFIX)]
    pasts = [node.name for node in session.get_inputs() if node.name.startswith("past_key_values.")]
    if _LOGITS not in available or not presents or len(presents) != len(pasts):
        raise AcceleronError(
            f"{path.name} is not a text-generation graph with a KV cache: it takes "
            f"{', '.join(node.name for node in session.get_inputs())} and returns {', '.join(available)}, "
            "where acceleron expects past_key_values.{i}.key/value inputs and logits plus present.{i}.key/value "
            "outputs. Export it again from the PyTorch weights (export=True)."
        )
    return tuple((name, name) for name in [_LOGITS, *presents])


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's data as a numpy array; shares memory for CPU tensors."""
    return tensor.detach().cpu().numpy()


def _as_numpy_dtype(tensor: torch.Tensor) -> Any:
    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


def _cast(tensor: torch.Tensor, dtype: Any) -> torch.Tensor:
    """``tensor`` in the dtype the graph wants (no copy when it already is)."""
    if dtype is None:
        return tensor
    wanted = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    return tensor if tensor.dtype == wanted else tensor.to(wanted)
