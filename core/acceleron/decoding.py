"""Where one generation's KV cache lives while it decodes: :class:`DecodeState` and the cache ``generate()`` carries.

The flat protocol of :mod:`acceleron.kv_cache` (past in, present out, every step) is the export
and validation contract of a decoder graph. It is also the slowest way to run one: every step hands
the whole cache to the runtime and takes a new one back. So a generation runs through a
:class:`DecodeState` instead, which a session makes with :meth:`acceleron.backend.Session.start_decoding`:

* a backend that can keep the cache inside its runtime (OpenVINO's stateful infer request, ONNX
  Runtime's bound buffers) returns its own state, and the cache never crosses into Python;
* any other backend gets :class:`FlatDecodeState`, which runs the flat graph and keeps the present
  tensors as they come back (no conversion to and from transformers' ``DynamicCache`` per step).

``generate()`` carries a :class:`RuntimeCache` from step to step: a transformers ``Cache`` that holds
the state and answers what ``generate()`` asks of a cache (its length, beam reordering, cropping).
One generation owns one state, so threads generating from one model never share a cache.

Importing this module imports torch and transformers; the core imports it only for generation.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import Cache

from acceleron.kv_cache import CacheLayout

if TYPE_CHECKING:
    from acceleron.backend import Session


class DecodeState(ABC):
    """One generation's KV cache on a backend, and the steps that extend it.

    ``step`` runs new tokens (``input_ids``, ``attention_mask`` over past and new tokens,
    ``position_ids``) against the cache, appends their keys and values and returns logits for the
    last ``keep`` positions (0: all). ``reorder`` applies beam search's choice of rows; ``read`` and
    ``write`` move the cache to and from flat past tensors (:mod:`acceleron.kv_cache` names), for
    callers that hand a cache in or take one out. ``close`` frees what the state holds; it is
    called when the generation's cache is dropped.
    """

    def __init__(self, layout: CacheLayout, batch_size: int) -> None:
        self.layout = layout
        self.batch_size = batch_size
        #: Tokens the cache holds.
        self.length = 0

    @abstractmethod
    def step(self, inputs: Mapping[str, torch.Tensor], keep: int) -> torch.Tensor:
        """Run one step; returns the logits of the last ``keep`` positions (all when 0)."""

    @abstractmethod
    def read(self) -> dict[str, torch.Tensor]:
        """The cache as flat past tensors (``past_key_values.{i}.key``/``.value``), beam reordering applied."""

    @abstractmethod
    def write(self, past: Mapping[str, torch.Tensor]) -> None:
        """Replace the cache with flat past tensors (all of one length, the batch of this state)."""

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep row ``beam_idx[j]`` of the cache as row ``j`` (beam search). The default copies the cache."""
        index = beam_idx.to(torch.long)
        self.write({name: value.index_select(0, index) for name, value in self.read().items()})

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` tokens of the cache (assisted decoding rolls back this way)."""
        if length < 0:
            length = self.length + length
        self.write({name: value[:, :, :length] for name, value in self.read().items()})

    def close(self) -> None:  # noqa: B027 - optional: most states hold nothing to free
        """Free what the state holds (a runtime request, buffers). Safe to call twice."""


class FlatDecodeState(DecodeState):
    """The flat protocol as a state: the past goes into the graph and the present comes back, every step.

    ``run`` runs the graph on flat inputs (the model's session call, with its error handling).
    """

    def __init__(
        self,
        run: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
        layout: CacheLayout,
        batch_size: int,
        dtype: torch.dtype,
    ) -> None:
        super().__init__(layout, batch_size)
        self._run = run
        self._dtype = dtype
        self._past = layout.empty_past(batch_size, dtype)

    def step(self, inputs: Mapping[str, torch.Tensor], keep: int) -> torch.Tensor:
        outputs = self._run({**inputs, **self._past})
        self._past = {
            past: outputs[present] for past, present in zip(self.layout.past_names, self.layout.present_names)
        }
        self.length += int(inputs["input_ids"].shape[1])
        logits = outputs["logits"]
        return logits[:, -keep:] if 0 < keep < logits.shape[1] else logits

    def read(self) -> dict[str, torch.Tensor]:
        return dict(self._past)

    def write(self, past: Mapping[str, torch.Tensor]) -> None:
        self._past = {name: past[name].to(self._dtype) for name in self.layout.past_names}
        self.length = int(next(iter(self._past.values())).shape[2])


class RuntimeCache(Cache):
    """The cache ``generate()`` carries between steps: it holds a :class:`DecodeState`, not tensors.

    Its length, beam reordering and cropping go to the state. ``to_flat()`` / ``to_dynamic()`` copy
    the cache out for a caller that wants the tensors. When the cache is dropped (the generation
    ended), its state is closed.
    """

    def __init__(self, state: DecodeState, owner: object) -> None:
        super().__init__(layers=[])
        self.state = state
        #: The session the state belongs to: a cache is only continued on the session that made it.
        self.owner = owner
        self._finalizer = weakref.finalize(self, state.close)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.state.length

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.state.length + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.state.reorder(beam_idx)

    def crop(self, max_length: int) -> None:
        self.state.crop(max_length)

    def reset(self) -> None:
        self.state.write(self.state.layout.empty_past(self.state.batch_size))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state.write({name: value.repeat_interleave(repeats, dim=0) for name, value in self.state.read().items()})
        self.state.batch_size *= repeats

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.state.write({name: value[indices] for name, value in self.state.read().items()})
        self.state.batch_size = int(indices.numel()) if indices.dtype != torch.bool else int(indices.sum())

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The cache as flat past tensors (a copy)."""
        return self.state.read()

    def to_dynamic(self, config: Any = None) -> Cache:
        """The cache as transformers' ``DynamicCache`` (a copy)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=config) if config is not None else DynamicCache()
        past = self.state.read()
        for i in range(self.state.layout.num_layers):
            cache.update(past[f"past_key_values.{i}.key"], past[f"past_key_values.{i}.value"], i)
        return cache

    def close(self) -> None:
        """Free the state now (it is freed anyway when the cache is dropped)."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"RuntimeCache({type(self.state).__name__}, batch {self.state.batch_size}, length {self.state.length})"


def start_state(
    session: Session,
    run: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
    layout: CacheLayout,
    batch_size: int,
    dtype: torch.dtype,
) -> DecodeState:
    """The session's own state for a new generation, else a :class:`FlatDecodeState` on ``run``."""
    state = session.start_decoding(layout, batch_size)
    return state if state is not None else FlatDecodeState(run, layout, batch_size, dtype)
