"""A generation's KV cache kept as ONNX Runtime's own tensors between steps.

Through ``InferenceSession.run`` every step turns the cache into numpy arrays going in and copies
the new one out into numpy arrays coming back. Here each step is run with IO binding instead:

* :class:`BoundDecode` (traced graphs): the past inputs are bound to the ``OrtValue`` outputs of the
  step before, which never leave the runtime; the graph still copies past and new keys into a new
  present each step;
* :class:`SharedBufferDecode` (fused decoders, :mod:`acceleron_ort.decoder_graph`): each layer's past
  and present are bound to one preallocated buffer, and ``GroupQueryAttention`` appends the step's keys
  and values in place. The buffer grows by doubling when a step would overflow it.

Only the logits are copied out (one row per sequence when ``generate()`` asks for one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import torch

from acceleron.decoding import DecodeState
from acceleron_ort.artifacts import KEEP_INPUT

#: Positions a shared cache buffer holds at first (it doubles when a step needs more).
INITIAL_CAPACITY = 256

if TYPE_CHECKING:
    from acceleron.kv_cache import CacheLayout
    from acceleron_ort.session import OrtSession


class BoundDecode(DecodeState):
    """One generation on an ONNX Runtime CPU session, its cache held as ``OrtValue`` tensors."""

    def __init__(self, session: OrtSession, layout: CacheLayout, batch_size: int) -> None:
        super().__init__(layout, batch_size)
        self._session = session
        types = session.input_types
        self._cache_dtype = types.get(layout.past_names[0]) or torch.float32
        self._past: dict[str, ort.OrtValue] = {}
        self.write(layout.empty_past(batch_size, self._cache_dtype))

    def step(self, inputs: Mapping[str, torch.Tensor], keep: int) -> torch.Tensor:
        session = self._session
        binding = session.session.io_binding()
        arrays = _bind_step_inputs(binding, session, inputs)  # noqa: F841 - alive until the run is over
        for name, value in self._past.items():
            binding.bind_ortvalue_input(name, value)
        for name in session.graph_outputs:
            binding.bind_output(name, "cpu")
        session.session.run_with_iobinding(binding)
        outputs = dict(zip(session.output_names, binding.get_outputs()))
        self._past = {
            past: outputs[present] for past, present in zip(self.layout.past_names, self.layout.present_names)
        }
        self.length += int(inputs["input_ids"].shape[1])
        return _kept_logits(outputs["logits"], keep)

    def read(self) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(value.numpy().copy()) for name, value in self._past.items()}

    def write(self, past: Mapping[str, torch.Tensor]) -> None:
        self._past = {
            name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(_numpy(past[name], self._cache_dtype)))
            for name in self.layout.past_names
        }
        self.length = int(past[self.layout.past_names[0]].shape[2])

    def close(self) -> None:
        self._past = {}


class SharedBufferDecode(DecodeState):
    """One generation on a fused decoder: each layer's past and present are one buffer, appended in place.

    ``GroupQueryAttention`` shares the buffer when its past and present inputs are the same tensor:
    it writes the step's keys and values after the ``length`` positions it holds, and attends over
    the first ``total_sequence_length`` (the attention mask's width). The buffers are numpy arrays
    wrapped as ``OrtValue`` without a copy, so reading, reordering and growing them is numpy work.
    """

    def __init__(self, session: OrtSession, layout: CacheLayout, batch_size: int) -> None:
        super().__init__(layout, batch_size)
        self._session = session
        self._dtype = np.float32
        self._vocabulary = _vocabulary(session)
        self._keeps = session.keeps_logits
        self._arrays: dict[str, np.ndarray] = {}
        self._values: dict[str, ort.OrtValue] = {}
        #: The binding of the buffers, kept from step to step (each step rebinds only ids, mask,
        #: positions and logits); None after the buffers changed.
        self._binding: Any = None
        #: The logits of the last step shape, bound as an output (the decode steps all share one).
        self._logits: tuple[np.ndarray, ort.OrtValue] | None = None
        self._allocate(INITIAL_CAPACITY)

    @property
    def capacity(self) -> int:
        """Positions each buffer holds."""
        return int(next(iter(self._arrays.values())).shape[2]) if self._arrays else 0

    def _allocate(self, capacity: int) -> None:
        """New buffers of ``capacity`` positions, holding the cache so far."""
        layout = self.layout
        shape = (self.batch_size, layout.num_kv_heads, capacity, layout.head_dim)
        arrays = {}
        for name in layout.past_names:
            array = np.zeros(shape, dtype=self._dtype)
            if name in self._arrays and self.length:
                array[:, :, : self.length] = self._arrays[name][:, :, : self.length]
            arrays[name] = array
        self._arrays = arrays
        self._values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in arrays.items()}
        self._binding = None

    def step(self, inputs: Mapping[str, torch.Tensor], keep: int) -> torch.Tensor:
        new = int(inputs["input_ids"].shape[1])
        if self.length + new > self.capacity:
            self._allocate(max(2 * self.capacity, self.length + new))
        session = self._session
        binding = self._binding
        if binding is None:
            binding = self._binding = session.session.io_binding()
            for past, present in zip(self.layout.past_names, self.layout.present_names):
                binding.bind_ortvalue_input(past, self._values[past])
                binding.bind_ortvalue_output(present, self._values[past])
        arrays = _bind_step_inputs(binding, session, inputs)  # alive until the run is over
        kept = keep if 0 < keep < new else new
        if self._keeps:  # the LM head runs on the kept positions only
            arrays.append(np.array(kept, dtype=np.int64))
            binding.bind_cpu_input(KEEP_INPUT, arrays[-1])
        shape = (self.batch_size, kept if self._keeps else new, self._vocabulary)
        if self._logits is None or self._logits[0].shape != shape:
            logits = np.empty(shape, dtype=np.float32)
            self._logits = (logits, ort.OrtValue.ortvalue_from_numpy(logits))
        binding.bind_ortvalue_output("logits", self._logits[1])
        session.session.run_with_iobinding(binding)
        self.length += new
        logits = self._logits[0][:, -kept:]
        return torch.from_numpy(logits.copy())  # a copy: the next step writes over the buffer

    def read(self) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(array[:, :, : self.length].copy()) for name, array in self._arrays.items()}

    def write(self, past: Mapping[str, torch.Tensor]) -> None:
        first = past[self.layout.past_names[0]]
        self.batch_size = int(first.shape[0])
        self.length = 0
        self._arrays = {}
        length = int(first.shape[2])
        self._allocate(max(INITIAL_CAPACITY, 2 * length))
        for name, array in self._arrays.items():
            array[:, :, :length] = _numpy(past[name], torch.float32)
        self.length = length

    def reorder(self, beam_idx: torch.Tensor) -> None:
        index = beam_idx.to(torch.long).numpy()
        for array in self._arrays.values():
            array[:] = array[index]  # the OrtValue keeps pointing at this memory

    def crop(self, length: int) -> None:
        if length < 0:
            length = self.length + length
        self.length = max(0, min(length, self.length))

    def close(self) -> None:
        self._binding = None
        self._logits = None
        self._values = {}
        self._arrays = {}


def _vocabulary(session: OrtSession) -> int:
    """The logits' last dimension, as the graph declares it (a fused decoder always declares it)."""
    shape = next(node.shape for node in session.session.get_outputs() if node.name == "logits")
    if not isinstance(shape[-1], int):
        raise ValueError("a shared-buffer decoder needs the vocabulary size in the graph's logits shape")
    return int(shape[-1])


def _bind_step_inputs(binding: Any, session: OrtSession, inputs: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
    """Bind the step's ids, mask and positions (the ones the graph takes); returns the arrays bound."""
    arrays = []
    for name in ("input_ids", "attention_mask", "position_ids"):
        if name not in session.input_types:
            continue
        wanted = session.input_types[name]
        array = np.ascontiguousarray(inputs[name].to(wanted).numpy() if wanted else inputs[name].numpy())
        arrays.append(array)
        binding.bind_cpu_input(name, array)
    return arrays


def _kept_logits(value: ort.OrtValue, keep: int) -> torch.Tensor:
    """The last ``keep`` positions' logits (all when 0), copied out of the runtime's memory."""
    logits = value.numpy()
    if 0 < keep < logits.shape[1]:
        logits = logits[:, -keep:]
    return torch.from_numpy(np.array(logits))  # a copy: the OrtValue's memory goes with it


def _numpy(tensor: torch.Tensor, dtype: Any) -> np.ndarray:
    return tensor.detach().to(dtype).cpu().numpy()
