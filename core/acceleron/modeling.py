"""The model classes: transformers-compatible models whose forward runs on a backend's session.

:class:`OptimizedModel` serves single-pass tasks; :class:`CausalLMModel` adds what transformers'
``generate()`` needs for causal language models. ``OptimizedModel.from_pretrained`` returns the
class the task's kind calls for. A model holds its backend *instance*, its typed options and its
session; calling it returns the task's transformers ``ModelOutput``, so stock pipelines pre- and
post-process it unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast, Seq2SeqLMOutput

from acceleron import kv_cache
from acceleron.backend import Backend, Options, Session
from acceleron.cache import ExportCache, describe_files, write_manifest
from acceleron.decoding import DecodeState, RuntimeCache, start_state
from acceleron.errors import AcceleronError, ArtifactNotFoundError, InferenceError, InvalidInputError
from acceleron.loading import LoadedParts, load_parts
from acceleron.sources import check_inside, copy_preprocessor_files, offline
from acceleron.tasks import CausalLM, Seq2SeqLM, TaskKind, TaskSpec
from acceleron.threads import serial_torch_ops

if TYPE_CHECKING:
    from transformers import PretrainedConfig
    from transformers.cache_utils import Cache
    from transformers.utils import ModelOutput


class OptimizedModel:
    """A model on a backend, usable alone or in a transformers pipeline.

    ``OptimizedModel.from_pretrained(id_or_dir, accelerator="ort")``; ``model(**inputs)`` returns
    a transformers ``ModelOutput``.
    """

    #: The task kinds this class serves (the base class: every kind without a class of its own).
    kinds: ClassVar[tuple[type[TaskKind], ...]] = ()

    def __init__(self, parts: LoadedParts) -> None:
        self.backend: Backend = parts.backend
        self.session: Session = parts.session
        #: Every graph's session by name (one for single-graph kinds: ``session``).
        self.sessions: dict[str, Session] = dict(parts.sessions) or {parts.task.kind.graph_names[0]: parts.session}
        #: Every graph's artifact by name (one for single-graph kinds: ``artifact``).
        self.artifacts: dict[str, Path] = dict(parts.artifacts) or {parts.task.kind.graph_names[0]: parts.artifact}
        self.config: PretrainedConfig = parts.config
        self.task: TaskSpec = parts.task
        self.artifact = parts.artifact
        self.preprocessor_dir = parts.preprocessor_dir
        self.options: Options = parts.options
        self.manifest = parts.manifest
        self.generation_config: GenerationConfig | None = None
        self.main_input_name = {"text": "input_ids", "image": "pixel_values"}.get(
            parts.task.modality, self.session.input_names[0] if self.session.input_names else "input_values"
        )

    # ---- loading ----

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike[str],
        *,
        accelerator: str | Backend | None = None,
        export: bool | None = None,
        task: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        subfolder: str = "",
        file_name: str | None = None,
        export_cache: ExportCache | str | os.PathLike[str] | None = None,
        validate: bool = True,
        strict: bool = False,
        **backend_options: Any,
    ) -> OptimizedModel:
        """Load ``model_id_or_path`` on a backend.

        :param accelerator: a backend name or alias, a :class:`~acceleron.Backend` instance, or None
            for the best installed backend that supports the task.
        :param export: None loads the backend's artifact when the source has one and exports the
            PyTorch weights otherwise; True always exports; False never does (and raises if there
            is nothing to load).
        :param task: the task (or an alias); inferred from the folder when omitted.
        :param cache_dir: the Hugging Face hub cache; ``export_cache`` is acceleron's export cache.
        :param validate: compare a fresh export with PyTorch; ``strict`` raises when it differs.
        :param backend_options: ``device``, ``dtype``, ``num_threads`` and backend-specific options.
        """
        parts = load_parts(
            model_id_or_path,
            accelerator=accelerator,
            task=task,
            options=backend_options,
            export=export,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
            subfolder=subfolder,
            file_name=file_name,
            export_cache=export_cache,
            validate=validate,
            strict=strict,
        )
        return model_class_for(parts.task, parts.config)(parts)

    # ---- what transformers pipelines use ----

    @property
    def name_or_path(self) -> str:
        return str(self.preprocessor_dir)

    @property
    def device(self) -> torch.device:
        device = self.options.device
        return torch.device(device if device.startswith(("cuda", "xpu")) else "cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype inputs are given in (pipelines cast floating inputs to it)."""
        return getattr(torch, self.session.input_dtype)

    @property
    def input_modalities(self) -> tuple[str, ...]:
        return self.task.input_groups

    @classmethod
    def can_generate(cls) -> bool:
        return False

    def to(self, device: Any = None, *args: Any, **kwargs: Any) -> OptimizedModel:
        if device is None or torch.device(device) == self.device:
            return self
        raise AcceleronError(
            f"{type(self).__name__} runs on {self.device}; to run on {device}, "
            f"load it again with device={str(device)!r}."
        )

    def eval(self) -> OptimizedModel:
        return self

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        return self.forward(*args, **inputs)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check ``inputs`` against the model's limits, prepare them for the session (the kind's rule, the
        session's input dtype) and run it."""
        self.task.kind.check_limits(inputs, self.config)
        prepared = self.task.kind.prepare_inputs(inputs, self.session.input_names)
        dtype = self.dtype
        if dtype != torch.float32:
            prepared = {name: v.to(dtype) if v.is_floating_point() else v for name, v in prepared.items()}
        return self._forward_on_session(prepared)

    def _forward_on_session(self, prepared: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The session's ``_forward``; a runtime's own exception becomes an :class:`InferenceError`.

        Runtimes raise whatever they raise (ONNX Runtime's C++ text, TorchScript's interpreter
        trace); the caller gets one exception class, our sentence first, the runtime's text after it.
        """
        try:
            return self.session._forward(prepared)
        except AcceleronError:
            raise
        except Exception as error:
            raise InferenceError(self._inference_failure(prepared, error)) from error

    def _inference_failure(self, prepared: Mapping[str, torch.Tensor], error: Exception) -> str:
        shapes = ", ".join(
            f"{name}: {str(value.dtype).replace('torch.', '')}{list(value.shape)}"
            if isinstance(value, torch.Tensor)
            else f"{name}: {type(value).__name__}"
            for name, value in prepared.items()
        )
        limits = []
        vocab = getattr(self.config, "vocab_size", None)
        positions = getattr(self.config, "max_position_embeddings", None)
        if isinstance(vocab, int):
            limits.append(f"token ids below {vocab}")
        if isinstance(positions, int):
            limits.append(f"at most {positions} positions (pass truncation=True to a pipeline)")
        check = "Check that the inputs fit the model" + (f": {'; '.join(limits)}" if limits else "")
        compare = "" if self.backend.name == "torch" else "; compare with accelerator='torch'"
        return (
            f"the {self.backend.name!r} backend failed to run {self.task.name} on inputs {{{shapes}}}. "
            f"{check}{compare}. The runtime said: {type(error).__name__}: {error}"
        )

    def forward(self, **inputs: Any) -> ModelOutput:
        """Run the backend on model inputs (tensors by name); returns the task's ``ModelOutput``."""
        tensors = {name: value for name, value in inputs.items() if value is not None}
        if not tensors:
            raise InvalidInputError(f"{type(self).__name__} got no inputs")
        for name, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"input {name!r} must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() == 0 or value.shape[0] == 0:
                raise InvalidInputError(f"input {name!r} is an empty batch (shape {tuple(value.shape)})")
        return self.task.wrap_outputs(self.run(tensors))

    def report(self) -> dict[str, Any]:
        """What this model is and runs with: backend, task, artifact, runtime settings, validation."""
        return {
            "backend": self.backend.name,
            "task": self.task.name,
            "artifact": str(self.artifact),
            "runtime": self.session.describe(),
            "validation": self.manifest.get("validation"),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self.backend.name!r}, task={self.task.name!r}, "
            f"artifact={str(self.artifact)!r})"
        )

    # ---- saving ----

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write config, preprocessors, artifact and manifest so that ``from_pretrained`` loads it as is.

        Files are written to a temporary folder first and moved in at the end, so a failure leaves
        the target as it was. Files are copied, never links; an artifact file that links outside its
        folder is refused (:class:`~acceleron.errors.UnsafePathError`) and a preprocessor file that
        does is skipped with a warning, so a hostile model folder cannot smuggle other files into a
        saved or uploaded model.
        """
        target = Path(save_directory).expanduser()
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(f"{target} exists and is not a folder")
        target.mkdir(parents=True, exist_ok=True)
        staging = target / f".acceleron-save-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            # One graph: its files from the artifact's folder. Several: each graph's subfolder, as exported.
            several = len(self.artifacts) > 1
            artifact_root = Path(self.preprocessor_dir) if several else self.artifact.parent
            relative_artifacts: dict[str, str] = {}
            for name, artifact in self.artifacts.items():
                for path in self.backend.artifact_files(artifact):
                    check_inside(path, artifact_root, "the artifact file")
                    relative = path.relative_to(artifact_root)
                    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, staging / relative)
                relative_artifacts[name] = artifact.relative_to(artifact_root).as_posix()
            self.config.save_pretrained(staging)
            if self.generation_config is not None:
                self.generation_config.save_pretrained(staging)
            copy_preprocessor_files(self.preprocessor_dir, staging)
            manifest = {
                key: value
                for key, value in self.manifest.items()
                if key not in {"files", "key", "build_seconds", "graphs"}
            }
            manifest.update(
                task=self.task.name,
                backend=self.backend.name,
                artifact=next(iter(relative_artifacts.values())) if several else self.artifact.name,
                options=self.options.artifact_key(),
            )
            if several:
                manifest["graphs"] = relative_artifacts
            # Inode numbers and ctimes mean nothing in another folder (and are nobody's business on the hub).
            files = describe_files(staging)
            manifest["files"] = {
                name: {k: v for k, v in info.items() if k != "identity"} for name, info in files.items()
            }
            write_manifest(staging, manifest)
            for path in sorted(staging.rglob("*"), key=lambda p: len(p.parts)):
                if path.is_file():
                    destination = target / path.relative_to(staging)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
    ) -> Any:
        """Upload the saved model to the hub in one commit (``HfApi.upload_folder``); returns its info."""
        if not isinstance(repo_id, str) or not repo_id.strip():
            raise ValueError("repo_id must be a non-empty string such as 'user/model-ort'")
        if offline():
            raise AcceleronError("HF_HUB_OFFLINE is set: unset it to push to the hub, or save_pretrained() instead.")
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="acceleron-push-") as folder:
            self.save_pretrained(folder)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message or f"Upload {self.task.name} model for acceleron[{self.backend.name}]",
            )


class _OffRuntimeThreads:
    """``generate()`` for the generating models: transformers' own, with its per-token torch work (argmax,
    sampling, logits processors, stop checks) on one thread when no graph computes with torch's threads
    (the runtime has its own: :mod:`acceleron.threads`)."""

    sessions: dict[str, Session]

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        own_threads = not any(session.computes_with_torch for session in self.sessions.values())
        with serial_torch_ops() if own_threads else contextlib.nullcontext():
            return super().generate(*args, **kwargs)  # type: ignore[misc]


class CausalLMModel(_OffRuntimeThreads, OptimizedModel, GenerationMixin):  # type: ignore[misc]
    """A causal LM on a backend: ``generate()`` and text-generation pipelines work.

    Each generation's KV cache is a :class:`~acceleron.decoding.DecodeState` the backend keeps where
    its runtime wants it (inside a stateful request, in bound buffers, or as the flat graph's present
    tensors: :mod:`acceleron.decoding`); ``generate()`` carries it as a
    :class:`~acceleron.decoding.RuntimeCache`. Each ``generate()`` call owns its state, so two threads
    may generate from one model at once.
    """

    kinds = (CausalLM,)
    #: The most prompt tokens one step runs (see :meth:`forward`): attention then spans 256 x n scores
    #: instead of n x n for an n-token prompt; shorter prompts run in one step as before. 256 rather
    #: than 512: an 8,000-token prompt on ort peaked at 3.4 GB instead of 3.9 GB, in the same time.
    prefill_chunk: int = 256
    _is_stateful = False
    _supports_cache_class = True

    def __init__(self, parts: LoadedParts) -> None:
        super().__init__(parts)
        self.config.is_encoder_decoder = False
        self.layout = kv_cache.CacheLayout.from_config(self.config)
        missing = [n for n in self.layout.input_names if n not in self.session.input_names]
        missing += [n for n in self.layout.output_names if n not in self.session.output_names]
        if missing:
            raise ArtifactNotFoundError(
                f"{self.artifact} is not a text-generation graph with a KV cache (it lacks {', '.join(missing[:4])}"
                f"{', ...' if len(missing) > 4 else ''}); export the model with task='text-generation'."
            )
        self.generation_config = _generation_config(self.preprocessor_dir, self.config)
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
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": kv_cache.position_ids_for(attention_mask, input_ids.shape[1]),
            "past_key_values": past_key_values,
            "use_cache": True,
        }
        if "logits_to_keep" in kwargs:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Run the backend on the new tokens and the cache; returns logits and the cache extended by them.

        The cache is a :class:`~acceleron.decoding.RuntimeCache`: the backend keeps the keys and values
        where its runtime wants them (:mod:`acceleron.decoding`). A transformers ``DynamicCache`` handed
        in is copied into a new one. A long prompt runs in steps of at most :attr:`prefill_chunk` tokens,
        each with the cache of the ones before: the same result as one step, without the memory of
        attention over the whole prompt at once (quadratic in its length on runtimes without a fused
        attention kernel). ``logits_to_keep`` (``generate()`` passes 1) keeps only the last positions'
        logits, and a backend that can skips computing the others; 0 keeps all.
        """
        batch, length = input_ids.shape
        cache = self._runtime_cache(past_key_values, batch)
        state = cache.state
        past_length = state.length
        if attention_mask is None:
            attention_mask = torch.ones(batch, past_length + length, dtype=torch.long)
        if attention_mask.shape != (batch, past_length + length):
            raise InvalidInputError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; with {past_length} cached and {length} new "
                f"tokens it must be ({batch}, {past_length + length})"
            )
        if position_ids is None:
            position_ids = kv_cache.position_ids_for(attention_mask, length)
        first_kept = length - logits_to_keep if 0 < logits_to_keep < length else 0
        chunk = max(1, int(self.prefill_chunk))
        logits: list[torch.Tensor] = []
        for start in range(0, length, chunk):
            end = min(start + chunk, length)
            flat = {
                "input_ids": input_ids[:, start:end].long(),
                "attention_mask": attention_mask[:, : past_length + end].long(),
                "position_ids": position_ids[:, start:end].long(),
            }
            if end <= first_kept:  # only extends the cache: its logits are dropped (a backend computes one row)
                self._step(state, flat, 1)
                continue
            logits.append(self._step(state, flat, end - max(start, first_kept)))
        if not use_cache:
            cache.close()
        return CausalLMOutputWithPast(
            logits=logits[0] if len(logits) == 1 else torch.cat(logits, dim=1),
            past_key_values=cache if use_cache else None,
        )

    def _runtime_cache(self, past_key_values: Cache | None, batch: int) -> RuntimeCache:
        """The cache to continue: ``past_key_values`` when it is this model's :class:`RuntimeCache`, else a new one
        (holding a copy of ``past_key_values`` when that is another, non-empty cache)."""
        if isinstance(past_key_values, RuntimeCache):
            if past_key_values.owner is not self.session:
                raise InvalidInputError("past_key_values comes from another model; start the generation without it")
            if past_key_values.state.batch_size != batch:
                raise InvalidInputError(
                    f"past_key_values holds {past_key_values.state.batch_size} rows, the inputs have {batch}"
                )
            return past_key_values
        state = start_state(self.session, self._run_flat, self.layout, batch, self.cache_dtype)
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            state.write(kv_cache.to_flat(past_key_values, self.layout, batch, self.cache_dtype))
        return RuntimeCache(state, self.session)

    def _run_flat(self, flat: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._forward_on_session(self.task.kind.prepare_inputs(flat, self.session.input_names))

    def _step(self, state: DecodeState, flat: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
        """One step of ``state`` keeping ``keep`` positions' logits; a runtime's own exception becomes an
        :class:`InferenceError`."""
        try:
            logits = state.step(flat, keep)
        except AcceleronError:
            raise
        except Exception as error:
            raise InferenceError(self._inference_failure(flat, error)) from error
        # A session running PyTorch under inference_mode returns inference tensors, which generate()'s
        # in-place edits (assisted decoding) refuse: such logits are cloned (one small tensor per step).
        return logits.clone() if logits.is_inference() else logits


def _generation_config(folder: Path, config: Any) -> GenerationConfig:
    """``generation_config.json`` from the model folder, else the defaults the config implies."""
    if (Path(folder) / "generation_config.json").is_file():
        try:
            return GenerationConfig.from_pretrained(str(folder))
        except (OSError, ValueError):
            pass
    return GenerationConfig.from_model_config(config)


@dataclass
class Seq2SeqEncoderOutput(BaseModelOutput):
    """The encoder graph's output: ``last_hidden_state`` and the decoder's cross-attention keys and values.

    ``cross_key_values`` is a tuple (key, value per decoder layer), so ``generate()`` leaves it alone
    when it repeats the tensors of the encoder output for beams; the first decoder step repeats them
    once, and every later step reuses them.
    """

    cross_key_values: tuple[torch.Tensor, ...] | None = None


class _EncoderRunner:
    """What ``Seq2SeqLMModel.get_encoder()`` returns: ``generate()`` calls it once per generation."""

    def __init__(self, owner: Seq2SeqLMModel) -> None:
        self.owner = owner
        self.main_input_name = owner.main_input_name

    def __call__(self, *args: Any, **kwargs: Any) -> Seq2SeqEncoderOutput:
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqEncoderOutput:
        given = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_features": input_features,
            "pixel_values": pixel_values,
        }
        if "attention_mask" not in self.owner.encoder_session.input_names:
            # Whisper's feature mask marks the frames of padded audio; its encoder does not read it (nor does
            # PyTorch's), and generate() uses it for the segment lengths on its own.
            given["attention_mask"] = None
        return self.owner.encode({name: value for name, value in given.items() if value is not None})


class _WhisperShape:
    """The attributes of a Whisper model that transformers' Whisper ``generate()`` reads besides the config:
    the strides of the encoder's two convolutions (1 and 2 in every Whisper)."""

    def __init__(self, config: Any) -> None:
        self.config = config  # generate() switches its attention implementation for word timestamps
        conv = type("Conv", (), {})
        self.encoder = type("Encoder", (), {"conv1": conv(), "conv2": conv()})()
        self.encoder.conv1.stride = (1,)
        self.encoder.conv2.stride = (2,)


class Seq2SeqLMModel(_OffRuntimeThreads, OptimizedModel, GenerationMixin):  # type: ignore[misc]
    """An encoder-decoder on a backend (T5, BART, Marian, Whisper, VisionEncoderDecoder): ``generate()`` works.

    The encoder graph runs once per input and returns the decoder's cross-attention keys and values
    too; each decoder step runs the step graph with the self-attention past and those keys and values
    (see :mod:`acceleron.seq2seq`). Each ``generate()`` call owns its cache, so several threads may
    generate from one model at once. Beam search reorders only the self-attention past.
    """

    kinds = (Seq2SeqLM,)
    #: No PyTorch base model inside (``generate()`` looks for one to collect argument names).
    base_model_prefix = ""
    _is_stateful = False
    _supports_cache_class = True

    def __init__(self, parts: LoadedParts) -> None:
        super().__init__(parts)
        from acceleron import seq2seq

        self.config.is_encoder_decoder = True
        self.layout = seq2seq.Seq2SeqLayout.from_config(self.config)
        encoder, decoder = self.sessions.get(seq2seq.ENCODER), self.sessions.get(seq2seq.DECODER)
        if encoder is None or decoder is None:
            raise ArtifactNotFoundError(
                f"{self.task.name} needs an encoder and a decoder graph; {self.artifact.parent} has "
                f"{', '.join(self.sessions)}. Export the model again with export=True."
            )
        self.encoder_session: Session = encoder
        self.decoder_session: Session = decoder
        wanted = {
            "encoder": (self.encoder_session, ["last_hidden_state", *self.layout.cross_names]),
            "decoder": (
                self.decoder_session,
                ["decoder_input_ids", *self.layout.past_names, *self.layout.cross_names, "logits"],
            ),
        }
        for graph, (session, names) in wanted.items():
            declared = set(session.input_names) | set(session.output_names)
            missing = [name for name in names if name not in declared]
            if missing:
                raise ArtifactNotFoundError(
                    f"the {graph} graph of {self.artifact.parent} is not acceleron's encoder-decoder protocol "
                    f"(it lacks {', '.join(missing[:4])}); export the model again with export=True."
                )
        self.masks_source = "encoder_attention_mask" in self.decoder_session.input_names
        self.main_input_name = self.encoder_session.input_names[0]
        self.generation_config = _generation_config(self.preprocessor_dir, self.config)
        if getattr(self.config, "model_type", "") == "whisper":
            self.model = _WhisperShape(self.config)

    @classmethod
    def can_generate(cls) -> bool:
        return True

    @property
    def cache_dtype(self) -> torch.dtype:
        """The dtype of the cache tensors fed to the decoder."""
        return self.dtype if self.dtype.is_floating_point else torch.float32

    def get_encoder(self) -> _EncoderRunner:
        return _EncoderRunner(self)

    def get_experts_implementation(self) -> dict[str, str]:
        return {}

    def set_experts_implementation(self, implementation: Any) -> None:
        """Nothing to switch: the backend runs the whole graph."""

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> Seq2SeqEncoderOutput:
        """Run the encoder graph: the encoder output and the cross-attention keys and values."""
        for name, value in inputs.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"input {name!r} must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() == 0 or value.shape[0] == 0:
                raise InvalidInputError(f"input {name!r} is an empty batch (shape {tuple(value.shape)})")
        self.task.kind.check_limits(inputs, self.config)
        prepared = self.task.kind.prepare_inputs(inputs, self.encoder_session.input_names)
        if self.dtype != torch.float32:
            prepared = {name: v.to(self.dtype) if v.is_floating_point() else v for name, v in prepared.items()}
        outputs = self._run(self.encoder_session, prepared)
        # Runtimes return floating outputs in float32; the decoder takes the cross keys/values as its cache dtype.
        cross = tuple(outputs[name].to(self.cache_dtype) for name in self.layout.cross_names)
        return Seq2SeqEncoderOutput(last_hidden_state=outputs["last_hidden_state"], cross_key_values=cross)

    def _run(self, session: Session, prepared: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        try:
            return session._forward(prepared)
        except AcceleronError:
            raise
        except Exception as error:
            raise InferenceError(self._inference_failure(prepared, error)) from error

    def prepare_inputs_for_generation(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The step's inputs: only the decoder tokens the cache does not hold yet."""
        past_length = _self_attention_length(past_key_values)
        if past_length:
            input_ids = input_ids[:, past_length:]
        return {
            "decoder_input_ids": input_ids,
            "encoder_outputs": encoder_outputs,
            "attention_mask": attention_mask,
            "past_key_values": past_key_values,
            "use_cache": True,
        }

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        past_key_values: Cache | None = None,
        use_cache: bool = True,
        input_features: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput:
        """One decoder step (running the encoder first when no ``encoder_outputs`` are given)."""
        from acceleron import seq2seq

        _refuse_attentions(kwargs)
        if decoder_input_ids is None:
            raise InvalidInputError(f"{type(self).__name__} needs decoder_input_ids (generate() passes them)")
        if encoder_outputs is None:
            given = {"input_ids": input_ids, "attention_mask": attention_mask}
            given.update(input_features=input_features, pixel_values=pixel_values)
            encoder_outputs = self.encode({name: value for name, value in given.items() if value is not None})
        batch = decoder_input_ids.shape[0]
        cross = _cross_from_cache(past_key_values)
        if cross is None:
            cross = _repeat_for(_encoder_cross(encoder_outputs), batch)
        past = _self_attention_past(past_key_values, self.layout, batch, self.cache_dtype)
        flat: dict[str, torch.Tensor] = {"decoder_input_ids": decoder_input_ids.long()}
        if self.masks_source:
            mask = attention_mask
            if mask is None:
                mask = torch.ones(batch, cross[0].shape[2], dtype=torch.long)
            flat["encoder_attention_mask"] = _repeat_for((mask.long(),), batch)[0]
        flat.update(zip(self.layout.past_names, past))
        flat.update(zip(self.layout.cross_names, cross))
        outputs = self._run(self.decoder_session, self.task.kind.prepare_inputs(flat, self.decoder_session.input_names))
        present = [outputs[name] for name in self.layout.present_names]
        cache = None
        if use_cache:
            cache = seq2seq.SharedCrossCache(
                seq2seq.layers_cache(present, self.config), seq2seq.layers_cache(cross, self.config)
            )
            for i in range(self.layout.num_layers):
                cache.is_updated[i] = True
        last_hidden = getattr(encoder_outputs, "last_hidden_state", None)
        logits = outputs["logits"]
        if logits.is_inference():  # a PyTorch session's; Whisper's generate() writes into the logits
            logits = logits.clone()
        return Seq2SeqLMOutput(logits=logits, past_key_values=cache, encoder_last_hidden_state=last_hidden)


def _refuse_attentions(kwargs: Mapping[str, Any]) -> None:
    """Exported graphs return no attention weights: say so instead of returning none silently."""
    if kwargs.get("output_attentions"):
        raise InvalidInputError(
            "acceleron's exported graphs return no attention weights (output_attentions), which Whisper's word-level "
            "timestamps (return_timestamps='word', return_token_timestamps) are computed from; use "
            "return_timestamps=True for segment timestamps, or transformers' own pipeline for word timestamps."
        )


def _self_attention_length(cache: Cache | None) -> int:
    if cache is None:
        return 0
    self_cache = getattr(cache, "self_attention_cache", cache)
    return int(self_cache.get_seq_length())


def _cross_from_cache(cache: Cache | None) -> tuple[torch.Tensor, ...] | None:
    """The cross-attention keys and values a step's cache already holds, or None (first step)."""
    from acceleron.seq2seq import layer_tensors

    cross_cache = getattr(cache, "cross_attention_cache", None)
    if cross_cache is None or not cross_cache.layers or cross_cache.get_seq_length() == 0:
        return None
    return tuple(layer_tensors(cross_cache))


def _encoder_cross(encoder_outputs: Any) -> tuple[torch.Tensor, ...]:
    cross = getattr(encoder_outputs, "cross_key_values", None)
    if not cross:
        raise InvalidInputError(
            "encoder_outputs must come from this model's encoder (model.get_encoder()(...)): it carries the "
            "cross-attention keys and values the decoder graph takes."
        )
    return tuple(cross)


def _repeat_for(tensors: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Rows repeated for ``batch`` decoder rows (beams or return sequences of each input), once per generation."""
    rows = tensors[0].shape[0]
    if rows == batch:
        return tensors
    if batch % rows:
        raise InvalidInputError(f"{batch} decoder rows cannot share the encoder outputs of {rows} inputs")
    return tuple(t.repeat_interleave(batch // rows, dim=0) for t in tensors)


def _self_attention_past(cache: Cache | None, layout: Any, batch: int, dtype: torch.dtype) -> list[torch.Tensor]:
    self_cache = getattr(cache, "self_attention_cache", cache)
    if self_cache is None or self_cache.get_seq_length() == 0:
        empty = torch.zeros(batch, layout.num_heads, 0, layout.head_dim, dtype=dtype)
        return [empty] * (2 * layout.num_layers)
    from acceleron.seq2seq import layer_tensors

    return layer_tensors(self_cache)


#: The model class of each task kind; kinds not listed run on :class:`OptimizedModel`.
MODEL_CLASSES: tuple[type[OptimizedModel], ...] = (CausalLMModel, Seq2SeqLMModel)


def model_class_for(task: TaskSpec, config: Any = None) -> type[OptimizedModel]:
    """The model class that serves ``task``'s kind (for Whisper, with transformers' Whisper ``generate()``)."""
    for cls in MODEL_CLASSES:
        if isinstance(task.kind, cls.kinds):
            if cls is Seq2SeqLMModel and getattr(config, "model_type", "") == "whisper":
                return _whisper_class()
            return cls
    return OptimizedModel


@functools.cache
def _whisper_class() -> type[OptimizedModel]:
    """:class:`Seq2SeqLMModel` with transformers' Whisper ``generate()`` (long-form audio, timestamps, language)."""
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    class WhisperSeq2SeqLMModel(WhisperGenerationMixin, Seq2SeqLMModel):  # type: ignore[misc]
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("return_token_timestamps"):  # what return_timestamps="word" asks for
                _refuse_attentions({"output_attentions": True})
            return super().generate(*args, **kwargs)

    return WhisperSeq2SeqLMModel
