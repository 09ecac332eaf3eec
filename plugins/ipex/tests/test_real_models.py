"""Accuracy of the ipex backend on the real models (the sentiment classifier and MiniLM); never timings.

Runs only with ``ACCELERON_REAL_MODELS=1``; the model folders come from the ``assets`` fixture (conftest.py)::

    HF_HUB_OFFLINE=1 ACCELERON_REAL_MODELS=1 python -m pytest plugins/ipex/tests/test_real_models.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("ACCELERON_REAL_MODELS") != "1", reason="set ACCELERON_REAL_MODELS=1 to use real models"
    ),
]

SENTENCES = 1024
BATCH = 32


@pytest.fixture(scope="module")
def batches(assets: Any) -> list[dict[str, Any]]:
    """The 1024 held-out sentences, tokenised in batches of 32 (padded to each batch's longest)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(assets.sentiment_model_path()))
    sentences = [text for text, _ in assets.heldout_sentences(SENTENCES)]
    return [
        dict(tokenizer(sentences[i : i + BATCH], padding=True, truncation=True, return_tensors="pt"))
        for i in range(0, len(sentences), BATCH)
    ]


@pytest.fixture(scope="module")
def reference_logits(assets: Any, batches: list[dict[str, Any]]) -> Any:
    """Eager PyTorch float32, the reference every dtype is compared with."""
    import torch

    from acceleron.tasks import get_task

    model = get_task("text-classification").load_torch_model(assets.sentiment_model_path())
    with torch.inference_mode():
        return torch.cat([model(**batch).logits for batch in batches])


def _ipex_logits(assets: Any, batches: list[dict[str, Any]], tmp_path: Path, dtype: str) -> Any:
    import torch

    from acceleron import OptimizedModel

    model = OptimizedModel.from_pretrained(
        assets.sentiment_model_path(),
        accelerator="ipex",
        task="text-classification",
        export_cache=tmp_path / "cache",
        dtype=dtype,
    )
    return torch.cat([model(**batch).logits for batch in batches])


def test_float32_matches_pytorch_on_the_sentiment_classifier(
    assets: Any, batches: list[dict[str, Any]], reference_logits: Any, tmp_path: Path
) -> None:
    logits = _ipex_logits(assets, batches, tmp_path, "float32")
    assert len(logits) == SENTENCES
    assert (logits - reference_logits).abs().max().item() <= 1e-5
    assert bool((logits.argmax(-1) == reference_logits.argmax(-1)).all())


@pytest.mark.parametrize("dtype", ["bfloat16", "auto"])
def test_reduced_precision_labels_agree_on_99_percent(
    assets: Any, batches: list[dict[str, Any]], reference_logits: Any, tmp_path: Path, dtype: str
) -> None:
    logits = _ipex_logits(assets, batches, tmp_path, dtype)
    agreement = (logits.argmax(-1) == reference_logits.argmax(-1)).float().mean().item()
    assert agreement >= 0.99, f"{dtype}: labels agree on {agreement:.2%} of {SENTENCES} sentences"


def test_int8_labels_agree_on_96_percent(
    assets: Any, batches: list[dict[str, Any]], reference_logits: Any, tmp_path: Path
) -> None:
    logits = _ipex_logits(assets, batches, tmp_path, "int8")
    agreement = (logits.argmax(-1) == reference_logits.argmax(-1)).float().mean().item()
    assert agreement >= 0.96, f"int8: labels agree on {agreement:.2%} of {SENTENCES} sentences"


@pytest.mark.parametrize(("dtype", "minimum"), [("float32", 0.99999), ("bfloat16", 0.99)])
def test_minilm_embeddings_keep_their_direction(assets: Any, tmp_path: Path, dtype: str, minimum: float) -> None:
    import torch

    from acceleron import pipeline

    sentences = [text for text, _ in assets.heldout_sentences(128)]
    path = str(assets.minilm_path())
    options = {"model_kwargs": {"export_cache": tmp_path / "cache"}}

    def pooled(pipe: Any) -> Any:
        features = pipe(sentences, batch_size=BATCH)
        return torch.stack([torch.nn.functional.normalize(torch.tensor(f[0]).mean(0), dim=0) for f in features])

    reference = pooled(pipeline("feature-extraction", model=path, accelerator="torch", dtype="float32", **options))
    ours = pooled(pipeline("feature-extraction", model=path, accelerator="ipex", dtype=dtype, **options))
    cosine = (reference * ours).sum(-1)
    assert cosine.min().item() >= minimum, f"{dtype}: lowest cosine {cosine.min().item():.6f}"
