"""Text generation on the ipex backend: one decoder step on the flat KV-cache protocol, on tiny models.

The backend's steps are driven directly here (the core's plan, export, load, the session's ``_forward``),
and greedy decoding runs through transformers' ``DynamicCache`` with :func:`acceleron.kv_cache.to_flat` and
:func:`~acceleron.kv_cache.from_flat`, as the core's generation model does; the reference is PyTorch's
own ``generate()`` in float32.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from acceleron_ipex import artifacts, export

from acceleron.kv_cache import CacheLayout, example_inputs, from_flat, position_ids_for, to_flat, validation_cases
from acceleron.plugins import get_backend
from acceleron.tasks import get_task

FAMILIES = ("gpt2", "llama", "qwen2")
NEW_TOKENS = 64
VOCAB = 100
TASK = get_task("text-generation")


def tiny_causal_lm(family: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A tiny random decoder (2 layers, 4 heads; grouped key/value heads for Llama and Qwen2), no EOS."""
    torch.manual_seed(seed)
    common: dict[str, Any] = {"vocab_size": VOCAB, "bos_token_id": None, "eos_token_id": None, "pad_token_id": 0}
    if family == "gpt2":
        config: Any = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
        model: Any = transformers.GPT2LMHeadModel(config)
    else:
        sizes = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        }
        if family == "llama":
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes, **common))
        else:
            model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**sizes, **common))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Path]]:
    """The PyTorch model of a family and its saved folder, built once per module."""
    root = tmp_path_factory.mktemp("causal-lm")
    built: dict[str, tuple[Any, Path]] = {}

    def get(family: str) -> tuple[Any, Path]:
        if family not in built:
            model = tiny_causal_lm(family)
            model.save_pretrained(root / family)
            built[family] = (model, root / family)
        return built[family]

    return get


def export_and_load(model: Any, folder: Path, **options: Any) -> Any:
    """A session of ``model`` exported into ``folder`` with ``options``."""
    backend = get_backend("ipex")
    checked = backend.parse_options(options)
    folder.mkdir(parents=True, exist_ok=True)
    artifact = backend.export(backend.prepare_plan(TASK.plan(model), checked), folder, checked)
    model.config.save_pretrained(folder)
    return backend.load(artifact, TASK, checked)


def prompts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 1: one prompt of 6 tokens. Batch 2: the second prompt is 3 tokens, left-padded to 6."""
    ids = torch.tensor([[11, 23, 35, 47, 59, 61], [0, 0, 0, 72, 84, 96]])[:batch]
    mask = (ids != 0).long() if batch > 1 else torch.ones_like(ids)
    return ids, mask


def greedy(
    step: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]],
    config: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    new_tokens: int = NEW_TOKENS,
) -> torch.Tensor:
    """Greedy decoding with a flat step function, the cache carried as a ``DynamicCache`` between steps."""
    layout = CacheLayout.from_config(config)
    cache = None
    generated = []
    tokens = ids
    for _ in range(new_tokens):
        past = to_flat(cache, layout, ids.shape[0], torch.float32)
        inputs = {
            "input_ids": tokens,
            "attention_mask": mask,
            "position_ids": position_ids_for(mask, tokens.shape[1]),
            **past,
        }
        outputs = step(inputs)
        tokens = outputs["logits"][:, -1].argmax(-1, keepdim=True)
        generated.append(tokens)
        cache = from_flat(dict(outputs), layout, config)
        mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
    return torch.cat(generated, dim=1)


def pytorch_greedy(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[:, ids.shape[1] :]


def stepper(session: Any) -> Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]:
    return lambda inputs: session._forward(inputs)


# ---- float32 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_greedy_is_token_identical_to_pytorch(
    models: Callable[[str], tuple[Any, Path]], family: str, tmp_path: Path
) -> None:
    model, _ = models(family)
    session = export_and_load(model, tmp_path / "export", dtype="float32")
    assert session.mode == "torchscript", session.recipe.note
    for batch in (1, 2):
        ids, mask = prompts(batch)
        expected = pytorch_greedy(model, ids, mask)
        got = greedy(stepper(session), model.config, ids, mask)
        assert got.shape == (batch, NEW_TOKENS)
        assert torch.equal(got, expected), f"{family} batch {batch}"


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_prefill_and_decode_logits_within_1e_5(
    models: Callable[[str], tuple[Any, Path]], family: str, tmp_path: Path
) -> None:
    from acceleron.kv_cache import FlatCacheCausalLM

    model, _ = models(family)
    session = export_and_load(model, tmp_path / "export", dtype="float32")
    layout = CacheLayout.from_config(model.config)
    reference = FlatCacheCausalLM(model).eval()
    cases = dict(validation_cases(model.config))
    # batch 1 and 3, past 0 and past > 0, besides the shapes the export was checked on
    cases["prefill-1"] = example_inputs(model.config, batch_size=1, sequence_length=5, past_length=0, seed=3)
    cases["decode-1"] = example_inputs(model.config, batch_size=1, sequence_length=1, past_length=17, seed=4)
    cases["prefill-3"] = example_inputs(model.config, batch_size=3, sequence_length=4, past_length=0, seed=5)
    for case, inputs in cases.items():
        with torch.inference_mode():
            expected = dict(zip(layout.output_names, reference(*inputs.values())))
        got = session._forward(inputs)
        assert set(got) == set(layout.output_names)
        for name, tensor in expected.items():
            assert got[name].shape == tensor.shape, f"{case} {name}"
            assert (got[name] - tensor).abs().max().item() <= 1e-5, f"{case} {name}"


def test_saved_artifact_loads_without_the_source_model(
    models: Callable[[str], tuple[Any, Path]], tmp_path: Path
) -> None:
    model, _ = models("llama")
    export_and_load(model, tmp_path / "export", dtype="float32")
    backend = get_backend("ipex")
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "export", moved)
    shutil.rmtree(tmp_path / "export")
    artifact = backend.find_artifact(moved)
    assert artifact is not None and artifact.name == artifacts.TORCHSCRIPT_FILE
    made = artifacts.read_recipe(moved)
    assert made.task == "text-generation" and made.inputs == CacheLayout.from_config(model.config).input_names
    reloaded = backend.load(artifact, TASK, backend.parse_options({"dtype": "float32"}))
    ids, mask = prompts(2)
    assert torch.equal(greedy(stepper(reloaded), model.config, ids, mask), pytorch_greedy(model, ids, mask))


def test_weights_fallback_runs_eager_and_matches(
    models: Callable[[str], tuple[Any, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a trace is not usable, the float32 weights are saved and the step runs eagerly at load time."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no trace today")

    monkeypatch.setattr(export, "trace_and_freeze", refuse)
    model, _ = models("gpt2")
    session = export_and_load(model, tmp_path / "export", dtype="float32")
    assert session.mode == "eager"
    assert session.recipe.kind == "weights" and "no trace today" in session.recipe.note
    ids, mask = prompts(2)
    assert torch.equal(greedy(stepper(session), model.config, ids, mask), pytorch_greedy(model, ids, mask))


# ---- reduced precision --------------------------------------------------------------------------


def test_int8_text_generation_is_refused(models: Callable[[str], tuple[Any, Path]], tmp_path: Path) -> None:
    """Dynamic int8 (per-tensor activation scales) wrecks a decoder's prefill: refused, with the way out."""
    from acceleron.errors import InvalidOptionError

    model, _ = models("llama")
    with pytest.raises(InvalidOptionError, match="weight-only int8 with accelerator='ov' or 'ort'"):
        export_and_load(model, tmp_path / "export", dtype="int8")
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").iterdir())


@pytest.mark.parametrize("dtype", ["bfloat16"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_reduced_precision_steps_have_the_right_shapes(
    models: Callable[[str], tuple[Any, Path]], family: str, dtype: str, tmp_path: Path
) -> None:
    model, _ = models(family)
    session = export_and_load(model, tmp_path / "export", dtype=dtype)
    layout = CacheLayout.from_config(model.config)
    assert session.mode == "torchscript", session.recipe.note
    for inputs in validation_cases(model.config).values():
        got = session._forward(inputs)
        batch, length = inputs["input_ids"].shape
        total = inputs["attention_mask"].shape[1]
        assert got["logits"].shape == (batch, length, VOCAB)
        assert got["logits"].dtype == torch.float32
        assert bool(torch.isfinite(got["logits"]).all())
        for name in layout.present_names:
            assert got[name].shape == (batch, layout.num_kv_heads, total, layout.head_dim)
    ids, mask = prompts(2)
    assert greedy(stepper(session), model.config, ids, mask, new_tokens=8).shape == (2, 8)


def test_int8_quantises_gpt2_projections_too(models: Callable[[str], tuple[Any, Path]]) -> None:
    """GPT-2's Conv1D projections become Linear layers, so dynamic int8 covers them and not only the head."""
    model, _ = models("gpt2")
    prepared = export.prepare(model, "torch", "int8")
    quantized = [name for name, module in prepared.named_modules() if "quantized" in type(module).__module__]
    assert any(name.endswith("attn.c_attn") for name in quantized), quantized
    assert any(name.endswith("mlp.c_proj") for name in quantized), quantized
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # the source model is untouched


# ---- threads ------------------------------------------------------------------------------------


def test_two_threads_generating_at_once_get_their_serial_results(
    models: Callable[[str], tuple[Any, Path]], tmp_path: Path
) -> None:
    model, _ = models("qwen2")
    session = export_and_load(model, tmp_path / "export", dtype="float32")
    step = stepper(session)
    jobs = [prompts(1), prompts(2)]
    serial = [greedy(step, model.config, ids, mask) for ids, mask in jobs]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            results[index] = greedy(step, model.config, *jobs[index % 2])
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, tokens in results.items():
        assert torch.equal(tokens, serial[index % 2]), index
