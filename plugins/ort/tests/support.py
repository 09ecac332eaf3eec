"""Helpers the ort tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(folder: Path, task: str = "text-classification", **kwargs: Any) -> Any:
    """``OptimizedModel.from_pretrained`` on the ort backend, with strict validation."""
    from acceleron import OptimizedModel

    kwargs.setdefault("strict", True)
    return OptimizedModel.from_pretrained(folder, accelerator="ort", task=task, **kwargs)


def real_assets() -> Any:
    """The real-model assets module (its functions build or find each model once)."""
    from acceleron.testing import assets

    return assets


def encode(folder: Path, sentences: list[str], **kwargs: Any) -> dict[str, Any]:
    """Tokenize ``sentences`` with the folder's tokenizer into padded torch tensors."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return dict(tokenizer(sentences, padding=True, return_tensors="pt", **kwargs))


SENTENCES = [
    "this movie was great fun",
    "the plot was boring and the actors were bad",
    "john lives in paris",
    "what a wonderful film",
    "mary works at acme in london",
    "the worst story of the day",
    "a very good film but not the best",
    "it was terrible",
]
