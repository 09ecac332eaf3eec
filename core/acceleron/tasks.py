"""The task table and the task kinds: everything acceleron knows about a task, in one place.

A task (``text-classification``, ``text-generation``, ...) is a row of :data:`TASKS`: its Auto
class, its output class, its outputs and its :class:`TaskKind`. The kind turns a PyTorch model
into an :class:`ExportPlan` (the traceable graphs with their names, dynamic axes and example
inputs), says how inputs are prepared at run time, and which cases an export is validated on. A
backend receives the plan and only converts and runs it; it never needs to know which axes of
``start_logits`` are dynamic or how a KV cache is laid out.

The kinds: :class:`SinglePass` (one forward, one graph: classifiers, encoders),
:class:`SentenceEmbedding` (a single pass with the pooling inside the graph), :class:`CausalLM` (one
decoder-step graph with the past in and the present out, see :mod:`acceleron.kv_cache`) and
:class:`Seq2SeqLM` (an encoder graph and a decoder-step graph, see :mod:`acceleron.seq2seq`). A plan of
several graphs is exported one graph at a time, each into the subfolder named after it
(:attr:`TaskKind.graph_names`), so no backend changes for it. A task served
by models of several kinds (speech recognition: CTC encoders in one pass, Whisper's encoder-decoder)
has one row per kind, told apart by the transformers mapping of the models each serves
(:func:`task_variants`, :func:`get_task` with a config's ``architectures``).

This module imports neither torch nor transformers at import time.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acceleron.errors import InputTooLongError, InvalidInputError, TaskNotSupportedError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel
    from transformers.utils import ModelOutput

BATCH = "batch"
SEQUENCE = "sequence"
#: The time axis of a speech model's outputs: its feature encoder turns ``inputs_to_logits_ratio``
#: waveform samples (the ``sequence`` axis of ``input_values``) into one frame.
FRAMES = "frames"
#: The batch axes of a task fed by several input groups (CLIP's towers): the pipeline gives each
#: tower its own batch (candidate labels x images), so each group has its own symbolic batch.
TEXT_BATCH = "text_batch"
IMAGE_BATCH = "image_batch"
#: The spatial axes of images (and of per-pixel outputs) for tasks whose models take any image size.
HEIGHT = "height"
WIDTH = "width"

_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: The input groups of each modality, in graph input order. A single-group modality keeps the plain
#: ``batch`` axis; a mixed one names each group's batch ``<group>_batch``.
MODALITY_GROUPS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "image": ("image",),
    "audio": ("audio",),
    "image-text": ("text", "image"),
}


# ---- plans: what a backend converts ---------------------------------------------------------------


@dataclass
class GraphPlan:
    """One graph to export: a module with positional tensor inputs and a tuple of tensor outputs.

    ``example_inputs`` are ordered as ``input_names`` (trace with ``tuple(example_inputs.values())``);
    ``dynamic_axes`` maps every input and output name to ``{axis: symbolic name}``.
    """

    name: str
    module: torch.nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    example_inputs: dict[str, torch.Tensor]

    @property
    def example_args(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.example_inputs[name] for name in self.input_names)


@dataclass
class ExportPlan:
    """Everything a backend's export hook needs: the task, the float32 PyTorch model, its graphs.

    ``graphs[0]`` is the main graph; its artifact is the one the manifest names. A backend with a
    tracing need of its own (another cache wrapper, another attention implementation) returns a
    changed plan from :meth:`acceleron.Backend.prepare_plan` instead of forking the export path.
    """

    task: TaskSpec
    model: PreTrainedModel
    graphs: list[GraphPlan]

    def graph_named(self, name: str) -> GraphPlan:
        """The plan's graph called ``name`` ("" for the main one)."""
        for graph in self.graphs:
            if graph.name == name or (not name and graph is self.graphs[0]):
                return graph
        raise KeyError(f"this plan has no graph {name!r}; it has {[g.name for g in self.graphs]}")

    def single(self, graph: GraphPlan) -> ExportPlan:
        """A plan of ``graph`` alone (the core exports a multi-graph plan one graph at a time)."""
        return ExportPlan(task=self.task, model=self.model, graphs=[graph])

    @property
    def graph(self) -> GraphPlan:
        """The plan's only graph (single-graph kinds)."""
        if len(self.graphs) != 1:
            raise ValueError(f"this plan has {len(self.graphs)} graphs: {[g.name for g in self.graphs]}")
        return self.graphs[0]


@dataclass
class ValidationCase:
    """One comparison of an export with PyTorch: inputs, the reference outputs, what is compared.

    ``view`` maps a set of outputs to what is compared (e.g. only unpadded positions);
    ``cache_names`` are outputs checked elementwise only, never on argmax, and only reported
    (not failed) in reduced precision.
    """

    name: str
    inputs: dict[str, torch.Tensor]
    reference: dict[str, torch.Tensor]
    output_names: list[str]
    cache_names: list[str] = field(default_factory=list)
    view: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    #: The plan graph the case runs on ("" for the main one, ``graphs[0]``).
    graph: str = ""
    #: Whether argmax agreement of ``output_names`` is checked (None: the task's ``classifier`` flag).
    classifier: bool | None = None


class _Positional:
    """Factory of the positional wrapper every exporter traces (one definition for all backends)."""

    @staticmethod
    def wrap(model: PreTrainedModel, input_names: Sequence[str], output_names: Sequence[str]) -> torch.nn.Module:
        import torch

        names, outputs = list(input_names), list(output_names)

        class PositionalOutputs(torch.nn.Module):
            """``model(**named inputs)`` from positional ones; the task's outputs as a tuple."""

            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
                result = self.model(**dict(zip(names, args)))
                missing = [name for name in outputs if result.get(name) is None]
                if missing:
                    raise TaskNotSupportedError(
                        f"{type(self.model).__name__} returns no {', '.join(missing)} "
                        f"(it returns {', '.join(result.keys())}). Is the task right for this model?"
                    )
                return tuple(result[name] for name in outputs)

        return PositionalOutputs().eval()


# ---- task kinds --------------------------------------------------------------------------------


class TaskKind(ABC):
    """How a family of tasks is exported, fed and validated. Subclass to add a kind."""

    #: Short id, recorded in manifests and shown in reports.
    name: ClassVar[str]
    #: True when models of this kind are driven by transformers' ``generate()``.
    generates: ClassVar[bool] = False
    #: The names of the graphs its plans hold, the main one first. A kind of several graphs is exported
    #: one graph at a time, each into its own subfolder of the artifact's folder, named after the graph.
    graph_names: ClassVar[tuple[str, ...]] = ("model",)

    @abstractmethod
    def plan(self, task: TaskSpec, model: PreTrainedModel) -> ExportPlan:
        """The graphs to export for ``model`` (float32, eval mode)."""

    @abstractmethod
    def validation_cases(self, plan: ExportPlan) -> list[ValidationCase]:
        """Inputs of other shapes than the plan's examples, with PyTorch's outputs on them."""

    def graph_plan(self, task: TaskSpec, model: PreTrainedModel, graph: str = "") -> GraphPlan:
        """The plan's graph ``graph`` ("" for the main one), for backends that rebuild it from weights at
        load time (its module, names and axes). Default: from :meth:`plan`; a kind whose plan runs the
        model to make example inputs returns it without them (``example_inputs`` empty)."""
        return self.plan(task, model).graph_named(graph)

    def check_limits(self, inputs: Mapping[str, torch.Tensor], config: Any) -> None:
        """Raise :class:`~acceleron.errors.InputTooLongError` for inputs beyond the model's limits (default: none)."""
        return None

    def prepare_inputs(self, inputs: Mapping[str, torch.Tensor], declared: Sequence[str]) -> dict[str, torch.Tensor]:
        """The inputs a graph declaring ``declared`` gets at run time; the same rule on every backend.

        Declared inputs the caller did not give get their neutral value (``token_type_ids`` 0,
        ``attention_mask`` and ``pixel_mask`` 1, ``position_ids`` counted from the mask); given
        inputs the graph does not declare are dropped when they hold that neutral value, and
        refused otherwise (a ``pixel_mask`` with padding, for instance).
        """
        return normalize_inputs(inputs, declared)

    def __repr__(self) -> str:
        return f"<task kind {self.name!r}>"


def _neutral(name: str, given: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The value of input ``name`` that changes nothing, shaped after the other inputs; None if none."""
    import torch

    pixels = given.get("pixel_values")
    if name == "pixel_mask" and pixels is not None and pixels.dim() == 4:  # no padded pixels
        return torch.ones(pixels.shape[0], pixels.shape[2], pixels.shape[3], dtype=torch.long)
    like = given.get("input_ids")
    if like is None:
        like = given.get("input_values")  # a batch of waveforms: its neutral mask is all ones too
    if like is None:
        return None
    if name == "token_type_ids":
        return torch.zeros_like(like, dtype=torch.long)
    if name == "attention_mask":
        return torch.ones_like(like, dtype=torch.long)
    if name == "position_ids":
        from acceleron.kv_cache import position_ids_for

        mask = given.get("attention_mask")
        full = mask if mask is not None else torch.ones_like(like, dtype=torch.long)
        return position_ids_for(full, like.shape[1])
    return None


def normalize_inputs(inputs: Mapping[str, torch.Tensor], declared: Sequence[str]) -> dict[str, torch.Tensor]:
    """See :meth:`TaskKind.prepare_inputs`."""
    given = {name: value for name, value in inputs.items() if value is not None}
    result: dict[str, torch.Tensor] = {}
    for name in declared:
        value = given.get(name)
        if value is None:
            value = _neutral(name, given)
        if value is None:
            raise InvalidInputError(
                f"the model needs the input {name!r}, which was not given (got {', '.join(given) or 'nothing'})."
            )
        result[name] = value
    for name, value in given.items():
        if name in result:
            continue
        neutral = _neutral(name, given)
        if neutral is None or neutral.shape != value.shape or not bool((value == neutral).all()):
            raise InvalidInputError(
                f"the model takes no input {name!r} (it takes {', '.join(declared)}); "
                "leave it out, or export a model that uses it."
            )
    return result


class SinglePass(TaskKind):
    """One forward pass, one graph: the task's candidate inputs in, the task's outputs out."""

    name = "single-pass"

    def input_names(self, task: TaskSpec, model: PreTrainedModel) -> list[str]:
        """The inputs the graph takes: each input group's candidates that ``model.forward`` accepts."""
        accepted = set(inspect.signature(model.forward).parameters)
        names: list[str] = []
        for group in task.input_groups:
            names += self._group_inputs(group, task, model, accepted)
        return names

    @staticmethod
    def _group_inputs(group: str, task: TaskSpec, model: PreTrainedModel, accepted: set[str]) -> list[str]:
        if group == "text":
            return [name for name in _TEXT_INPUTS if name in accepted]
        # A mixed model's main input is its text; its image tower takes pixel_values.
        main = getattr(model, "main_input_name", None) if len(task.input_groups) == 1 else "pixel_values"
        if main not in accepted:
            raise TaskNotSupportedError(
                f"{type(model).__name__} takes no {main!r} input, so acceleron cannot export it for {task.name}."
            )
        if main == "input_values" and "attention_mask" in accepted:
            # Waveforms of a padded batch come with their mask, and stock pipelines pass it whenever the
            # feature extractor returns it (the speech-recognition pipeline always asks for it).
            return [str(main), "attention_mask"]
        return [str(main)]

    @staticmethod
    def _batch_axis(task: TaskSpec, group: str) -> str:
        return BATCH if len(task.input_groups) == 1 else f"{group}_{BATCH}"

    def dynamic_axes(self, task: TaskSpec, input_names: Sequence[str]) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for name in input_names:
            group = _input_group(name)
            batch = self._batch_axis(task, group)
            if group == "text" or name == "input_values":
                axes[name] = {0: batch, 1: SEQUENCE}
            elif group == "image" and task.any_image_size:
                axes[name] = {0: batch, 2: HEIGHT, 3: WIDTH}
            else:  # pixel_values, input_features: only the batch varies
                axes[name] = {0: batch}
        for name, output_axes in task.outputs.items():
            axes[name] = dict(output_axes)
        return axes

    def example_inputs(
        self,
        task: TaskSpec,
        model: PreTrainedModel,
        batch_size: int = 2,
        sequence_length: int = 8,
        seed: int = 0,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Deterministic inputs; text inputs pad the last row, so exports see a real attention mask.

        Images are ``image_size`` (height, width), by default the config's ``image_size`` (224 when
        it has none). In a mixed task the image batch is one larger than the text batch, so that no
        trace can mistake the two batch axes for one.
        """
        import torch

        generator = torch.Generator().manual_seed(seed)
        config = model.config
        names = self.input_names(task, model)
        inputs: dict[str, torch.Tensor] = {}
        mixed = len(task.input_groups) > 1
        if "text" in task.input_groups:
            text_config = getattr(config, "text_config", None) if mixed else config
            vocab_size = int(getattr(text_config, "vocab_size", 100))
            low = min(5, vocab_size - 1)
            inputs["input_ids"] = torch.randint(
                low, vocab_size, (batch_size, sequence_length), generator=generator, dtype=torch.long
            )
            mask = torch.ones(batch_size, sequence_length, dtype=torch.long)
            if batch_size > 1 and sequence_length > 2:
                mask[-1, sequence_length // 2 :] = 0
            inputs["attention_mask"] = mask
            inputs["token_type_ids"] = torch.zeros(batch_size, sequence_length, dtype=torch.long)
        if "image" in task.input_groups:
            image_config = getattr(config, "vision_config", None) if mixed else config
            channels = int(getattr(image_config, "num_channels", 3))
            size = getattr(image_config, "image_size", 224)
            height, width = image_size or ((size, size) if isinstance(size, int) else tuple(size))
            images = batch_size + 1 if mixed else batch_size
            inputs["pixel_values"] = torch.randn(images, channels, height, width, generator=generator)
        if "audio" in task.input_groups:
            if names[0] == "input_features":
                frames = int(getattr(config, "max_length", 1024))
                bins = int(getattr(config, "num_mel_bins", 128))
                inputs["input_features"] = torch.randn(batch_size, frames, bins, generator=generator)
            else:
                # An odd count for odd ``sequence_length``; the last row is padded (zeros, masked) like
                # a feature extractor pads a batch, so exports see a real mask.
                samples = max(400 * sequence_length, 4000) + sequence_length
                waveforms = torch.randn(batch_size, samples, generator=generator)
                mask = torch.ones(batch_size, samples, dtype=torch.long)
                if batch_size > 1:
                    mask[-1, (2 * samples) // 3 :] = 0
                    waveforms[-1, (2 * samples) // 3 :] = 0.0
                inputs["input_values"] = waveforms
                inputs["attention_mask"] = mask
        return {name: inputs[name] for name in names}

    def check_limits(self, inputs: Mapping[str, torch.Tensor], config: Any) -> None:
        """Refuse token sequences longer than the model's position table, before any runtime reads past it.

        Runtimes do not check: OpenVINO reads out of bounds (empty or wrong results, then a crash),
        ONNX Runtime and TorchScript raise their own C++ errors.
        """
        ids = inputs.get("input_ids")
        limit = position_limit(config)
        if ids is None or limit is None or ids.dim() < 2 or ids.shape[1] <= limit:
            return
        raise InputTooLongError(
            f"the input has {ids.shape[1]} tokens, but this model takes at most {limit} (its position table, "
            "max_position_embeddings); pass truncation=True to the pipeline (or the tokenizer), or split the text."
        )

    def plan(self, task: TaskSpec, model: PreTrainedModel) -> ExportPlan:
        names = self.input_names(task, model)
        outputs = list(task.output_names)
        graph = GraphPlan(
            name="model",
            module=_Positional.wrap(model, names, outputs),
            input_names=names,
            output_names=outputs,
            dynamic_axes=self.dynamic_axes(task, names),
            example_inputs=self.example_inputs(task, model),
        )
        return ExportPlan(task=task, model=model, graphs=[graph])

    def validation_cases(self, plan: ExportPlan) -> list[ValidationCase]:
        import torch

        # A task whose models take any image size is validated at another size than it was traced at.
        traced = plan.graph.example_inputs.get("pixel_values")
        other_size = (
            (traced.shape[2] + 8, traced.shape[3] + 16) if plan.task.any_image_size and traced is not None else None
        )
        inputs = self.example_inputs(
            plan.task, plan.model, batch_size=3, sequence_length=11, seed=1, image_size=other_size
        )
        with torch.inference_mode():
            outputs = plan.model(**inputs)
        reference = {name: outputs[name] for name in plan.task.output_names if outputs.get(name) is not None}
        return [ValidationCase("forward", inputs, reference, list(plan.task.output_names))]


def _input_group(name: str) -> str:
    """The input group a graph input belongs to (see :data:`MODALITY_GROUPS`)."""
    if name in _TEXT_INPUTS:
        return "text"
    return "image" if name == "pixel_values" else "audio"


#: Model types whose position ids start after the padding index (RoBERTa's scheme): the table holds
#: ``pad_token_id + 1`` fewer usable positions.
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod"})


def position_limit(config: Any) -> int | None:
    """How many tokens a text encoder's learned position table holds, or None when it has none."""
    table = getattr(config, "max_position_embeddings", None)
    if not isinstance(table, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        table -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return table


class SentenceEmbedding(SinglePass):
    """A sentence-transformers model: the encoder, its pooling and its ``Normalize`` module in one graph.

    The graph returns ``sentence_embedding`` (``[batch, dim]``) instead of token vectors; the pooling mode
    comes from the folder the model was loaded from (``1_Pooling/config.json``, see :mod:`acceleron.sentence`).
    """

    name = "sentence-embedding"

    def plan(self, task: TaskSpec, model: PreTrainedModel) -> ExportPlan:
        from acceleron.sentence import pooled_encoder

        names = self.input_names(task, model)
        graph = GraphPlan(
            name="model",
            module=pooled_encoder(model, names),
            input_names=names,
            output_names=list(task.output_names),
            dynamic_axes=self.dynamic_axes(task, names),
            example_inputs=self.example_inputs(task, model),
        )
        return ExportPlan(task=task, model=model, graphs=[graph])

    def validation_cases(self, plan: ExportPlan) -> list[ValidationCase]:
        import torch

        graph = plan.graph
        inputs = self.example_inputs(plan.task, plan.model, batch_size=3, sequence_length=11, seed=1)
        with torch.inference_mode():
            outputs = graph.module(*(inputs[name] for name in graph.input_names))
        return [ValidationCase("forward", inputs, dict(zip(graph.output_names, outputs)), list(graph.output_names))]


class CausalLM(TaskKind):
    """A decoder driven by ``generate()``: one step graph with the KV cache as flat inputs and outputs.

    The graph follows :mod:`acceleron.kv_cache`; it serves the prefill (an empty past) and every
    decode step.
    """

    name = "causal-lm"
    generates = True

    def plan(self, task: TaskSpec, model: PreTrainedModel) -> ExportPlan:
        from acceleron import kv_cache

        wrapper = kv_cache.FlatCacheCausalLM(model).eval()
        layout = wrapper.layout
        graph = GraphPlan(
            name="model",
            module=wrapper,
            input_names=layout.input_names,
            output_names=layout.output_names,
            dynamic_axes=layout.dynamic_axes(),
            example_inputs=kv_cache.example_inputs(model.config),
        )
        return ExportPlan(task=task, model=model, graphs=[graph])

    def validation_cases(self, plan: ExportPlan) -> list[ValidationCase]:
        """A prefill and the decode step after it, on text the model finds likely (see kv_cache)."""
        import functools

        import torch

        from acceleron import kv_cache

        reference_model = kv_cache.FlatCacheCausalLM(plan.model).eval()
        names = reference_model.layout.output_names
        cases = []
        for step, inputs in kv_cache.model_validation_cases(reference_model).items():
            with torch.inference_mode():
                reference = dict(zip(names, reference_model(*inputs.values())))
            view = functools.partial(kv_cache.visible, attention_mask=inputs["attention_mask"])
            cases.append(ValidationCase(step, inputs, reference, names[:1], cache_names=names[1:], view=view))
        return cases

    def prepare_inputs(self, inputs: Mapping[str, torch.Tensor], declared: Sequence[str]) -> dict[str, torch.Tensor]:
        # The generation model builds the step's flat inputs itself; only check that none is missing.
        missing = [name for name in declared if name not in inputs]
        if missing:
            raise InvalidInputError(f"a decoder step needs the inputs {', '.join(missing[:4])}")
        return {name: inputs[name] for name in declared}


class Seq2SeqLM(TaskKind):
    """An encoder-decoder driven by ``generate()``: an encoder graph and one decoder step graph.

    The graphs follow :mod:`acceleron.seq2seq`: the encoder also returns the cross-attention keys and
    values (computed once per input), and the decoder step takes them with the self-attention past.
    T5, BART, Marian (text), Whisper (speech) and VisionEncoderDecoder (images) are served alike.
    """

    name = "encoder-decoder"
    generates = True
    graph_names = ("encoder", "decoder")

    def plan(self, task: TaskSpec, model: PreTrainedModel) -> ExportPlan:
        """Both graphs, with example inputs the model computes itself: the encoder's outputs on a padded
        batch, and a decoder step of one token after a first step of three of the model's own tokens."""
        import dataclasses

        import torch

        from acceleron import seq2seq

        encoder = self.graph_plan(task, model, seq2seq.ENCODER)
        decoder = self.graph_plan(task, model, seq2seq.DECODER)
        encoder_inputs = seq2seq.encoder_example(model)
        mask = encoder_inputs.get("attention_mask")
        with torch.no_grad():  # not inference mode: tracers take these tensors as example inputs
            encoded = dict(zip(encoder.output_names, encoder.module(*encoder_inputs.values()), strict=True))
            tokens = seq2seq.greedy_tokens(model, encoder_inputs, 5)
            first = decoder.module(*seq2seq.decoder_example(model, encoded, mask, tokens[:, :3]).values())
        layout = seq2seq.Seq2SeqLayout.from_config(model.config)
        past = {name: value.clone() for name, value in zip(layout.past_names, first[1:], strict=True)}
        decoder_inputs = seq2seq.decoder_example(model, encoded, mask, tokens[:, 3:4], past)
        graphs = [
            dataclasses.replace(encoder, example_inputs=encoder_inputs),
            dataclasses.replace(decoder, example_inputs=decoder_inputs),
        ]
        return ExportPlan(task=task, model=model, graphs=graphs)

    def graph_plan(self, task: TaskSpec, model: PreTrainedModel, graph: str = "") -> GraphPlan:
        from acceleron import seq2seq

        layout = seq2seq.Seq2SeqLayout.from_config(model.config)
        if graph in ("", seq2seq.ENCODER):
            encoder = seq2seq.EncoderGraph(model).eval()
            return GraphPlan(
                name=seq2seq.ENCODER,
                module=encoder,
                input_names=list(encoder.input_names),
                output_names=["last_hidden_state", *layout.cross_names],
                dynamic_axes=seq2seq.encoder_axes(model, layout),
                example_inputs={},
            )
        if graph == seq2seq.DECODER:
            decoder = seq2seq.DecoderStep(model).eval()
            return GraphPlan(
                name=seq2seq.DECODER,
                module=decoder,
                input_names=list(decoder.input_names),
                output_names=["logits", *layout.present_names],
                dynamic_axes=seq2seq.decoder_axes(model, layout),
                example_inputs={},
            )
        raise KeyError(f"{self.name} plans have the graphs {self.graph_names}, not {graph!r}")

    def validation_cases(self, plan: ExportPlan) -> list[ValidationCase]:
        """The encoder on other shapes, then a first decoder step and the step after it, on the model's own tokens."""
        import torch

        from acceleron import seq2seq

        model = plan.model
        layout = seq2seq.Seq2SeqLayout.from_config(model.config)
        encoder = seq2seq.EncoderGraph(model).eval()
        decoder = seq2seq.DecoderStep(model).eval()
        inputs = seq2seq.encoder_example(model, batch_size=3, length=11, seed=1)
        encoder_names = ["last_hidden_state", *layout.cross_names]
        with torch.inference_mode():
            encoded = dict(zip(encoder_names, encoder(*inputs.values()), strict=True))
        mask = inputs.get("attention_mask")
        view = None
        if mask is not None:
            view = functools.partial(_unpadded_source, mask=mask, names=encoder_names)
        cases = [
            ValidationCase("encoder", inputs, encoded, encoder_names[:1], encoder_names[1:], view, "encoder", False)
        ]
        tokens = seq2seq.greedy_tokens(model, inputs, 6)
        decoder_names = ["logits", *layout.present_names]
        first_inputs = seq2seq.decoder_example(model, encoded, mask, tokens[:, :4])
        with torch.inference_mode():
            first = dict(zip(decoder_names, decoder(*first_inputs.values()), strict=True))
        past = {name: first[present].clone() for name, present in zip(layout.past_names, layout.present_names)}
        step_inputs = seq2seq.decoder_example(model, encoded, mask, tokens[:, 4:5], past)
        with torch.inference_mode():
            step = dict(zip(decoder_names, decoder(*step_inputs.values()), strict=True))
        for name, case_inputs, reference in (("first step", first_inputs, first), ("decode", step_inputs, step)):
            cases.append(
                ValidationCase(name, case_inputs, reference, decoder_names[:1], decoder_names[1:], graph="decoder")
            )
        return cases

    def prepare_inputs(self, inputs: Mapping[str, torch.Tensor], declared: Sequence[str]) -> dict[str, torch.Tensor]:
        if "decoder_input_ids" in declared:  # the model builds a step's inputs itself; check that none is missing
            missing = [name for name in declared if name not in inputs]
            if missing:
                raise InvalidInputError(f"a decoder step needs the inputs {', '.join(missing[:4])}")
            return {name: inputs[name] for name in declared}
        return normalize_inputs(inputs, declared)


def _unpadded_source(
    outputs: dict[str, torch.Tensor], mask: torch.Tensor, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Encoder outputs at unpadded source positions only (what a runtime computes at padding is its own business)."""
    keep = mask.bool()
    result: dict[str, torch.Tensor] = {}
    for name, value in outputs.items():
        if name == "last_hidden_state" and value.dim() == 3:
            result[name] = value[keep]
        elif name in names and value.dim() == 4 and value.shape[2] == keep.shape[1]:
            result[name] = value.transpose(1, 2)[keep]
        else:
            result[name] = value
    return result


SINGLE_PASS = SinglePass()
CAUSAL_LM = CausalLM()
SEQ2SEQ_LM = Seq2SeqLM()


# ---- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """What acceleron knows about one task.

    ``outputs`` maps each output name the backend must produce to its dynamic axes
    (axis index -> symbolic name). ``classifier`` tasks are validated on argmax agreement too.
    ``modality`` is a key of :data:`MODALITY_GROUPS` (``image-text`` for models with a text and an
    image tower in one graph). ``output_class`` names a class of ``transformers.modeling_outputs``,
    or a dotted path for one defined in a model's module.
    """

    name: str
    auto_class: str
    output_class: str
    modality: str
    outputs: Mapping[str, Mapping[int, str]]
    mapping_names: str
    aliases: tuple[str, ...] = ()
    classifier: bool = False
    kind: TaskKind = SINGLE_PASS
    #: True when the task's models take images of any size (convolutional ones): height and width are
    #: dynamic axes, and exports are validated at another size than they were traced at.
    any_image_size: bool = False

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    @property
    def input_groups(self) -> tuple[str, ...]:
        """The groups of inputs the graph takes (see :data:`MODALITY_GROUPS`)."""
        return MODALITY_GROUPS[self.modality]

    @property
    def generative(self) -> bool:
        """True for tasks whose models ``generate()`` (text-generation)."""
        return self.kind.generates

    def plan(self, model: PreTrainedModel) -> ExportPlan:
        """The export plan of ``model`` for this task (see :class:`TaskKind`)."""
        return self.kind.plan(self, model)

    def example_inputs(
        self, model: PreTrainedModel, batch_size: int = 2, sequence_length: int = 8, seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """Model inputs (by name) for a single-pass task: what tests and benchmarks feed a model."""
        if not isinstance(self.kind, SinglePass):
            raise TypeError(f"{self.name} is a {self.kind.name} task: its inputs come from its plan")
        return self.kind.example_inputs(self, model, batch_size, sequence_length, seed)

    def load_torch_model(self, path: str | Path, **kwargs: Any) -> PreTrainedModel:
        """Load the PyTorch model for this task with its transformers Auto class, in eval mode."""
        import transformers

        auto = getattr(transformers, self.auto_class)
        model = auto.from_pretrained(str(path), **kwargs)
        model.eval()
        return model

    def wrap_outputs(self, outputs: Mapping[str, torch.Tensor]) -> ModelOutput:
        """Build the transformers ``ModelOutput`` a stock pipeline expects from this task's model."""
        cls = _output_class(self.output_class)
        return cls(**{name: outputs[name] for name in self.output_names if name in outputs})


def _output_class(name: str) -> type[ModelOutput]:
    """``SequenceClassifierOutput`` from ``transformers.modeling_outputs``, or a dotted path's class."""
    import importlib

    module_name, _, class_name = name.rpartition(".")
    module = importlib.import_module(module_name or "transformers.modeling_outputs")
    cls: type[ModelOutput] = getattr(module, class_name)
    return cls


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
        aliases=("embeddings",),
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
    # ---- speech (single-pass: CTC) ----
    # A task may have several entries, one per family of models serving it (see task_variants): this
    # one serves CTC models. An encoder-decoder kind (Whisper) will be a second entry with the same
    # name, keyed by MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES.
    TaskSpec(
        name="automatic-speech-recognition",
        auto_class="AutoModelForCTC",
        output_class="CausalLMOutput",
        modality="audio",
        outputs={"logits": {0: BATCH, 1: FRAMES}},
        mapping_names="MODEL_FOR_CTC_MAPPING_NAMES",
        aliases=("asr", "speech-recognition"),
        classifier=True,  # the transcript is the per-frame argmax: it must agree everywhere in float32
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
        kind=CAUSAL_LM,
    ),
    # ---- vision: single-pass image models (and CLIP, text and image towers in one graph) ----
    TaskSpec(
        name="object-detection",
        auto_class="AutoModelForObjectDetection",
        output_class="transformers.models.yolos.modeling_yolos.YolosObjectDetectionOutput",
        modality="image",
        outputs={"logits": {0: BATCH}, "pred_boxes": {0: BATCH}},
        mapping_names="MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
    ),
    TaskSpec(
        name="image-segmentation",
        auto_class="AutoModelForSemanticSegmentation",
        output_class="SemanticSegmenterOutput",
        modality="image",
        outputs={"logits": {0: BATCH, 2: f"logits_{HEIGHT}", 3: f"logits_{WIDTH}"}},
        mapping_names="MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
        any_image_size=True,
    ),
    TaskSpec(
        name="depth-estimation",
        auto_class="AutoModelForDepthEstimation",
        output_class="DepthEstimatorOutput",
        modality="image",
        outputs={"predicted_depth": {0: BATCH}},
        mapping_names="MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
    ),
    TaskSpec(
        name="image-feature-extraction",
        auto_class="AutoModel",
        output_class="BaseModelOutputWithPooling",
        modality="image",
        outputs={"last_hidden_state": {0: BATCH}, "pooler_output": {0: BATCH}},
        mapping_names="MODEL_FOR_IMAGE_MAPPING_NAMES",
    ),
    TaskSpec(
        name="zero-shot-image-classification",
        auto_class="AutoModelForZeroShotImageClassification",
        output_class="transformers.models.clip.modeling_clip.CLIPOutput",
        modality="image-text",
        outputs={
            "logits_per_image": {0: IMAGE_BATCH, 1: TEXT_BATCH},
            "logits_per_text": {0: TEXT_BATCH, 1: IMAGE_BATCH},
        },
        mapping_names="MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        classifier=True,
    ),
    # ---- sentence vectors of sentence-transformers folders, pooled inside the graph ----
    TaskSpec(
        name="sentence-embedding",
        auto_class="AutoModel",
        output_class="acceleron.sentence.SentenceEmbeddingOutput",
        modality="text",
        outputs={"sentence_embedding": {0: BATCH}},
        mapping_names="",  # a config.json cannot tell: asked for by name (acceleron.embed, SentenceEncoder)
        aliases=("sentence-embeddings",),
        kind=SentenceEmbedding(),
    ),
)


def _generation_task(
    name: str, auto_class: str, modality: str, mapping: str, aliases: tuple[str, ...] = ()
) -> TaskSpec:
    """A task served by encoder-decoder models through ``generate()`` (see :class:`Seq2SeqLM`)."""
    return TaskSpec(
        name=name,
        auto_class=auto_class,
        output_class="Seq2SeqLMOutput",
        modality=modality,
        outputs=_token_level("logits"),
        mapping_names=mapping,
        aliases=aliases,
        classifier=True,  # the next token is the logits' argmax: it must agree everywhere in float32
        kind=SEQ2SEQ_LM,
    )


_TASKS += (
    # ---- encoder-decoder models, driven by generate(): text, speech (Whisper), images ----
    _generation_task(
        "text2text-generation", "AutoModelForSeq2SeqLM", "text", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"
    ),
    # The same models as text2text-generation (never inferred from a folder: ask for them by name).
    _generation_task("summarization", "AutoModelForSeq2SeqLM", "text", ""),
    _generation_task("translation", "AutoModelForSeq2SeqLM", "text", ""),
    # The second entry of speech recognition: Whisper and its relatives (the first serves CTC models).
    _generation_task(
        "automatic-speech-recognition",
        "AutoModelForSpeechSeq2Seq",
        "audio",
        "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
        aliases=("asr", "speech-recognition"),
    ),
    _generation_task(
        "image-to-text", "AutoModelForImageTextToText", "image", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"
    ),
)

#: Every task by name: its first entry in the table (its default; see :func:`task_variants`).
TASKS: dict[str, TaskSpec] = {}
for _spec in _TASKS:
    TASKS.setdefault(_spec.name, _spec)
ALIASES: dict[str, str] = {alias: spec.name for spec in _TASKS for alias in spec.aliases}


def task_variants(task: str) -> tuple[TaskSpec, ...]:
    """Every entry of the table serving ``task`` (a name or alias), the default (``TASKS[name]``) first.

    A task served by models of different kinds has one entry per kind, each with the transformers
    mapping of the models it serves: automatic-speech-recognition is single-pass for CTC models,
    and an encoder-decoder kind can serve it for Whisper without a second task name.
    """
    name = normalize_task(task)
    return tuple(spec for spec in _TASKS if spec.name == name)


@functools.cache
def architectures_in(mapping_names: str) -> frozenset[str]:
    """The model classes a transformers ``MODEL_FOR_..._MAPPING_NAMES`` table lists (empty for "")."""
    if not mapping_names:
        return frozenset()
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in getattr(modeling_auto, mapping_names, {}).values():
        names.update(value if isinstance(value, (tuple, list)) else (value,))
    return frozenset(names)


def select_variant(variants: Sequence[TaskSpec], architectures: Sequence[str]) -> TaskSpec:
    """The entry whose mapping lists one of ``architectures`` (a config's), else the first (the default)."""
    if len(variants) > 1:
        for spec in variants:
            if any(name in architectures_in(spec.mapping_names) for name in architectures):
                return spec
    return variants[0]


def get_task(task: str, architectures: Sequence[str] = ()) -> TaskSpec:
    """The :class:`TaskSpec` for a task name or alias; ``architectures`` (a config's) pick among its variants."""
    return select_variant(task_variants(task), architectures)


def translation_languages(task: str) -> tuple[str, str] | None:
    """``("en", "fr")`` for ``translation_en_to_fr`` (transformers' way of naming a translation's languages)."""
    match = _TRANSLATION.fullmatch(task.strip().lower().replace("-", "_")) if isinstance(task, str) else None
    return (match.group(1), match.group(2)) if match else None


_TRANSLATION = re.compile(r"translation_([a-z][a-z0-9]*(?:_[a-z0-9]+)*?)_to_([a-z][a-z0-9]*(?:_[a-z0-9]+)*)")


def normalize_task(task: str) -> str:
    """The canonical name of ``task`` (aliases and case folded); raises for unknown tasks.

    ``translation_xx_to_yy`` names the translation task (the languages are the pipeline's business).
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a string such as 'text-classification', got {type(task).__name__}")
    if translation_languages(task) is not None:
        return "translation"
    key = task.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise TaskNotSupportedError(
            f"unknown task {task!r}; acceleron supports: {', '.join(TASKS)} "
            f"(aliases: {', '.join(f'{a} -> {t}' for a, t in sorted(ALIASES.items()))})."
        )
    return key


def infer_task(model_dir: str | Path) -> str:
    """Infer the task of a local model folder from ``config.json``'s ``architectures``."""
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise TaskNotSupportedError(f"cannot infer the task: {config_path} does not exist. Pass task=... explicitly.")
    try:
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError) as error:
        raise TaskNotSupportedError(f"cannot infer the task: {config_path} is unreadable ({error}).") from error
    # An architecture may be in several mappings (ViTModel: every base model, and the image ones);
    # the narrowest mapping holding it names the task.
    for architecture in architectures:
        matches: list[tuple[int, int, str]] = []
        for order, spec in enumerate(_TASKS):
            names = architectures_in(spec.mapping_names)
            if architecture in names:
                matches.append((len(names), order, spec.name))
        if matches:
            return min(matches)[2]
    raise TaskNotSupportedError(
        f"cannot infer the task of {model_dir} from its architectures {architectures or '(none)'}; "
        f"pass task=... (one of {', '.join(TASKS)})."
    )
