"""A text-generation IR whose KV cache stays in the infer request: :func:`make_stateful`, :class:`StatefulDecode`.

The core exports the flat step (past in, present out: :mod:`acceleron.kv_cache`). Fed that way,
every step copies the whole cache into OpenVINO and back out, which on SmolLM2-135M cost as much as
the step's weights (see the plugin README). :func:`make_stateful` rewrites the IR so that:

* each ``past_key_values.{i}.{key,value}`` input becomes a variable read at the start of a step and
  each ``present.{i}.{key,value}`` output the value assigned to it at the end (OpenVINO's
  ``ReadValue``/``Assign``); the CPU plugin fuses that read, the concatenation and the attention into
  one node that appends to a cache it keeps in its own buffers;
* a ``beam_idx`` input [batch] selects, per step, which row of the cache each row continues (the
  identity outside beam search), as a ``Gather`` between the read and the attention, which the CPU
  plugin folds into that same node;
* the variables start as ``[batch, kv_heads, 0, head_dim]`` zeros after ``reset_state()``, the batch
  taken from ``input_ids``;
* a ``logits_to_keep`` input (a 1-element int64; 0 keeps all) slices the hidden states before the LM
  head, so a prompt's step computes one row of logits instead of one per prompt token.

The session still serves the flat protocol (validation, callers handing a cache in): it writes the
past into the variables, runs the step and reads them back as present (``OpenVINOSession._forward``).
Generation uses :class:`StatefulDecode`, which owns one infer request for the whole generation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from acceleron.decoding import DecodeState

if TYPE_CHECKING:
    import numpy as np
    import openvino
    import torch

    from acceleron.kv_cache import CacheLayout

#: A flat-cache input and the output that becomes its next value.
PAST_INPUT = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
BEAM_INPUT = "beam_idx"
KEEP_INPUT = "logits_to_keep"
#: Node types between the LM head's MatMul and the logits output that the slice may look through.
_PASS_THROUGH = {"Convert", "Reshape", "Squeeze", "Unsqueeze"}


def past_inputs(model: openvino.Model) -> dict[str, str]:
    """The flat-cache inputs of ``model`` and their present outputs, by name (empty when there are none)."""
    outputs = {name for port in model.outputs for name in port.get_names()}
    pairs = {}
    for port in model.inputs:
        match = PAST_INPUT.match(port.get_any_name())
        if match:
            present = f"present.{match.group(1)}.{match.group(2)}"
            if present in outputs:
                pairs[port.get_any_name()] = present
    return pairs


def is_stateful(model: openvino.Model | openvino.CompiledModel) -> bool:
    return any(port.get_any_name() == BEAM_INPUT for port in model.inputs)


def make_stateful(model: openvino.Model) -> bool:
    """Rewrite a flat-cache text-generation ``model`` in place as described above; False when it has no flat cache."""
    import numpy as np
    import openvino
    from openvino import opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    pairs = past_inputs(model)
    if not pairs or is_stateful(model):
        return False
    parameters = {port.get_any_name(): port.get_node() for port in model.inputs}
    beam = ops.parameter([-1], openvino.Type.i32, name=BEAM_INPUT)
    beam.output(0).set_names({BEAM_INPUT})
    axis0 = ops.constant(np.int64(0))
    for name in pairs:
        parameter = parameters[name]
        consumers = list(parameter.output(0).get_target_inputs())
        reordered = ops.gather(parameter, beam, axis0)
        for consumer in consumers:
            consumer.replace_source_output(reordered.output(0))
    model.add_parameters([beam])
    _slice_before_lm_head(model, parameters["input_ids"])
    apply_make_stateful_transformation(model, pairs)
    # A variable's first value: zeros of [batch, kv_heads, 0, head_dim], the batch that of input_ids.
    batch = ops.gather(ops.shape_of(parameters["input_ids"], openvino.Type.i64), ops.constant([0]), axis0)
    for node in model.get_ops():
        if node.get_type_name() != "ReadValue":
            continue
        dims = [batch]
        for dim in list(node.get_output_partial_shape(0))[1:]:
            dims.append(ops.constant(np.array([dim.get_length() if dim.is_static else 0], dtype=np.int64)))
        zero = ops.constant(np.array(0, dtype=node.get_output_element_type(0).to_dtype()))
        node.set_arguments([ops.broadcast(zero, ops.concat(dims, 0)).output(0)])
        node.validate_and_infer_types()
    model.validate_nodes_and_infer_types()
    return True


def _slice_before_lm_head(model: openvino.Model, input_ids: openvino.Node) -> None:
    """Add the ``logits_to_keep`` input: hidden states are sliced to the last k positions before the LM head's MatMul.

    Left as it is (no input added) when the logits do not come from a MatMul on [batch, sequence,
    hidden] states.
    """
    import numpy as np
    import openvino
    from openvino import opset13 as ops

    logits = next((port for port in model.outputs if "logits" in port.get_names()), None)
    if logits is None:
        return
    node = logits.get_node().input_value(0).get_node()
    while node.get_type_name() in _PASS_THROUGH:
        node = node.input_value(0).get_node()
    if node.get_type_name() != "MatMul":
        return
    hidden = node.input_value(0)
    if hidden.get_partial_shape().rank.get_length() != 3:
        return
    keep = ops.parameter([1], openvino.Type.i64, name=KEEP_INPUT)
    keep.output(0).set_names({KEEP_INPUT})
    length = ops.gather(ops.shape_of(input_ids, openvino.Type.i64), ops.constant([1]), ops.constant(np.int64(0)))
    zero = ops.constant(np.array([0], dtype=np.int64))
    # start = 0 when keep is 0 (every position), else max(length - keep, 0)
    start = ops.select(ops.equal(keep, zero), zero, ops.maximum(ops.subtract(length, keep), zero))
    # int32's maximum, not int64's: the CPU plugin may run this slice in int32, where int64's maximum
    # wraps to -1 and the last position would be dropped (seen on SmolLM2-135M, not on tiny models).
    stop = ops.constant(np.array([np.iinfo(np.int32).max], dtype=np.int64))
    sliced = ops.slice(hidden, start, stop, ops.constant([1]), ops.constant([1]))
    node.input(0).replace_source_output(sliced.output(0))
    model.add_parameters([keep])


class StatefulDecode(DecodeState):
    """One generation on a stateful IR: it owns an infer request, whose variables hold the cache."""

    def __init__(self, session: Any, layout: CacheLayout, batch_size: int) -> None:
        import numpy as np

        super().__init__(layout, batch_size)
        self._session = session
        self._request: openvino.InferRequest | None = session.pool.acquire()
        self._request.reset_state()
        self._beam = np.arange(batch_size, dtype=np.int32)
        self._logits_index = session.output_names.index("logits")

    @property
    def request(self) -> openvino.InferRequest:
        if self._request is None:
            raise RuntimeError("this generation's cache was closed")
        return self._request

    def step(self, inputs: Mapping[str, torch.Tensor], keep: int) -> torch.Tensor:
        import numpy as np
        import torch

        request = self.request
        feed = self._session.feed(inputs)
        feed[BEAM_INPUT] = self._beam
        if self._session.keeps_logits:
            feed[KEEP_INPUT] = np.array([keep], dtype=np.int64)
        results = request.infer(feed, share_inputs=True, share_outputs=True)
        logits = torch.from_numpy(results[self._logits_index].copy())
        self._beam = np.arange(self.batch_size, dtype=np.int32)
        self.length += int(inputs["input_ids"].shape[1])
        return logits[:, -keep:] if 0 < keep < logits.shape[1] else logits

    def reorder(self, beam_idx: torch.Tensor) -> None:
        import numpy as np

        # Applied by the next step's Gather; read() applies it itself.
        self._beam = self._beam[beam_idx.cpu().numpy()].astype(np.int32)

    def read(self) -> dict[str, torch.Tensor]:
        import numpy as np
        import torch

        if self.length == 0:
            return self.layout.empty_past(self.batch_size)
        past = read_states(self.request, self.layout.past_names)
        if not np.array_equal(self._beam, np.arange(self.batch_size)):
            index = torch.from_numpy(self._beam.astype(np.int64))
            past = {name: value.index_select(0, index) for name, value in past.items()}
        return past

    def write(self, past: Mapping[str, torch.Tensor]) -> None:
        import numpy as np

        write_states(self.request, past)
        self._beam = np.arange(self.batch_size, dtype=np.int32)
        self.length = int(next(iter(past.values())).shape[2])

    def close(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            self._session.pool.release(request)


def state_names(request: openvino.InferRequest) -> dict[str, Any]:
    """The request's variables by the flat past name they hold (``make_stateful`` names them past + present)."""
    states = {}
    for state in request.query_state():
        match = re.match(r"^(past_key_values\.\d+\.(?:key|value))", state.name)
        if match:
            states[match.group(1)] = state
    return states


def read_states(request: openvino.InferRequest, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The variables of ``request`` holding the flat past ``names``, as tensors (copies)."""
    import torch

    states = state_names(request)
    return {name: torch.from_numpy(states[name].state.data.copy()) for name in names}


def write_states(request: openvino.InferRequest, past: Mapping[str, torch.Tensor]) -> None:
    """Set the variables of ``request`` to the flat past tensors ``past`` (a zero-length past resets them)."""
    import openvino

    first = next(iter(past.values()))
    request.reset_state()
    if first.shape[2] == 0:
        return
    states = state_names(request)
    for name, value in past.items():
        states[name].state = openvino.Tensor(_contiguous(value))


def _contiguous(value: torch.Tensor) -> np.ndarray:
    import numpy as np
    import torch

    tensor = value.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return np.ascontiguousarray(tensor.cpu().numpy())
