"""Text generation on any backend: an :class:`OptimizedModel` that transformers' ``generate()`` drives.

The backend runs one flat graph per step (see :mod:`acceleron.kv_cache`); this class turns the
``DynamicCache`` that ``generate()`` carries into the graph's flat past tensors and the graph's
``present.*`` outputs back into a new ``DynamicCache``. Each ``generate()`` call owns its cache, so
two threads may generate from one model at once. Importing this module imports torch and
transformers; the core imports it only for generative tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from acceleron import kv_cache
from acceleron.modeling import OptimizedModel

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

_generative_classes: dict[type[OptimizedModel], type[OptimizedModel]] = {}


class GenerativeModel(OptimizedModel, GenerationMixin):  # type: ignore[misc]
    """The model class of generative tasks (``text-generation``): ``generate()`` and pipelines work."""

    backend_name = "generative"  # replaced in every per-backend subclass made by generative_class_for
    _is_stateful = False
    _supports_cache_class = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config.is_encoder_decoder = False
        self.layout = kv_cache.CacheLayout.from_config(self.config)
        self.generation_config = _generation_config(self.preprocessor_dir, self.config)  # type: ignore[assignment]
        self.main_input_name = "input_ids"

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def get_experts_implementation(self) -> dict[str, str]:
        """No mixture-of-experts kernels to switch: the backend runs the whole graph."""
        return {}

    def set_experts_implementation(self, implementation: Any) -> None:
        """Nothing to switch (see :meth:`get_experts_implementation`)."""

    @property
    def cache_dtype(self) -> torch.dtype:
        """The dtype of the past tensors fed to the graph."""
        return self.dtype if self.dtype.is_floating_point else torch.float32

    def prepare_inputs_for_generation(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The step's inputs: only the tokens the cache does not hold yet, with their positions."""
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_length:
            input_ids = input_ids[:, past_length:]
        if attention_mask is None:
            attention_mask = torch.ones(
                input_ids.shape[0], past_length + input_ids.shape[1], dtype=torch.long, device=input_ids.device
            )
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": kv_cache.position_ids_for(attention_mask, input_ids.shape[1]),
            "past_key_values": past_key_values,
            "use_cache": True,
        }

    def __call__(self, *args: Any, **inputs: Any) -> CausalLMOutputWithPast:
        return self.forward(*args, **inputs)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """One step: run the backend on the new tokens and the cache; returns logits and the new cache."""
        batch, length = input_ids.shape
        past = kv_cache.to_flat(past_key_values, self.layout, batch, self.cache_dtype)
        past_length = next(iter(past.values())).shape[2] if past else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, past_length + length, dtype=torch.long)
        if position_ids is None:
            position_ids = kv_cache.position_ids_for(attention_mask, length)
        flat = {
            "input_ids": input_ids.long(),
            "attention_mask": attention_mask.long(),
            "position_ids": position_ids.long(),
            **past,
        }
        outputs = self.backend._forward(self.session, flat, self.task)
        return CausalLMOutputWithPast(
            logits=outputs["logits"],
            past_key_values=kv_cache.from_flat(outputs, self.layout, self.config) if use_cache else None,
        )


def _generation_config(folder: Path, config: Any) -> GenerationConfig:
    """``generation_config.json`` from the model folder, else the defaults the config implies."""
    if (Path(folder) / "generation_config.json").is_file():
        try:
            return GenerationConfig.from_pretrained(str(folder))
        except (OSError, ValueError):
            pass
    return GenerationConfig.from_model_config(config)


def generative_class_for(cls: type[OptimizedModel]) -> type[OptimizedModel]:
    """The generative subclass of a backend's model class (created once per class)."""
    if issubclass(cls, GenerativeModel):
        return cls
    made = _generative_classes.get(cls)
    if made is None:
        name = cls.__name__.removesuffix("Model") + "ForCausalLM"
        made = type(name, (GenerativeModel, cls), {"backend_name": cls.backend_name, "__module__": cls.__module__})
        _generative_classes[cls] = made
    return made
