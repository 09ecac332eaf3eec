"""Shared fixtures: an isolated acceleron cache, tiny models, and one exported tiny classifier."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def isolated_acceleron_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exports and OpenVINO's compiled-model blobs go to a temporary folder, never the user's cache."""
    root = tmp_path_factory.mktemp("acceleron-cache")
    previous = os.environ.get("ACCELERON_CACHE_DIR")
    os.environ["ACCELERON_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("ACCELERON_CACHE_DIR", None)
    else:
        os.environ["ACCELERON_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT text classifier (PyTorch weights, config, tokenizer)."""
    from acceleron.testing import build_tiny_model

    return build_tiny_model("text-classification", tmp_path_factory.mktemp("tiny") / "classifier", "bert")


@pytest.fixture(scope="session")
def saved_classifier(tiny_classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_classifier`` exported to OpenVINO IR in float32 and saved: loads without exporting."""
    from acceleron_openvino.plugin import OpenVINOBackend

    from acceleron import OptimizedModel

    model = OptimizedModel.from_pretrained(
        tiny_classifier, accelerator=OpenVINOBackend(), task="text-classification", strict=True, dtype="float32"
    )
    return model.save_pretrained(tmp_path_factory.mktemp("saved") / "classifier-ov")


@pytest.fixture(scope="session")
def classifier_inputs(tiny_classifier: Path) -> dict[str, Any]:
    """Tokenised inputs for ``tiny_classifier``: 3 rows, padded to 13 tokens."""
    from acceleron.tasks import get_task

    spec = get_task("text-classification")
    return spec.example_inputs(spec.load_torch_model(tiny_classifier), batch_size=3, sequence_length=13, seed=3)


@pytest.fixture(scope="session")
def torch_logits(tiny_classifier: Path, classifier_inputs: dict[str, Any]) -> Any:
    """PyTorch's logits for ``classifier_inputs``: the reference."""
    import torch

    from acceleron.tasks import get_task

    model = get_task("text-classification").load_torch_model(tiny_classifier)
    with torch.inference_mode():
        return model(**classifier_inputs).logits


@pytest.fixture
def load_ov() -> Any:
    """``load_ov(folder, **options)``: load ``folder`` on the ``ov`` backend (no export when it holds IR)."""
    from acceleron import OptimizedModel

    def load(folder: Path, **options: Any) -> Any:
        return OptimizedModel.from_pretrained(folder, accelerator="ov", **options)

    return load
