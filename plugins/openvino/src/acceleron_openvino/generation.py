"""The ``ov`` tracing override of the flat KV-cache step graph (``acceleron.kv_cache``), used by ``prepare_plan``.

Two things differ from tracing :class:`~acceleron.kv_cache.FlatCacheCausalLM` as it is:

* transformers' ``DynamicLayer`` starts from an empty 1-D tensor and concatenates the past onto it;
  OpenVINO's frontend rejects that concatenation (rank 1 with rank 4), so :class:`DirectPast` puts the
  past tensors into the cache layers directly. The computation is the same.
* transformers hands PyTorch's SDPA a boolean mask, in which the query positions of left padding see
  no key at all; PyTorch returns zeros for such rows, OpenVINO's SDPA returns NaN, which then reaches
  the padded positions' keys and values and, through them, every later step. The step is traced with
  the SDPA kernel fed transformers' additive (float) mask instead, where those rows stay finite, and
  the rows that see no key are then set to zero, as PyTorch does: the graph computes what PyTorch
  computes at every position, padding included, and keeps OpenVINO's fused ``ScaledDotProductAttention``.
  The model's own attention implementation is restored after each forward.

Importing this module imports torch and transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from acceleron.errors import ExportError
from acceleron.kv_cache import FlatCacheCausalLM
from acceleron.tasks import ExportPlan

#: The attention implementation registered with transformers for tracing (see the module docstring).
ATTENTION = "acceleron_ov_sdpa"


def direct_past(plan: ExportPlan) -> ExportPlan:
    """``plan`` with every flat-cache step module traced as :class:`DirectPast`; other graphs as they are."""
    graphs = [
        dataclasses.replace(graph, module=DirectPast(graph.module.model).eval())
        if isinstance(graph.module, FlatCacheCausalLM)
        else graph
        for graph in plan.graphs
    ]
    return dataclasses.replace(plan, graphs=graphs)


class DirectPast(FlatCacheCausalLM):
    """The flat-cache step whose cache layers receive the past without a concatenation, run with OpenVINO-safe SDPA."""

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

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        with _traced_attention(self.model):
            return super().forward(input_ids, attention_mask, position_ids, *past)


@contextlib.contextmanager
def _traced_attention(model: PreTrainedModel) -> Iterator[None]:
    """Run ``model`` with SDPA fed an additive mask; its own attention implementation is restored afterwards."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous not in (None, "sdpa", "eager"):  # e.g. flash attention: leave the user's choice alone
        yield
        return
    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    model.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(previous or "sdpa")


def _attention(
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
