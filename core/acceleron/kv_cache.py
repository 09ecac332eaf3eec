"""The flat KV-cache protocol every backend's text-generation graph follows.

A decoder step is one graph with plain tensors in and out, the same for ONNX Runtime, OpenVINO and
TorchScript, and one graph serves the first step too (its past has length 0):

inputs
    ``input_ids`` [batch, sequence], ``attention_mask`` [batch, past + sequence],
    ``position_ids`` [batch, sequence], then per layer ``i``: ``past_key_values.{i}.key`` and
    ``past_key_values.{i}.value`` [batch, kv_heads, past, head_dim]
outputs
    ``logits`` [batch, sequence, vocab], then per layer ``present.{i}.key`` and
    ``present.{i}.value`` [batch, kv_heads, past + sequence, head_dim] (past and new, concatenated)

:class:`FlatCacheCausalLM` wraps a transformers causal LM into that signature (it is what exporters
trace), :func:`to_flat` and :func:`from_flat` move between the flat tensors and transformers'
``DynamicCache``, which is what ``generate()`` carries from step to step.

Importing this module imports torch; the core imports it only when a generative model is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.cache_utils import Cache

BATCH = "batch"
SEQUENCE = "sequence"
PAST = "past_sequence"
TOTAL = "total_sequence"
BASE_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclass(frozen=True)
class CacheLayout:
    """Shape of a decoder's KV cache: layers, key/value heads and head size."""

    num_layers: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> CacheLayout:
        """Read the layout from a transformers config (GPT-2, Llama, Qwen2 and their relatives)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = first_attribute(text, "num_hidden_layers", "n_layer", "num_layers")
        heads = first_attribute(text, "num_attention_heads", "n_head")
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        hidden = first_attribute(text, "hidden_size", "n_embd")
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        return cls(num_layers=int(layers), num_kv_heads=int(kv_heads), head_dim=int(head_dim))

    @property
    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    @property
    def input_names(self) -> list[str]:
        return [*BASE_INPUTS, *self.past_names]

    @property
    def output_names(self) -> list[str]:
        return ["logits", *self.present_names]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Dynamic axes of every input and output, keyed by tensor name (``torch.onnx.export`` style)."""
        axes: dict[str, dict[int, str]] = {
            "input_ids": {0: BATCH, 1: SEQUENCE},
            "attention_mask": {0: BATCH, 1: TOTAL},
            "position_ids": {0: BATCH, 1: SEQUENCE},
            "logits": {0: BATCH, 1: SEQUENCE},
        }
        axes.update({name: {0: BATCH, 2: PAST} for name in self.past_names})
        axes.update({name: {0: BATCH, 2: TOTAL} for name in self.present_names})
        return axes

    def empty_past(self, batch_size: int, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Zero-length past tensors: the first step's cache."""
        shape = (batch_size, self.num_kv_heads, 0, self.head_dim)
        return {name: torch.zeros(shape, dtype=dtype or torch.float32) for name in self.past_names}


def first_attribute(config: Any, *names: str) -> Any:
    """The first of ``names`` that ``config`` sets (configs of different families name one size differently)."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    raise ValueError(f"{type(config).__name__} has none of {names}: acceleron cannot lay out its KV cache")


def position_ids_for(attention_mask: torch.Tensor, sequence_length: int) -> torch.Tensor:
    """Positions of the last ``sequence_length`` tokens, counting only unmasked ones (left padding)."""
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 1)
    return positions[:, -sequence_length:]


def to_flat(cache: Cache | None, layout: CacheLayout, batch_size: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The past tensors of ``cache`` by flat name (zero-length ones when it is None or empty)."""
    if cache is None or cache.get_seq_length() == 0:
        return layout.empty_past(batch_size, dtype)
    layers = cache.layers
    if len(layers) != layout.num_layers:
        raise ValueError(f"the cache has {len(layers)} layers, the model {layout.num_layers}")
    flat: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise TypeError(f"cache layer {i} ({type(layer).__name__}) holds no key/value tensors")
        flat[f"past_key_values.{i}.key"] = keys
        flat[f"past_key_values.{i}.value"] = values
    return flat


def from_flat(outputs: dict[str, torch.Tensor], layout: CacheLayout, config: PretrainedConfig | None = None) -> Cache:
    """A ``DynamicCache`` holding the ``present.*`` tensors of one step's outputs."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config) if config is not None else DynamicCache()
    for i in range(layout.num_layers):
        cache.update(outputs[f"present.{i}.key"], outputs[f"present.{i}.value"], i)
    return cache


class FlatCacheCausalLM(torch.nn.Module):
    """A transformers causal LM with the flat signature above: what every exporter traces.

    ``forward(input_ids, attention_mask, position_ids, *past)`` takes the past as ``2 * layers``
    tensors (key, value per layer) and returns ``(logits, *present)``.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.layout = CacheLayout.from_config(model.config)

    def make_cache(self, past: tuple[torch.Tensor, ...]) -> Cache:
        """The ``DynamicCache`` holding ``past`` (a backend may fill it otherwise for its tracer)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layout.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        return cache

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=self.make_cache(past),
            use_cache=True,
        )
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def example_inputs(
    config: PretrainedConfig,
    batch_size: int = 2,
    sequence_length: int = 3,
    past_length: int = 5,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Deterministic flat inputs (ordered as :attr:`CacheLayout.input_names`) for tracing and checks.

    The last row is left-padded (its first two positions masked) when the batch has several rows,
    so graphs are traced and validated with a real attention mask.
    """
    layout = CacheLayout.from_config(config)
    generator = torch.Generator().manual_seed(seed)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab_size = int(getattr(text, "vocab_size", 100))
    total = past_length + sequence_length
    mask = torch.ones(batch_size, total, dtype=torch.long)
    if batch_size > 1 and total > 3:
        mask[-1, :2] = 0
    inputs: dict[str, torch.Tensor] = {
        "input_ids": torch.randint(
            min(5, vocab_size - 1), vocab_size, (batch_size, sequence_length), generator=generator
        ),
        "attention_mask": mask,
        "position_ids": position_ids_for(mask, sequence_length),
    }
    shape = (batch_size, layout.num_kv_heads, past_length, layout.head_dim)
    for name in layout.past_names:
        inputs[name] = torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype or torch.float32)
    return inputs


def validation_cases(config: PretrainedConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The steps an export is validated on: a prefill (empty past) and a decode step (one token)."""
    return {
        "prefill": example_inputs(config, batch_size=2, sequence_length=7, past_length=0, seed=1),
        "decode": example_inputs(config, batch_size=3, sequence_length=1, past_length=9, seed=2),
    }


def model_validation_cases(reference: FlatCacheCausalLM) -> dict[str, dict[str, torch.Tensor]]:
    """A prefill and the decode step after it, on a token sequence the model itself finds likely.

    Exports are validated on these. Random token ids and a random cache make next-token
    distributions nearly flat, and there a faithful int8 export's argmax agrees with PyTorch's only
    a third of the time (SmolLM2-135M, ONNX Runtime int8); on likely text it agrees everywhere. So
    the prefill's tokens are the model's own greedy continuation of random first tokens (the last
    row left-padded by two positions), and the decode step feeds the reference's own cache of that
    prefill and its predicted next token: seven prefill tokens and a past of seven, other shapes
    than the export's, so the dynamic axes are exercised too.
    """
    base = validation_cases(reference.model.config)["prefill"]
    batch, length = base["input_ids"].shape
    mask = base["attention_mask"]
    empty = {name: base[name] for name in reference.layout.past_names}
    ids = base["input_ids"][:, :1]
    with torch.inference_mode():
        while ids.shape[1] < length:
            logits = reference.model(input_ids=ids).logits[:, -1, :]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        prefill = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask, length), **empty}
        outputs = reference(*prefill.values())
    names = reference.layout.output_names
    present = dict(zip(names, outputs))
    step_mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], dim=1)
    decode = {
        "input_ids": present["logits"][:, -1, :].argmax(-1, keepdim=True),
        "attention_mask": step_mask,
        "position_ids": position_ids_for(step_mask, 1),
    }
    for past_name, present_name in zip(reference.layout.past_names, reference.layout.present_names):
        decode[past_name] = present[present_name].detach().clone()
    return {"prefill": prefill, "decode": decode}


def visible(outputs: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs at unmasked positions only: logits as ``[tokens, vocab]``, presents as ``[tokens, heads, dim]``.

    Positions hidden by left padding attend to nothing, and what a runtime computes there is its own
    choice (zeros, NaN guards, anything): comparing them says nothing about the export.
    """
    keep = attention_mask.bool()
    result: dict[str, torch.Tensor] = {}
    for name, value in outputs.items():
        if name == "logits":
            result[name] = value[keep[:, -value.shape[1] :]]
        elif name.startswith("present.") and value.dim() == 4 and value.shape[2] == keep.shape[1]:
            result[name] = value.transpose(1, 2)[keep]
        else:
            result[name] = value
    return result
