"""Accuracy of the ``ov`` backend on the real models (the sentiment classifier, MiniLM, SmolLM2); never timings.

Runs only with ``ACCELERON_REAL_MODELS=1``; the model folders come from ``acceleron.testing.assets``, whose
functions build each asset once (``python -m acceleron.testing.assets prepare`` builds them all)::

    HF_HUB_OFFLINE=1 ACCELERON_REAL_MODELS=1 python -m pytest plugins/openvino/tests/test_real_models.py
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
EMBEDDED_SENTENCES = 256
BATCH = 32


@pytest.fixture(scope="module")
def assets() -> Any:
    from acceleron.testing import assets

    return assets


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-exports")


def _batches(path: Path, sentences: list[str]) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return [
        dict(tokenizer(sentences[i : i + BATCH], padding=True, truncation=True, return_tensors="pt"))
        for i in range(0, len(sentences), BATCH)
    ]


def _outputs(model: Any, batches: list[dict[str, Any]], name: str) -> list[Any]:
    import torch

    with torch.inference_mode():
        return [model(**batch)[name] for batch in batches]


def _load(task: str, path: Path, backend: str, export_cache: Path, **options: Any) -> Any:
    from acceleron import OptimizedModel

    return OptimizedModel.from_pretrained(path, accelerator=backend, task=task, export_cache=export_cache, **options)


# ---- the sentiment classifier, 1024 held-out sentences ----


@pytest.fixture(scope="module")
def sentiment_batches(assets: Any) -> list[dict[str, Any]]:
    sentences = [text for text, _ in assets.heldout_sentences(SENTENCES)]
    return _batches(assets.sentiment_model_path(), sentences)


@pytest.fixture(scope="module")
def sentiment_reference(assets: Any, sentiment_batches: list[dict[str, Any]], export_cache: Path) -> Any:
    import torch

    model = _load("text-classification", assets.sentiment_model_path(), "torch", export_cache, dtype="float32")
    return torch.cat(_outputs(model, sentiment_batches, "logits"))


def _sentiment_logits(assets: Any, batches: list[dict[str, Any]], export_cache: Path, **options: Any) -> Any:
    import torch

    model = _load("text-classification", assets.sentiment_model_path(), "ov", export_cache, strict=True, **options)
    return torch.cat(_outputs(model, batches, "logits"))


def _agreement(logits: Any, reference: Any) -> float:
    return float((logits.argmax(-1) == reference.argmax(-1)).float().mean())


def test_float32_sentiment_logits_match_pytorch(
    assets: Any, sentiment_batches: list[dict[str, Any]], sentiment_reference: Any, export_cache: Path
) -> None:
    logits = _sentiment_logits(assets, sentiment_batches, export_cache, dtype="float32")
    assert logits.shape == (SENTENCES, 2)
    assert float((logits - sentiment_reference).abs().max()) <= 1e-4
    assert _agreement(logits, sentiment_reference) == 1.0


def test_default_dtype_sentiment_labels_agree_on_99_percent(
    assets: Any, sentiment_batches: list[dict[str, Any]], sentiment_reference: Any, export_cache: Path
) -> None:
    agreement = _agreement(_sentiment_logits(assets, sentiment_batches, export_cache), sentiment_reference)
    assert agreement >= 0.99, f"labels agree on {agreement:.2%} of {SENTENCES} sentences"


def test_int8_sentiment_labels_agree_on_98_percent(
    assets: Any, sentiment_batches: list[dict[str, Any]], sentiment_reference: Any, export_cache: Path
) -> None:
    pytest.importorskip("nncf", reason="dtype='int8' needs the int8 extra (NNCF)")
    agreement = _agreement(
        _sentiment_logits(assets, sentiment_batches, export_cache, dtype="int8"), sentiment_reference
    )
    assert agreement >= 0.98, f"int8 labels agree on {agreement:.2%} of {SENTENCES} sentences"


# ---- MiniLM sentence embeddings (mean-pooled, normalised), 256 held-out sentences ----


@pytest.fixture(scope="module")
def minilm_batches(assets: Any) -> list[dict[str, Any]]:
    sentences = [text for text, _ in assets.heldout_sentences(EMBEDDED_SENTENCES)]
    return _batches(assets.minilm_path(), sentences)


def _embeddings(model: Any, batches: list[dict[str, Any]]) -> Any:
    import torch

    pooled = []
    for batch, hidden in zip(batches, _outputs(model, batches, "last_hidden_state")):
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(pooled)


@pytest.fixture(scope="module")
def minilm_reference(assets: Any, minilm_batches: list[dict[str, Any]], export_cache: Path) -> Any:
    model = _load("feature-extraction", assets.minilm_path(), "torch", export_cache, dtype="float32")
    return _embeddings(model, minilm_batches)


@pytest.mark.parametrize(("dtype", "minimum"), [("float32", 0.9999), ("auto", 0.999)])
def test_minilm_embeddings_keep_their_direction(
    assets: Any,
    minilm_batches: list[dict[str, Any]],
    minilm_reference: Any,
    export_cache: Path,
    dtype: str,
    minimum: float,
) -> None:
    model = _load("feature-extraction", assets.minilm_path(), "ov", export_cache, strict=True, dtype=dtype)
    cosine = (_embeddings(model, minilm_batches) * minilm_reference).sum(-1)
    assert len(cosine) == EMBEDDED_SENTENCES
    assert float(cosine.min()) >= minimum, f"{dtype}: lowest cosine {float(cosine.min()):.6f}"


# ---- SmolLM2-135M-Instruct: greedy chat answers (text-generation on the flat KV cache) ----

CHAT_PROMPT = "What is the capital of France?"
CHAT_NEW_TOKENS = 64


@pytest.fixture(scope="module")
def smollm2(assets: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The PyTorch float32 model, its tokenizer and the chat prompt, encoded."""
    import transformers

    path = assets.smollm2_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return model, tokenizer, dict(encoded)


@pytest.fixture(scope="module")
def smollm2_reference(smollm2: tuple[Any, Any, dict[str, Any]]) -> Any:
    import torch

    model, _, encoded = smollm2
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=CHAT_NEW_TOKENS, do_sample=False)
    return output[0, encoded["input_ids"].shape[1] :]


def _ov_greedy(model: Any, tokenizer: Any, encoded: dict[str, Any], folder: Path, **options: Any) -> Any:
    """Greedy decoding on the ``ov`` backend's step graph, stopping at the end-of-sequence token."""
    import torch
    from acceleron_openvino.plugin import OpenVINOBackend

    from acceleron.kv_cache import CacheLayout, from_flat, position_ids_for, to_flat
    from acceleron.tasks import get_task

    task = get_task("text-generation")
    backend = OpenVINOBackend()
    parsed = backend.parse_options({**options, "compile_cache": False})
    folder.mkdir(parents=True, exist_ok=True)
    artifact = backend.export(backend.prepare_plan(task.plan(model), parsed), folder, parsed)
    session = backend.load(artifact, task, parsed)
    layout = CacheLayout.from_config(model.config)
    tokens, mask, cache, generated = encoded["input_ids"], encoded["attention_mask"], None, []
    for _ in range(CHAT_NEW_TOKENS):
        inputs = {
            "input_ids": tokens,
            "attention_mask": mask,
            "position_ids": position_ids_for(mask, tokens.shape[1]),
            **to_flat(cache, layout, 1, torch.float32),
        }
        outputs = session._forward(inputs)
        tokens = outputs["logits"][:, -1].argmax(-1, keepdim=True)
        generated.append(tokens)
        if int(tokens) == tokenizer.eos_token_id:
            break
        cache = from_flat(outputs, layout, model.config)
        mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
    return torch.cat(generated, dim=1)[0]


@pytest.mark.parametrize("dtype", ["float32", "auto", "int8", "int4"])
def test_smollm2_chat_answer_names_paris(
    smollm2: tuple[Any, Any, dict[str, Any]], smollm2_reference: Any, tmp_path: Path, dtype: str
) -> None:
    import torch

    if dtype in ("int8", "int4"):
        pytest.importorskip("nncf", reason=f"dtype={dtype!r} needs the int8 extra (NNCF)")
    model, tokenizer, encoded = smollm2
    got = _ov_greedy(model, tokenizer, encoded, tmp_path / dtype, dtype=dtype)
    answer = tokenizer.decode(got, skip_special_tokens=True)
    assert "Paris" in answer, f"{dtype}: {answer!r}"
    if dtype == "float32":
        assert torch.equal(got, smollm2_reference), f"{answer!r} vs {tokenizer.decode(smollm2_reference)!r}"
