"""A generation's KV cache kept as ONNX Runtime's own tensors between steps: :class:`BoundDecode`.

Through ``InferenceSession.run`` every step turns the cache into numpy arrays going in and copies
the new one out into numpy arrays coming back. Here each step is run with IO binding: the past
inputs are bound to the ``OrtValue`` outputs of the step before, which never leave the runtime;
only the logits are copied out (one row per sequence when ``generate()`` asks for one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import torch

from acceleron.decoding import DecodeState

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
        arrays = []  # alive until the run is over
        for name in ("input_ids", "attention_mask", "position_ids"):
            if name not in session.input_types:
                continue
            wanted = session.input_types[name]
            array = np.ascontiguousarray(inputs[name].to(wanted).numpy() if wanted else inputs[name].numpy())
            arrays.append(array)
            binding.bind_cpu_input(name, array)
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
        logits = outputs["logits"].numpy()
        if 0 < keep < logits.shape[1]:
            logits = logits[:, -keep:]
        return torch.from_numpy(np.array(logits))  # a copy: the OrtValue's memory goes with it

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


def _numpy(tensor: torch.Tensor, dtype: Any) -> np.ndarray:
    return tensor.detach().to(dtype).cpu().numpy()
