"""What a sentence-transformers folder says about its sentence vectors, and the graph that computes them.

A sentence-transformers model folder holds a transformers encoder at its top level and lists its
modules in ``modules.json``: the ``Transformer`` (the encoder), then ``Pooling`` (its settings in
``1_Pooling/config.json``) and, for most models, ``Normalize``. ``sentence_bert_config.json`` gives
the longest input (``max_seq_length``) and whether text is lower-cased first.

:func:`read_modules` reads those files and refuses what acceleron cannot reproduce; :func:`pooled_encoder`
wraps the encoder so that the exported graph returns ``sentence_embedding`` (pooled, and normalised
when the folder has a ``Normalize`` module) instead of token vectors. The pooling is written here from
the modes' definitions; tests compare it with sentence-transformers itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import ModelOutput

from acceleron.errors import TaskNotSupportedError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Pooling modes, by the name sentence-transformers gives them in ``pooling_mode``.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
#: The older boolean keys of ``1_Pooling/config.json``, in the order their vectors are concatenated.
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ALIASES = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max", "mean_sqrt_len": "mean_sqrt_len_tokens"}

#: The module types acceleron reproduces, by class name (``sentence_transformers.models.Pooling``, ...).
_KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")

HOW_TO_MAKE_ONE = (
    "A sentence-transformers folder has modules.json (for mean pooling and unit vectors: "
    '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}, '
    '{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}, '
    '{"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]) '
    'and 1_Pooling/config.json ({"pooling_mode": "mean"}).'
)


@dataclass(frozen=True)
class SentenceModules:
    """The parts of a sentence-transformers folder acceleron reproduces."""

    #: Pooling modes in the order their vectors are concatenated (usually one).
    pooling: tuple[str, ...]
    #: Whether the modules end with ``Normalize`` (unit-length vectors).
    normalize: bool
    #: ``sentence_bert_config.json``'s ``max_seq_length``: longer inputs are truncated (None: the model's limit).
    max_seq_length: int | None = None
    #: ``sentence_bert_config.json``'s ``do_lower_case``: lower-case text before tokenising.
    do_lower_case: bool = False


def _module_type(module: Any) -> str:
    return str(module.get("type", "")).rpartition(".")[2] if isinstance(module, dict) else ""


def read_modules(folder: str | Path) -> SentenceModules:
    """Read ``modules.json``, the pooling settings and ``sentence_bert_config.json`` of ``folder``.

    Raises :class:`~acceleron.errors.TaskNotSupportedError` for a folder that is no sentence-transformers
    folder, for modules acceleron does not reproduce (``Dense``, ``LayerNorm``, ...) and for unknown
    pooling modes; the message says what is needed.
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        raise TaskNotSupportedError(
            f"{folder} is not a sentence-transformers folder (it has no modules.json), so acceleron does not know "
            "how its token vectors become a sentence vector; guessing a pooling would give plausible but wrong "
            f"vectors for a model trained with another. {HOW_TO_MAKE_ONE} Or use task 'feature-extraction' for "
            "the token vectors."
        )
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not modules:
        raise TaskNotSupportedError(f"{modules_file} is not a list of modules. {HOW_TO_MAKE_ONE}")
    kinds = [_module_type(module) for module in modules]
    unknown = [kind or repr(module) for kind, module in zip(kinds, modules) if kind not in _KNOWN_MODULES]
    if unknown:
        raise TaskNotSupportedError(
            f"{folder}'s modules include {', '.join(unknown)}, which acceleron does not reproduce (it runs "
            f"Transformer, Pooling and Normalize, in that order); use sentence-transformers for this model, or "
            "task 'feature-extraction' for its token vectors."
        )
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise TaskNotSupportedError(
            f"{folder}'s modules are {' -> '.join(kinds)}; acceleron reproduces Transformer -> Pooling, "
            "optionally followed by Normalize."
        )
    transformer_path = modules[0].get("path", "")
    if transformer_path not in ("", "."):
        raise TaskNotSupportedError(
            f"{folder} keeps its transformer in the subfolder {transformer_path!r}; acceleron reads the encoder from "
            "the folder's top level (the layout sentence-transformers has saved since version 2). Save the model "
            "again with a current sentence-transformers."
        )
    pooling_path = folder / str(modules[1].get("path", "")) / "config.json"
    pooling = _pooling_modes(_read_json(pooling_path) if pooling_path.is_file() else {}, pooling_path)
    settings: Any = {}
    if (folder / "sentence_bert_config.json").is_file():
        settings = _read_json(folder / "sentence_bert_config.json")
    max_seq_length = settings.get("max_seq_length") if isinstance(settings, dict) else None
    return SentenceModules(
        pooling=pooling,
        normalize=kinds[-1] == "Normalize",
        max_seq_length=max_seq_length if isinstance(max_seq_length, int) and max_seq_length > 0 else None,
        do_lower_case=bool(settings.get("do_lower_case", False)) if isinstance(settings, dict) else False,
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TaskNotSupportedError(f"cannot read {path}: {error}") from error


def _pooling_modes(config: Any, path: Path) -> tuple[str, ...]:
    """The pooling modes of a ``Pooling`` module's config: ``pooling_mode`` (a name or a list), or the older
    boolean keys; mean pooling when it names none (as sentence-transformers does)."""
    if not isinstance(config, dict):
        raise TaskNotSupportedError(f"{path} is not a JSON object of pooling settings")
    if "pooling_mode" in config:
        given = config["pooling_mode"]
        modes = [given] if isinstance(given, str) else list(given) if isinstance(given, list) else [repr(given)]
    else:
        modes = [mode for key, mode in _LEGACY_KEYS.items() if config.get(key)]
    modes = [_ALIASES.get(str(mode), str(mode)) for mode in modes] or ["mean"]
    unsupported = [mode for mode in modes if mode not in POOLING_MODES]
    if unsupported:
        raise TaskNotSupportedError(
            f"{path} asks for the pooling mode {', '.join(map(repr, unsupported))}, which acceleron does not know; "
            f"it supports {', '.join(POOLING_MODES)}."
        )
    return tuple(modes)


# ---- the graph --------------------------------------------------------------------------------------


@dataclass
class SentenceEmbeddingOutput(ModelOutput):
    """What a sentence-embedding model returns: one vector per input text, ``[batch, dimension]``."""

    sentence_embedding: torch.Tensor | None = None


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """Pool token vectors ``hidden`` ``[batch, sequence, dim]`` over the positions ``mask`` keeps.

    Each mode gives a ``[batch, dim]`` vector; several are concatenated in order. Written for tracing:
    positions come from ``arange`` (no argmax ties, no flips), so every exporter sees plain arithmetic.
    """
    keep = mask.to(hidden.dtype).unsqueeze(-1)
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    kept = mask.to(torch.long) > 0
    # The first kept position (0 unless the batch is left-padded; the last position if none is kept).
    first = torch.where(kept, positions, positions[:, -1:]).min(dim=1, keepdim=True).values
    vectors = []
    counts = torch.clamp(keep.sum(dim=1), min=1e-9)
    for mode in modes:
        if mode in ("cls", "lasttoken"):
            if mode == "cls":
                index, source = first, hidden
            else:  # the last kept position; a row keeping none gives zeros, as in sentence-transformers
                index, source = torch.where(kept, positions, 0).max(dim=1, keepdim=True).values, hidden * keep
            gather = index.view(-1, 1, 1).expand(-1, 1, hidden.shape[2])
            vectors.append(torch.gather(source, 1, gather).squeeze(1))
        elif mode == "max":
            floor = torch.finfo(hidden.dtype).min
            vectors.append(hidden.masked_fill(keep == 0, floor).max(dim=1).values)
        elif mode == "mean":
            vectors.append((hidden * keep).sum(dim=1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            vectors.append((hidden * keep).sum(dim=1) / torch.sqrt(counts))
        elif mode == "weightedmean":  # weights 1, 2, ... counted from the first kept position
            weights = (positions + 1 - first).to(hidden.dtype).unsqueeze(-1) * keep
            vectors.append((hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9))
        else:
            raise TaskNotSupportedError(f"unknown pooling mode {mode!r}; acceleron supports {', '.join(POOLING_MODES)}")
    return vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)


class PooledEncoder(torch.nn.Module):
    """The encoder, its pooling and (optionally) L2 normalisation: positional inputs, ``(sentence_embedding,)``."""

    def __init__(self, model: PreTrainedModel, input_names: Sequence[str], modules: SentenceModules) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.modes = modules.pooling
        self.normalize = modules.normalize

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor]:
        inputs = dict(zip(self.input_names, args))
        hidden = self.model(**inputs).last_hidden_state
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        vector = pool(hidden, mask, self.modes)
        if self.normalize:
            vector = torch.nn.functional.normalize(vector, p=2.0, dim=1)
        return (vector,)


def pooled_encoder(model: PreTrainedModel, input_names: Sequence[str]) -> PooledEncoder:
    """Wrap ``model`` (loaded from a sentence-transformers folder) with the pooling its folder names.

    The folder is the one the model was loaded from (``model.name_or_path``): the source folder when
    exporting, an export or saved model (which carry the module settings along) when rebuilding.
    """
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    if not str(folder) or not folder.is_dir():
        raise TaskNotSupportedError(
            f"cannot find the folder {type(model).__name__} was loaded from ({str(folder)!r}); a sentence-embedding "
            "export reads its pooling from the model's sentence-transformers folder."
        )
    return PooledEncoder(model, input_names, read_modules(folder)).eval()
