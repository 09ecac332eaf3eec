"""Test support for acceleron and its plugins: tiny models (:mod:`.tiny`), the conformance suite (:mod:`.conformance`).

``from acceleron.testing import BackendConformance, build_tiny_model, ...`` keeps working for both.
Importing :mod:`acceleron.testing.conformance` needs pytest; the tiny models do not.
"""

from __future__ import annotations

from acceleron.testing.tiny import (
    AUDIO_ARCHITECTURES,
    AUDIO_LABELS,
    CAUSAL_LM_FAMILIES,
    CHAT_TEMPLATE,
    CTC_CHARACTERS,
    IMAGE_LABELS,
    SEQ2SEQ_ARCHITECTURES,
    SPECIAL,
    TEXT_ARCHITECTURES,
    TEXT_LABELS,
    TEXT_TASKS,
    WORDS,
    build_tiny_model,
    ctc_tokenizer,
    outputs_close,
    sample_inputs,
    tiny_causal_lm,
    tiny_seq2seq,
    tiny_tokenizer,
)

__all__ = [
    "AUDIO_ARCHITECTURES",
    "AUDIO_LABELS",
    "CAUSAL_LM_FAMILIES",
    "CHAT_TEMPLATE",
    "CTC_CHARACTERS",
    "IMAGE_LABELS",
    "SEQ2SEQ_ARCHITECTURES",
    "SPECIAL",
    "TEXT_ARCHITECTURES",
    "TEXT_LABELS",
    "TEXT_TASKS",
    "WORDS",
    "BackendConformance",
    "build_tiny_model",
    "ctc_tokenizer",
    "outputs_close",
    "sample_inputs",
    "tiny_causal_lm",
    "tiny_seq2seq",
    "tiny_tokenizer",
]


def __getattr__(name: str) -> object:
    # The conformance suite imports pytest: load it only when asked for.
    if name == "BackendConformance":
        from acceleron.testing.conformance import BackendConformance

        return BackendConformance
    raise AttributeError(f"module 'acceleron.testing' has no attribute {name!r}")
