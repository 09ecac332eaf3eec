"""Text generation on the real SmolLM2-135M-Instruct with the ipex backend: answers, never timings.

Runs only with ``ACCELERON_REAL_MODELS=1``; the folder comes from the ``assets`` fixture (conftest.py)::

    HF_HUB_OFFLINE=1 ACCELERON_REAL_MODELS=1 python -m pytest plugins/ipex/tests/test_real_generation.py
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

QUESTION = "What is the capital of France?"
NEW_TOKENS = 64


@pytest.fixture(scope="module")
def smollm2(assets: Any) -> tuple[Any, Any, Path]:
    """The PyTorch float32 model, its tokenizer and its folder."""
    import transformers

    path = assets.smollm2_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype="float32").eval()
    return model, tokenizer, path


@pytest.fixture(scope="module")
def prompt(smollm2: tuple[Any, Any, Path]) -> dict[str, Any]:
    _, tokenizer, _ = smollm2
    messages = [{"role": "user", "content": QUESTION}]
    return dict(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    )


@pytest.fixture(scope="module")
def reference_tokens(smollm2: tuple[Any, Any, Path], prompt: dict[str, Any]) -> Any:
    import torch

    model, _, _ = smollm2
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, prompt["input_ids"].shape[1] :]


def _greedy(session: Any, model: Any, prompt: dict[str, Any]) -> Any:
    """Greedy decoding through the backend's flat step, stopping at the model's end-of-sequence token."""
    import torch

    from acceleron.kv_cache import CacheLayout, from_flat, position_ids_for, to_flat

    layout = CacheLayout.from_config(model.config)
    eos = model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos])
    tokens, mask, cache, generated = prompt["input_ids"], prompt["attention_mask"], None, []
    for _ in range(NEW_TOKENS):
        inputs = {
            "input_ids": tokens,
            "attention_mask": mask,
            "position_ids": position_ids_for(mask, tokens.shape[1]),
            **to_flat(cache, layout, 1, torch.float32),
        }
        outputs = session._forward(inputs)
        tokens = outputs["logits"][:, -1].argmax(-1, keepdim=True)
        generated.append(int(tokens))
        cache = from_flat(dict(outputs), layout, model.config)
        mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
        if generated[-1] in stop:
            break
    return torch.tensor(generated)


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
def test_smollm2_names_paris(
    smollm2: tuple[Any, Any, Path], prompt: dict[str, Any], reference_tokens: Any, dtype: str, tmp_path: Path
) -> None:
    import torch

    from acceleron.plugins import get_backend
    from acceleron.tasks import get_task

    model, tokenizer, _ = smollm2
    backend = get_backend("ipex")
    options = backend.parse_options({"dtype": dtype})
    task = get_task("text-generation")
    artifact = backend.export(backend.prepare_plan(task.plan(model), options), tmp_path, options)
    model.config.save_pretrained(tmp_path)
    session = backend.load(artifact, task, options)
    tokens = _greedy(session, model, prompt)
    answer = tokenizer.decode(tokens, skip_special_tokens=True)
    assert "Paris" in answer, f"{dtype}: {answer!r}"
    if options.compute_dtype == "float32":
        assert session.mode == "torchscript", session.recipe.note
        assert torch.equal(tokens, reference_tokens), f"{answer!r} vs {tokenizer.decode(reference_tokens)!r}"
