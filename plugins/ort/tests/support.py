"""Helpers the ort tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(folder: Path, task: str = "text-classification", **kwargs: Any) -> Any:
    """``OrtModel.from_pretrained`` with strict validation."""
    from acceleron.plugins import get_backend

    kwargs.setdefault("strict", True)
    return get_backend("ort").model_class().from_pretrained(folder, task=task, **kwargs)


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
