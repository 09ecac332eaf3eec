"""Sentence embeddings: ``acceleron.embed()`` and :class:`SentenceEncoder`, like sentence-transformers' ``encode()``.

A sentence-transformers folder (``modules.json``, ``1_Pooling/config.json``, optionally a ``Normalize``
module) is exported for the ``sentence-embedding`` task: the exported graph pools (and normalises)
itself, so every backend returns sentence vectors, not token vectors. Texts are tokenised once,
truncated to the folder's ``max_seq_length``, sorted by token count, batched, padded per batch and
put back in the caller's order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from acceleron.backend import Backend
from acceleron.errors import InvalidInputError, InvalidOptionError, TaskNotSupportedError
from acceleron.fast_pipelines import _pad_values, _padded
from acceleron.modeling import OptimizedModel
from acceleron.sentence import SentenceModules, read_modules
from acceleron.tasks import position_limit

if TYPE_CHECKING:
    from acceleron.cache import ExportCache

logger = logging.getLogger(__name__)

TASK = "sentence-embedding"


class SentenceEncoder:
    """A sentence-transformers model on a backend; export and load happen once, here.

    ``SentenceEncoder(model, accelerator="ort").encode(sentences)`` returns a float32 numpy array
    ``[len(sentences), dim]`` equal (cosine >= 0.9999 in float32) to sentence-transformers'
    ``SentenceTransformer(model).encode(sentences)``.

    :param model: a sentence-transformers folder, a hub id of one, or an acceleron model already
        loaded for ``sentence-embedding``.
    :param accelerator: a backend name (``ov``, ``ort``, ``ipex``, ``torch``), a
        :class:`~acceleron.Backend`, or None for the best installed one.
    :param dtype, num_threads, device: backend options, as in :func:`acceleron.pipeline`'s
        ``accelerator_options``; ``accelerator_options`` takes the backend's own ones.
    The other keywords are :meth:`acceleron.OptimizedModel.from_pretrained`'s.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | OptimizedModel,
        accelerator: str | Backend | None = None,
        *,
        dtype: str | None = None,
        num_threads: int | None = None,
        device: str | None = None,
        accelerator_options: Mapping[str, Any] | None = None,
        export: bool | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        export_cache: ExportCache | str | os.PathLike[str] | None = None,
        validate: bool = True,
        strict: bool = False,
    ) -> None:
        if isinstance(model, OptimizedModel):
            if model.task.name != TASK:
                raise TaskNotSupportedError(
                    f"the model passed was loaded for {model.task.name}; load it with task={TASK!r} (or pass its "
                    "folder) to get sentence vectors."
                )
            self.model = model
        else:
            if not isinstance(model, (str, os.PathLike)):
                raise TypeError(
                    f"model must be a sentence-transformers folder, a hub id or an acceleron model, "
                    f"got {type(model).__name__}"
                )
            folder = Path(os.fspath(model)).expanduser()
            if folder.is_dir():
                read_modules(folder)  # refuse a folder that is no sentence-transformers one before exporting
            if accelerator_options is not None and not isinstance(accelerator_options, Mapping):
                raise InvalidOptionError(
                    f"accelerator_options must be a mapping such as {{'num_threads': 2}}, "
                    f"got {type(accelerator_options).__name__}"
                )
            options = dict(accelerator_options or {})
            for name, value in (("dtype", dtype), ("num_threads", num_threads), ("device", device)):
                if value is not None:
                    options[name] = value
            self.model = OptimizedModel.from_pretrained(
                model,
                accelerator=accelerator,
                export=export,
                task=TASK,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                trust_remote_code=trust_remote_code,
                export_cache=export_cache,
                validate=validate,
                strict=strict,
                **options,
            )
        from transformers import AutoTokenizer

        folder = Path(self.model.preprocessor_dir)
        self.modules: SentenceModules = read_modules(folder)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        limits = [self.modules.max_seq_length, position_limit(self.model.config)]
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if self.modules.max_seq_length is None and isinstance(model_max, int) and model_max < 10**6:
            limits.append(model_max)  # sentence-transformers' default when the folder names no limit
        known = [limit for limit in limits if limit is not None]
        #: Longer inputs are truncated to this many tokens, special tokens included.
        self.max_seq_length: int | None = min(known) if known else None

    @property
    def backend(self) -> Backend:
        return self.model.backend

    def get_sentence_embedding_dimension(self) -> int:
        """The length of each vector: the encoder's width times the number of pooling modes."""
        hidden = int(getattr(self.model.config, "hidden_size", 0) or getattr(self.model.config, "dim", 0))
        return hidden * len(self.modules.pooling)

    def __repr__(self) -> str:
        return (
            f"SentenceEncoder(backend={self.backend.name!r}, pooling={'+'.join(self.modules.pooling)}, "
            f"normalize={self.modules.normalize}, max_seq_length={self.max_seq_length})"
        )

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
    ) -> Any:
        """Sentence vectors of ``sentences``, in their order: ``[n, dim]`` (a single string gives ``[dim]``).

        :param normalize_embeddings: None (default) or False: what the folder's modules do (a folder
            whose modules end in ``Normalize`` gives unit vectors either way, as sentence-transformers
            does); True: unit vectors whatever the folder says.
        :param convert_to_numpy: a float32 numpy array (default); False or ``convert_to_tensor=True``
            gives a torch tensor.
        """
        single = isinstance(sentences, str)
        texts = _check_sentences([sentences] if single else sentences)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidOptionError(f"batch_size must be a positive integer, got {batch_size!r}")
        if normalize_embeddings not in (None, True, False):
            raise InvalidOptionError(f"normalize_embeddings must be None, True or False, got {normalize_embeddings!r}")
        if normalize_embeddings is False and self.modules.normalize:
            logger.info(
                "acceleron: %s ends with a Normalize module, so its vectors have unit length "
                "(as with sentence-transformers' normalize_embeddings=False)",
                self.model.preprocessor_dir,
            )
        vectors = self._encode(texts, batch_size, bool(show_progress_bar))
        if normalize_embeddings and not self.modules.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2.0, dim=1)
        result: Any = vectors[0] if single else vectors
        if convert_to_tensor or not convert_to_numpy:
            return result
        return result.numpy()

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> torch.Tensor:
        tokenizer = self.tokenizer
        if self.modules.do_lower_case:
            texts = [text.lower() for text in texts]
        settings: dict[str, Any] = {"truncation": True}
        if self.max_seq_length is not None:
            settings["max_length"] = self.max_seq_length
        encoded = tokenizer(texts, **settings)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        # Longest first (as sentence-transformers does), so a batch too large for memory fails at once.
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        pad_values = _pad_values(tokenizer, encoded, {})
        if getattr(tokenizer, "padding_side", "right") != "right":
            pad_values = None  # the tokenizer pads each batch itself, on its own side
        results: list[torch.Tensor | None] = [None] * len(texts)
        starts = range(0, len(order), batch_size)
        progress = _progress(starts, show_progress)
        for start in progress:
            chunk = order[start : start + batch_size]
            if pad_values is None:
                inputs = tokenizer([texts[i] for i in chunk], padding=True, return_tensors="pt", **settings)
            else:
                inputs = _padded(encoded, chunk, lengths, pad_values)
            vectors = self.model(**dict(inputs)).sentence_embedding.float()
            for row, index in enumerate(chunk):
                results[index] = vectors[row]
        return torch.stack([vector for vector in results if vector is not None])


def _progress(steps: range, show: bool) -> Any:
    if not show:
        return steps
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return steps
    return tqdm(steps, desc="Batches", unit="batch")


def _check_sentences(sentences: Any) -> list[str]:
    if isinstance(sentences, (bytes, Mapping)) or not isinstance(sentences, Sequence):
        raise InvalidInputError(
            f"sentences must be a string or a list of strings, got {type(sentences).__name__}"
            + (" (a generator or set: pass list(...))" if hasattr(sentences, "__iter__") else "")
        )
    if len(sentences) == 0:
        raise InvalidInputError("sentences is empty: give at least one string to embed")
    wrong = [(i, type(s).__name__) for i, s in enumerate(sentences) if not isinstance(s, str)]
    if wrong:
        listed = ", ".join(f"#{i}: {name}" for i, name in wrong[:5])
        raise InvalidInputError(
            f"sentences must all be strings; {len(wrong)} are not ({listed}{', ...' if len(wrong) > 5 else ''})"
        )
    return list(sentences)


def embed(
    sentences: str | Sequence[str],
    model: str | os.PathLike[str] | OptimizedModel,
    accelerator: str | Backend | None = None,
    *,
    normalize: bool | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    **options: Any,
) -> np.ndarray:
    """Sentence vectors of ``sentences`` from a sentence-transformers model, pooled inside the exported graph.

    Returns a float32 array ``[len(sentences), dim]`` (``[dim]`` for a single string), in the order given.
    ``normalize``: None (default) does what the folder's modules do; True gives unit vectors. Other
    keywords (``dtype``, ``num_threads``, ``device``, ``accelerator_options``, ``export_cache``, ...) go
    to :class:`SentenceEncoder`; build one to embed many lists with one export and load.
    """
    _check_sentences([sentences] if isinstance(sentences, str) else sentences)  # before any export
    encoder = SentenceEncoder(model, accelerator, **options)
    result: np.ndarray = encoder.encode(
        sentences, batch_size=batch_size, show_progress_bar=show_progress, normalize_embeddings=normalize
    )
    return result
