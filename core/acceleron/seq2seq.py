"""The encoder-decoder protocol every backend's graphs follow: an encoder graph and one decoder step graph.

Two graphs, plain tensors in and out, the same for every backend:

``encoder``
    inputs: the model's main input (``input_ids`` and ``attention_mask`` for text, ``input_features``
    for Whisper, ``pixel_values`` for images); outputs: ``last_hidden_state`` [batch, source, hidden]
    and, per decoder layer ``i``, ``cross.{i}.key`` and ``cross.{i}.value`` [batch, heads, source,
    head_dim]: the cross-attention keys and values, computed once per input from the encoder output
    by the decoder's own projections.
``decoder``
    inputs: ``decoder_input_ids`` [batch, sequence], ``encoder_attention_mask`` [batch, source] (for
    models whose cross-attention is masked), then per layer ``past.{i}.key`` / ``past.{i}.value``
    [batch, heads, past, head_dim] (self-attention, length 0 on the first step) and ``cross.{i}.key`` /
    ``cross.{i}.value`` (the encoder graph's, fed unchanged every step); outputs: ``logits`` [batch,
    sequence, vocab] and ``present.{i}.key`` / ``present.{i}.value`` [batch, heads, past + sequence,
    head_dim].

One decoder graph serves the first step and every later one. The cross-attention keys and values
are never recomputed or copied by a step: the model hands the same tensors to every step, and beam
search, whose beams of one input share them, reorders only the self-attention past.

:class:`EncoderGraph` and :class:`DecoderStep` wrap a transformers ``...ForConditionalGeneration``
(T5, BART, Marian, Whisper, VisionEncoderDecoder) into those signatures; they are what exporters
trace. They rely on transformers' ``EncoderDecoderCache``: a cross-attention layer marked as
updated reads its keys and values from the cache instead of projecting the encoder output.

Importing this module imports torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import BaseModelOutput

from acceleron.kv_cache import first_attribute

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

BATCH = "batch"
SEQUENCE = "sequence"
SOURCE = "source_sequence"
PAST = "past_sequence"
TOTAL = "total_sequence"

ENCODER = "encoder"
DECODER = "decoder"


@dataclass(frozen=True)
class Seq2SeqLayout:
    """The decoder's caches: layers, attention heads, head size (self- and cross-attention alike)."""

    num_layers: int
    num_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> Seq2SeqLayout:
        """Read the layout from a T5, BART, Marian, Whisper or VisionEncoderDecoder config."""
        decoder = _decoder_config(config)
        layers = first_attribute(
            decoder, "decoder_layers", "num_decoder_layers", "num_hidden_layers", "n_layer", "num_layers"
        )
        heads = first_attribute(decoder, "decoder_attention_heads", "num_heads", "num_attention_heads", "n_head")
        head_dim = getattr(decoder, "d_kv", None) or getattr(decoder, "head_dim", None)
        if not head_dim:
            head_dim = first_attribute(decoder, "d_model", "hidden_size", "n_embd") // heads
        return cls(num_layers=int(layers), num_heads=int(heads), head_dim=int(head_dim))

    def names(self, prefix: str) -> list[str]:
        return [f"{prefix}.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    @property
    def cross_names(self) -> list[str]:
        return self.names("cross")

    @property
    def past_names(self) -> list[str]:
        return self.names("past")

    @property
    def present_names(self) -> list[str]:
        return self.names("present")


def _decoder_config(config: Any) -> Any:
    """The config describing the decoder: its own (T5, BART, Whisper) or the ``decoder`` part (VisionEncoderDecoder).

    Not ``get_text_config(decoder=True)``: for BART it returns a config with the default layer count.
    """
    part = getattr(config, "decoder", None)
    return part if part is not None and hasattr(part, "to_dict") else config


def encoder_input_names(model: PreTrainedModel) -> list[str]:
    """The encoder graph's inputs: the model's main input, and the attention mask for text."""
    main = str(model.main_input_name)
    if main == "input_ids":
        return ["input_ids", "attention_mask"]
    return [main]


def masks_source(model: PreTrainedModel) -> bool:
    """Whether the decoder's cross-attention takes the encoder's attention mask (not Whisper's, not images')."""
    return encoder_input_names(model) == ["input_ids", "attention_mask"]


def decoder_input_names(model: PreTrainedModel, layout: Seq2SeqLayout) -> list[str]:
    mask = ["encoder_attention_mask"] if masks_source(model) else []
    return ["decoder_input_ids", *mask, *layout.past_names, *layout.cross_names]


def layers_cache(tensors: tuple[torch.Tensor, ...] | list[torch.Tensor], config: Any) -> DynamicCache:
    """A ``DynamicCache`` whose layers hold ``tensors`` (key, value per layer) as they are.

    The tensors are put into the layers directly rather than concatenated onto empty ones, which
    every tracer (OpenVINO's included) follows.
    """
    cache = DynamicCache(config=config)
    layers = len(tensors) // 2
    while len(cache.layers) < layers:
        cache.layers.append(DynamicLayer())
    for i in range(layers):
        layer = cache.layers[i]
        if not isinstance(layer, DynamicLayer):
            raise TypeError(f"cache layer {i} is a {type(layer).__name__}; acceleron fills full-attention layers only")
        keys, values = tensors[2 * i], tensors[2 * i + 1]
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return cache


def layer_tensors(cache: Any) -> list[torch.Tensor]:
    """The key and value tensors of every layer of ``cache`` (a ``DynamicCache``), in flat order."""
    tensors: list[torch.Tensor] = []
    for i, layer in enumerate(cache.layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise TypeError(f"cache layer {i} ({type(layer).__name__}) holds no key/value tensors")
        tensors += [keys, values]
    return tensors


class _TakeFirstLayer(DynamicLayer):
    """A ``DynamicLayer`` whose first update stores the states as they are (``DynamicLayer`` concatenates them
    onto an empty 1-D tensor, which OpenVINO's frontend rejects); later updates concatenate as usual."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states, value_states
            return self.keys, self.values
        return super().update(key_states, value_states, *args, **kwargs)


def _empty_cache(layers: int) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [_TakeFirstLayer() for _ in range(layers)]
    return cache


class SharedCrossCache(EncoderDecoderCache):
    """An ``EncoderDecoderCache`` whose cross-attention part is the same for every beam of an input.

    Beam search reorders beams within each input, and all beams of an input share the encoder's keys
    and values: reordering them would copy them every step for nothing. Only the self-attention past
    is reordered.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def _encoder_placeholder(model: PreTrainedModel, cross_key: torch.Tensor) -> torch.Tensor:
    """What the decoder is given as ``encoder_hidden_states`` once its cross-attention reads the cache.

    Only its batch and length are read (for the cross-attention mask), so a [batch, source, 1] view
    of the keys serves; a model that projects the encoder output first (VisionEncoderDecoder with
    ``enc_to_dec_proj``) needs the encoder's width.
    """
    placeholder = cross_key[:, 0, :, :1]
    projection = getattr(model, "enc_to_dec_proj", None)
    if projection is not None:
        placeholder = placeholder.expand(-1, -1, int(projection.in_features))
    return placeholder


class EncoderGraph(torch.nn.Module):
    """``(main input[, attention_mask]) -> (last_hidden_state, *cross)``: the encoder and the cross keys/values.

    The cross-attention keys and values come from one decoder pass on a start token with an empty
    cache: the decoder's layers project the encoder output into the cache, and only that projection
    reaches the graph's outputs (tracers drop the rest of the pass).
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.layout = Seq2SeqLayout.from_config(model.config)
        self.input_names = encoder_input_names(model)
        self.start = int(_decoder_start(model.config))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names, inputs))
        encoder = self.model.get_encoder()
        encoded = encoder(**named, return_dict=True)
        hidden = encoded.last_hidden_state
        batch = hidden.shape[0]
        start = torch.full((batch, 1), self.start, dtype=torch.long, device=hidden.device)
        layers = self.layout.num_layers
        cache = EncoderDecoderCache(_empty_cache(layers), _empty_cache(layers))
        kwargs: dict[str, Any] = {}
        if "attention_mask" in named:
            kwargs["attention_mask"] = named["attention_mask"]
        self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            decoder_input_ids=start,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
            **kwargs,
        )
        cross = layer_tensors(cache.cross_attention_cache)
        if len(cross) != 2 * self.layout.num_layers:
            raise ValueError(
                f"{type(self.model).__name__} filled {len(cross) // 2} cross-attention cache layers, "
                f"its config says {self.layout.num_layers}"
            )
        return (hidden, *cross)


class DecoderStep(torch.nn.Module):
    """``(decoder_input_ids[, encoder_attention_mask], *past, *cross) -> (logits, *present)``: one decoder step."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.layout = Seq2SeqLayout.from_config(model.config)
        self.input_names = decoder_input_names(model, self.layout)
        self.masked = masks_source(model)

    def forward(self, decoder_input_ids: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers = self.layout.num_layers
        mask = rest[0] if self.masked else None
        tensors = rest[1:] if self.masked else rest
        past, cross = tensors[: 2 * layers], tensors[2 * layers :]
        config = self.model.config
        cache = SharedCrossCache(layers_cache(past, config), layers_cache(cross, config))
        for i in range(layers):
            cache.is_updated[i] = True
        kwargs: dict[str, Any] = {}
        if mask is not None:
            kwargs["attention_mask"] = mask
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=_encoder_placeholder(self.model, cross[0])),
            decoder_input_ids=decoder_input_ids,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
            **kwargs,
        )
        return (out.logits, *layer_tensors(out.past_key_values.self_attention_cache))


def _decoder_start(config: Any) -> int:
    for owner in (config, _decoder_config(config)):
        for name in ("decoder_start_token_id", "bos_token_id", "pad_token_id"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                return value
    return 0


# ---- example and validation inputs ------------------------------------------------------------


def encoder_example(
    model: PreTrainedModel, batch_size: int = 2, length: int = 7, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Deterministic encoder inputs; text pads the last row (so a real mask is traced)."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    names = encoder_input_names(model)
    if names[0] == "input_ids":
        vocab = int(getattr(config, "vocab_size", 100))
        ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, length), generator=generator)
        mask = torch.ones(batch_size, length, dtype=torch.long)
        if batch_size > 1 and length > 2:
            mask[-1, length // 2 :] = 0
        return {"input_ids": ids, "attention_mask": mask}
    if names[0] == "input_features":
        bins = int(getattr(config, "num_mel_bins", 80))
        frames = 2 * int(getattr(config, "max_source_positions", 1500))  # Whisper takes exactly 30 s
        return {"input_features": torch.randn(batch_size, bins, frames, generator=generator)}
    if names[0] == "pixel_values":
        vision = getattr(config, "encoder", config)
        size = getattr(vision, "image_size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        channels = int(getattr(vision, "num_channels", 3))
        return {"pixel_values": torch.randn(batch_size, channels, height, width, generator=generator)}
    raise ValueError(f"{type(model).__name__}: acceleron cannot make example inputs for its encoder input {names[0]!r}")


def encoder_axes(model: PreTrainedModel, layout: Seq2SeqLayout) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name in encoder_input_names(model):
        axes[name] = {0: BATCH, 1: SOURCE} if name in ("input_ids", "attention_mask") else {0: BATCH}
    axes["last_hidden_state"] = {0: BATCH, 1: SOURCE}
    axes.update({name: {0: BATCH, 2: SOURCE} for name in layout.cross_names})
    return axes


def decoder_axes(model: PreTrainedModel, layout: Seq2SeqLayout) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {
        "decoder_input_ids": {0: BATCH, 1: SEQUENCE},
        "logits": {0: BATCH, 1: SEQUENCE},
    }
    if masks_source(model):
        axes["encoder_attention_mask"] = {0: BATCH, 1: SOURCE}
    axes.update({name: {0: BATCH, 2: PAST} for name in layout.past_names})
    axes.update({name: {0: BATCH, 2: SOURCE} for name in layout.cross_names})
    axes.update({name: {0: BATCH, 2: TOTAL} for name in layout.present_names})
    return axes


def decoder_example(
    model: PreTrainedModel,
    encoded: dict[str, torch.Tensor],
    mask: torch.Tensor | None,
    decoder_ids: torch.Tensor,
    past: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The decoder step's inputs by name: tokens, source mask, past (empty by default), cross keys/values."""
    layout = Seq2SeqLayout.from_config(model.config)
    batch = decoder_ids.shape[0]
    cross = {name: encoded[name] for name in layout.cross_names}
    if past is None:
        like = cross[layout.cross_names[0]]
        empty = torch.zeros(batch, layout.num_heads, 0, layout.head_dim, dtype=like.dtype)
        past = dict.fromkeys(layout.past_names, empty)
    inputs: dict[str, torch.Tensor] = {"decoder_input_ids": decoder_ids}
    if masks_source(model):
        if mask is None:
            raise ValueError("this model's decoder needs the encoder's attention mask")
        inputs["encoder_attention_mask"] = mask
    for name in layout.past_names:
        inputs[name] = past[name]
    inputs.update(cross)
    return inputs


def greedy_tokens(model: PreTrainedModel, encoder_inputs: dict[str, torch.Tensor], length: int) -> torch.Tensor:
    """``length`` decoder tokens per row: the start token, then the model's own greedy continuation."""
    config = model.config
    batch = next(iter(encoder_inputs.values())).shape[0]
    ids = torch.full((batch, 1), _decoder_start(config), dtype=torch.long)
    with torch.no_grad():
        encoded = model.get_encoder()(**encoder_inputs, return_dict=True)
        mask = encoder_inputs.get("attention_mask")
        while ids.shape[1] < length:
            kwargs = {"attention_mask": mask} if mask is not None else {}
            logits = model(encoder_outputs=encoded, decoder_input_ids=ids, use_cache=False, **kwargs).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids
