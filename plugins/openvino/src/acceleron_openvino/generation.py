"""Text generation: a decoder step on acceleron's flat KV-cache protocol, converted to OpenVINO IR.

The IR is one graph for every step (``acceleron.kv_cache``): ``input_ids``, ``attention_mask``,
``position_ids`` and ``past_key_values.{i}.key/value`` in, ``logits`` and ``present.{i}.key/value``
out, the past possibly of length 0 (the first step). The cache travels with the call (explicit, not
kept in the infer request), so any pooled request can serve any step of any generation, from any thread.

Two things differ from tracing :class:`~acceleron.kv_cache.FlatCacheCausalLM` as it is:

* transformers' ``DynamicLayer`` starts from an empty 1-D tensor and concatenates the past onto it;
  OpenVINO's frontend rejects that concatenation (rank 1 with rank 4), so the wrapper below puts the
  past tensors into the cache layers directly. The computation is the same.
* transformers hands PyTorch's SDPA a boolean mask, in which the query positions of left padding see
  no key at all; PyTorch returns zeros for such rows, OpenVINO's SDPA returns NaN, which then reaches
  the padded positions' keys and values and, through them, every later step. The model is traced with
  the SDPA kernel fed transformers' additive (float) mask instead, where those rows stay finite, and
  the rows that see no key are then set to zero, as PyTorch does: the graph computes what PyTorch
  computes at every position, padding included, and keeps OpenVINO's fused ``ScaledDotProductAttention``.

Imports OpenVINO, torch and transformers on first use only.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from acceleron.errors import ExportError

if TYPE_CHECKING:
    import openvino
    import torch
    from transformers import PreTrainedModel

#: The attention implementation registered with transformers for tracing (see the module docstring).
ATTENTION = "acceleron_ov_sdpa"


def convert_causal_lm(model: PreTrainedModel, example_inputs: Mapping[str, torch.Tensor]) -> openvino.Model:
    """Convert a causal LM into the flat-cache step graph, its inputs and outputs named after the protocol."""
    import openvino
    import torch

    from acceleron.kv_cache import CacheLayout
    from acceleron_openvino.export import _element_type, name_ports

    layout = CacheLayout.from_config(model.config)
    if list(example_inputs) != layout.input_names:
        raise ExportError(
            f"text-generation example inputs must be {layout.input_names} (acceleron.kv_cache.example_inputs), "
            f"got {list(example_inputs)}."
        )
    axes = layout.dynamic_axes()
    shapes = [
        (
            openvino.PartialShape([-1 if axis in axes[name] else size for axis, size in enumerate(tensor.shape)]),
            _element_type(tensor.dtype),
        )
        for name, tensor in example_inputs.items()
    ]
    step = _step_module(model)
    with _traced_attention(model), torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        try:
            ov_model = openvino.convert_model(step, example_input=tuple(example_inputs.values()), input=shapes)
        except Exception as error:  # OpenVINO raises its own OpConversionFailure, not a RuntimeError subclass
            from acceleron_openvino.artifacts import error_reason

            raise ExportError(
                f"OpenVINO could not convert {type(model).__name__} for text-generation: {error_reason(error)}"
            ) from error
    name_ports(ov_model, layout.input_names, layout.output_names)
    return ov_model


def _step_module(model: PreTrainedModel) -> torch.nn.Module:
    """``FlatCacheCausalLM(model)`` whose cache layers receive the past tensors without a concatenation."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from acceleron.kv_cache import FlatCacheCausalLM

    class DirectPast(FlatCacheCausalLM):
        def make_cache(self, past: tuple[torch.Tensor, ...]) -> DynamicCache:
            cache = DynamicCache(config=self.model.config)
            kinds = {type(layer).__name__ for layer in cache.layers}
            if len(cache.layers) != self.layout.num_layers or kinds != {DynamicLayer.__name__}:
                raise ExportError(
                    f"{type(self.model).__name__} has a cache of {len(cache.layers)} layers of {sorted(kinds)}; "
                    f"acceleron[ov] exports {self.layout.num_layers} full-attention layers (DynamicLayer) only."
                )
            for i, layer in enumerate(cache.layers):
                assert isinstance(layer, DynamicLayer)
                keys, values = past[2 * i], past[2 * i + 1]
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = keys, values
            return cache

    # eval() on the wrapper itself: conversion restores its training mode, which must be off (dropout).
    return DirectPast(model).eval()


@contextlib.contextmanager
def _traced_attention(model: PreTrainedModel) -> Iterator[None]:
    """Trace ``model`` with SDPA fed an additive mask; its own attention implementation is restored afterwards."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous not in (None, "sdpa", "eager"):  # e.g. flash attention: leave the user's choice alone
        yield
        return
    _register_attention()
    model.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(previous or "sdpa")


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        if attention_mask is not None:
            # [batch, 1, query, key], 0 where a key is visible: zero the output of queries that see none
            sees_any = (attention_mask == 0).any(dim=-1).transpose(1, 2).unsqueeze(-1)  # [batch, query, 1, 1]
            output = output * sees_any.to(output.dtype)
        return output, weights

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
