"""The task table: everything acceleron knows about a task, in one place.

A backend knows how to export, load and run a model; it never needs to know which Auto class
loads a question-answering model or which axes of ``start_logits`` are dynamic. That lives here.
This module imports neither torch nor transformers at import time.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.errors import TaskNotSupportedError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel
    from transformers.utils import ModelOutput

BATCH = "batch"
SEQUENCE = "sequence"

_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TaskSpec:
    """What acceleron knows about one task.

    ``outputs`` maps each output name the backend must produce to its dynamic axes
    (axis index -> symbolic name). ``classifier`` tasks are validated on argmax agreement too.
    """

    name: str
    auto_class: str
    output_class: str
    modality: str
    outputs: Mapping[str, Mapping[int, str]]
    mapping_names: str
    aliases: tuple[str, ...] = ()
    classifier: bool = False
    generative: bool = False

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    def input_names(self, model: PreTrainedModel) -> list[str]:
        """The inputs the exported graph takes: the task's candidates that ``model.forward`` accepts."""
        if self.generative:
            from acceleron.kv_cache import CacheLayout

            return CacheLayout.from_config(model.config).input_names
        accepted = set(inspect.signature(model.forward).parameters)
        if self.modality == "text":
            return [name for name in _TEXT_INPUTS if name in accepted]
        main = getattr(model, "main_input_name", None)
        if main not in accepted:
            raise TaskNotSupportedError(
                f"{type(model).__name__} takes no {main!r} input, so acceleron cannot export it for {self.name}."
            )
        return [main]

    def dynamic_axes(self, input_names: list[str]) -> dict[str, dict[int, str]]:
        """Dynamic axes of every input and output, keyed by tensor name."""
        if self.generative:
            from acceleron.kv_cache import CacheLayout

            layers = sum(1 for name in input_names if name.startswith("past_key_values.")) // 2
            return CacheLayout(num_layers=layers, num_kv_heads=1, head_dim=1).dynamic_axes()
        axes: dict[str, dict[int, str]] = {}
        for name in input_names:
            if self.modality == "text" or name == "input_values":
                axes[name] = {0: BATCH, 1: SEQUENCE}
            else:  # pixel_values, input_features: only the batch varies
                axes[name] = {0: BATCH}
        for name, output_axes in self.outputs.items():
            axes[name] = dict(output_axes)
        return axes

    def example_inputs(
        self, model: PreTrainedModel, batch_size: int = 2, sequence_length: int = 8, seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """Deterministic example inputs for tracing and validation.

        Text inputs pad the last row, so that exports are checked with a real attention mask.
        """
        import torch

        if self.generative:
            from acceleron import kv_cache

            return kv_cache.example_inputs(model.config, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        config = model.config
        names = self.input_names(model)
        inputs: dict[str, torch.Tensor] = {}
        if self.modality == "text":
            vocab_size = int(getattr(config, "vocab_size", 100))
            low = min(5, vocab_size - 1)
            inputs["input_ids"] = torch.randint(
                low, vocab_size, (batch_size, sequence_length), generator=generator, dtype=torch.long
            )
            mask = torch.ones(batch_size, sequence_length, dtype=torch.long)
            if batch_size > 1 and sequence_length > 2:
                mask[-1, sequence_length // 2 :] = 0
            inputs["attention_mask"] = mask
            inputs["token_type_ids"] = torch.zeros(batch_size, sequence_length, dtype=torch.long)
        elif self.modality == "image":
            channels = int(getattr(config, "num_channels", 3))
            size = getattr(config, "image_size", 224)
            height, width = (size, size) if isinstance(size, int) else tuple(size)
            inputs["pixel_values"] = torch.randn(batch_size, channels, height, width, generator=generator)
        elif self.modality == "audio":
            if names[0] == "input_features":
                frames = int(getattr(config, "max_length", 1024))
                bins = int(getattr(config, "num_mel_bins", 128))
                inputs["input_features"] = torch.randn(batch_size, frames, bins, generator=generator)
            else:
                samples = max(400 * sequence_length, 4000)
                inputs["input_values"] = torch.randn(batch_size, samples, generator=generator)
        return {name: inputs[name] for name in names}

    def validation_inputs(self, model: PreTrainedModel) -> dict[str, torch.Tensor]:
        """Inputs of another batch size and length than the export's, to prove the axes are dynamic.

        Generative tasks are validated on :func:`acceleron.kv_cache.validation_cases` instead.
        """
        if self.generative:
            from acceleron import kv_cache

            return kv_cache.validation_cases(model.config)["decode"]
        return self.example_inputs(model, batch_size=3, sequence_length=11, seed=1)

    def load_torch_model(self, path: str | Path, **kwargs: Any) -> PreTrainedModel:
        """Load the PyTorch model for this task with its transformers Auto class, in eval mode."""
        import transformers

        auto = getattr(transformers, self.auto_class)
        model = auto.from_pretrained(str(path), **kwargs)
        model.eval()
        return model

    def wrap_outputs(self, outputs: Mapping[str, torch.Tensor]) -> ModelOutput:
        """Build the transformers ``ModelOutput`` a stock pipeline expects from this task's model."""
        from transformers import modeling_outputs

        cls = getattr(modeling_outputs, self.output_class)
        return cls(**{name: outputs[name] for name in self.output_names if name in outputs})


def _token_level(*names: str) -> dict[str, dict[int, str]]:
    return {name: {0: BATCH, 1: SEQUENCE} for name in names}


_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="feature-extraction",
        auto_class="AutoModel",
        output_class="BaseModelOutput",
        modality="text",
        outputs=_token_level("last_hidden_state"),
        mapping_names="MODEL_MAPPING_NAMES",
        aliases=("embeddings", "sentence-embeddings"),
    ),
    TaskSpec(
        name="text-classification",
        auto_class="AutoModelForSequenceClassification",
        output_class="SequenceClassifierOutput",
        modality="text",
        outputs={"logits": {0: BATCH}},
        mapping_names="MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        aliases=("sentiment-analysis",),
        classifier=True,
    ),
    TaskSpec(
        name="zero-shot-classification",
        auto_class="AutoModelForSequenceClassification",
        output_class="SequenceClassifierOutput",
        modality="text",
        outputs={"logits": {0: BATCH}},
        mapping_names="",  # same models as text-classification: never inferred
        aliases=("zero-shot",),
        classifier=True,
    ),
    TaskSpec(
        name="token-classification",
        auto_class="AutoModelForTokenClassification",
        output_class="TokenClassifierOutput",
        modality="text",
        outputs=_token_level("logits"),
        mapping_names="MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
        aliases=("ner",),
        classifier=True,
    ),
    TaskSpec(
        name="question-answering",
        auto_class="AutoModelForQuestionAnswering",
        output_class="QuestionAnsweringModelOutput",
        modality="text",
        outputs=_token_level("start_logits", "end_logits"),
        mapping_names="MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
        aliases=("qa",),
        classifier=True,
    ),
    TaskSpec(
        name="fill-mask",
        auto_class="AutoModelForMaskedLM",
        output_class="MaskedLMOutput",
        modality="text",
        outputs=_token_level("logits"),
        mapping_names="MODEL_FOR_MASKED_LM_MAPPING_NAMES",
        classifier=True,
    ),
    TaskSpec(
        name="image-classification",
        auto_class="AutoModelForImageClassification",
        output_class="ImageClassifierOutput",
        modality="image",
        outputs={"logits": {0: BATCH}},
        mapping_names="MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        classifier=True,
    ),
    TaskSpec(
        name="audio-classification",
        auto_class="AutoModelForAudioClassification",
        output_class="SequenceClassifierOutput",
        modality="audio",
        outputs={"logits": {0: BATCH}},
        mapping_names="MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
        classifier=True,
    ),
    TaskSpec(
        name="text-generation",
        auto_class="AutoModelForCausalLM",
        output_class="CausalLMOutputWithPast",
        modality="text",
        outputs=_token_level("logits"),
        mapping_names="MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        aliases=("causal-lm",),
        classifier=True,
        generative=True,
    ),
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _TASKS}
ALIASES: dict[str, str] = {alias: spec.name for spec in _TASKS for alias in spec.aliases}


def normalize_task(task: str) -> str:
    """The canonical name of ``task`` (aliases and case folded); raises for unknown tasks."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a string such as 'text-classification', got {type(task).__name__}")
    key = task.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise TaskNotSupportedError(
            f"unknown task {task!r}; acceleron supports: {', '.join(TASKS)} "
            f"(aliases: {', '.join(f'{a} -> {t}' for a, t in sorted(ALIASES.items()))})."
        )
    return key


def get_task(task: str) -> TaskSpec:
    """The :class:`TaskSpec` for a task name or alias."""
    return TASKS[normalize_task(task)]


def infer_task(model_dir: str | Path) -> str:
    """Infer the task of a local model folder from ``config.json``'s ``architectures``."""
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise TaskNotSupportedError(f"cannot infer the task: {config_path} does not exist. Pass task=... explicitly.")
    try:
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError) as error:
        raise TaskNotSupportedError(f"cannot infer the task: {config_path} is unreadable ({error}).") from error
    from transformers.models.auto import modeling_auto

    for architecture in architectures:
        for spec in _TASKS:
            if not spec.mapping_names:
                continue
            names = getattr(modeling_auto, spec.mapping_names, {})
            for value in names.values():
                candidates = value if isinstance(value, (tuple, list)) else (value,)
                if architecture in candidates:
                    return spec.name
    raise TaskNotSupportedError(
        f"cannot infer the task of {model_dir} from its architectures {architectures or '(none)'}; "
        f"pass task=... (one of {', '.join(TASKS)})."
    )
