"""Text generation: the flat KV-cache helpers, the generative model class, and the conformance
suite's generation checks on the ``torch`` reference backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from acceleron import kv_cache
from acceleron.cache import ExportCache
from acceleron.modeling import CausalLMModel, OptimizedModel
from acceleron.plugins import get_backend
from acceleron.tasks import get_task
from acceleron.testing import CAUSAL_LM_FAMILIES, BackendConformance, build_tiny_model, tiny_causal_lm
from acceleron.validate import validate_session


class TestTorchGeneration(BackendConformance):
    """The suite's generation checks on the reference backend (its other checks run in
    test_reference_conformance.py)."""

    backend_name = "torch"
    text_architectures = ()
    image_architectures = ()
    audio_architectures = ()
    speech_architectures = ()
    seq2seq_architectures = ()  # test_reference_conformance.py runs them
    test_entry_point_name_is_the_backend_name = None  # type: ignore[assignment]
    test_availability_leaves_the_runtime_unimported = None  # type: ignore[assignment]
    test_save_and_reload_round_trip = None  # type: ignore[assignment]
    test_unsupported_task_is_refused = None  # type: ignore[assignment]
    test_pipeline_matches_transformers = None  # type: ignore[assignment]
    test_speech_recognition_matches_transformers = None  # type: ignore[assignment]
    test_concurrent_calls_match_serial = None  # type: ignore[assignment]


class TestTorchGenerationBfloat16(TestTorchGeneration):
    """bfloat16 runs every check but token identity (which holds for float32 only)."""

    options = {"dtype": "bfloat16"}
    causal_lm_families = ("llama",)
    generation_tokens = 16


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm("llama", tmp_path_factory.mktemp("llama"))


@pytest.mark.parametrize("family", CAUSAL_LM_FAMILIES)
def test_flat_wrapper_matches_the_model_on_prefill_and_decode(family: str, tmp_path: Path) -> None:
    folder = build_tiny_model("text-generation", tmp_path / family, arch=family)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    flat = kv_cache.FlatCacheCausalLM(model).eval()
    layout = flat.layout
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        full = model(input_ids=ids).logits
        prefill = dict(
            zip(
                layout.output_names,
                flat(
                    ids[:, :4],
                    torch.ones(1, 4, dtype=torch.long),
                    torch.arange(4)[None],
                    *layout.empty_past(1).values(),
                ),
            )
        )
        past = [prefill[name] for name in layout.present_names]
        decode = dict(
            zip(layout.output_names, flat(ids[:, 4:], torch.ones(1, 5, dtype=torch.long), torch.tensor([[4]]), *past))
        )
    assert torch.allclose(prefill["logits"], full[:, :4], atol=1e-5)
    assert torch.allclose(decode["logits"], full[:, 4:], atol=1e-5)
    assert decode["present.0.key"].shape == (1, layout.num_kv_heads, 5, layout.head_dim)


def test_flat_round_trip_through_dynamic_cache(llama_folder: Path) -> None:
    config = transformers.AutoConfig.from_pretrained(llama_folder)
    layout = kv_cache.CacheLayout.from_config(config)
    inputs = kv_cache.example_inputs(config, batch_size=2, sequence_length=1, past_length=4)
    outputs = {name.replace("past_key_values", "present"): inputs[name] for name in layout.past_names}
    cache = kv_cache.from_flat(outputs, layout, config)
    assert cache.get_seq_length() == 4
    back = kv_cache.to_flat(cache, layout, 2, torch.float32)
    assert list(back) == layout.past_names
    assert all(torch.equal(back[name], inputs[name]) for name in layout.past_names)
    empty = kv_cache.to_flat(None, layout, 3, torch.float32)
    assert all(tensor.shape == (3, layout.num_kv_heads, 0, layout.head_dim) for tensor in empty.values())


def test_position_ids_skip_left_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert kv_cache.position_ids_for(mask, 3).tolist() == [[0, 1, 2], [2, 3, 4]]
    assert kv_cache.position_ids_for(mask, 1).tolist() == [[2], [4]]


def test_the_plan_hands_backends_the_flat_graph(llama_folder: Path) -> None:
    spec = get_task("text-generation")
    model = spec.load_torch_model(llama_folder)
    layout = kv_cache.CacheLayout.from_config(model.config)
    graph = spec.plan(model).graph
    assert isinstance(graph.module, kv_cache.FlatCacheCausalLM)
    assert list(graph.example_inputs) == graph.input_names == layout.input_names
    assert graph.output_names == layout.output_names
    assert graph.dynamic_axes == layout.dynamic_axes()


def _torch_session(folder: Path) -> Any:
    backend = get_backend("torch")
    artifact = backend.find_artifact(folder)
    assert artifact is not None
    return backend.load(artifact, get_task("text-generation"), backend.parse_options({}))


def test_validation_reports_prefill_and_decode(llama_folder: Path) -> None:
    spec = get_task("text-generation")
    report = validate_session(_torch_session(llama_folder), spec.plan(spec.load_torch_model(llama_folder)))
    assert report.passed, report.summary()
    names = {output.name for output in report.outputs}
    assert {"prefill.logits", "decode.logits", "prefill.present.0.key", "decode.present.1.value"} <= names


def test_validation_fails_on_a_wrong_cache(llama_folder: Path) -> None:
    spec = get_task("text-generation")
    session = _torch_session(llama_folder)
    forward = session._forward

    def broken(inputs: Any) -> dict[str, torch.Tensor]:
        outputs = forward(inputs)
        outputs["present.0.key"] = outputs["present.0.key"] + 1.0
        return outputs

    session._forward = broken
    report = validate_session(session, spec.plan(spec.load_torch_model(llama_folder)))
    assert not report.passed and not report.structural
    assert [o.name for o in report.outputs if not o.passed] == ["prefill.present.0.key", "decode.present.0.key"]


def test_model_class_is_generative_and_pipeline_is_stock(llama_folder: Path, tmp_path: Path) -> None:
    from acceleron import pipeline

    model = OptimizedModel.from_pretrained(
        llama_folder, accelerator="torch", task="text-generation", export_cache=ExportCache(tmp_path / "cache")
    )
    assert type(model) is CausalLMModel and isinstance(model, OptimizedModel)
    assert isinstance(model, transformers.GenerationMixin)
    assert model.can_generate() and model.generation_config.pad_token_id is not None
    assert model.config.is_encoder_decoder is False
    pipe = pipeline("text-generation", str(llama_folder), accelerator="torch")
    assert type(pipe) is transformers.TextGenerationPipeline
    result = pipe("the movie was", max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert result[0]["generated_text"].startswith("the movie was")


def test_each_step_feeds_only_new_tokens(llama_folder: Path) -> None:
    model = OptimizedModel.from_pretrained(llama_folder, accelerator="torch", task="text-generation")
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_folder)
    seen: list[tuple[int, int, int]] = []
    forward = model.session._forward

    def spy(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append(
            (inputs["input_ids"].shape[1], inputs["past_key_values.0.key"].shape[2], inputs["attention_mask"].shape[1])
        )
        return forward(inputs)

    model.session._forward = spy  # type: ignore[method-assign]
    inputs = tokenizer(["what is the capital"], return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert seen == [
        (length, 0, length),
        (1, length, length + 1),
        (1, length + 1, length + 2),
        (1, length + 2, length + 3),
    ]


def test_a_long_prompt_runs_in_chunks_with_the_same_tokens(llama_folder: Path) -> None:
    """Chunked prefill (here 3 tokens a step) generates what one step does, and what PyTorch does."""
    model = OptimizedModel.from_pretrained(llama_folder, accelerator="torch", task="text-generation")
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_folder)
    inputs = tokenizer(
        ["what is the capital of france? the movie was great fun", "paris"],
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    settings = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False}
    whole = model.generate(**inputs, **settings)
    steps: list[int] = []
    forward = model.session._forward

    def spy(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        steps.append(flat["input_ids"].shape[1])
        return forward(flat)

    model.session._forward = spy  # type: ignore[method-assign]
    model.prefill_chunk = 3
    chunked = model.generate(**inputs, **settings)
    length = inputs["input_ids"].shape[1]
    assert steps[: -(12 - 1)] == [3] * (length // 3) + ([length % 3] if length % 3 else [])
    assert torch.equal(chunked, whole)
    reference = transformers.AutoModelForCausalLM.from_pretrained(llama_folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        assert torch.equal(chunked, reference.generate(**inputs, **settings))


def test_logits_to_keep_keeps_only_the_last_positions(llama_folder: Path) -> None:
    model = OptimizedModel.from_pretrained(llama_folder, accelerator="torch", task="text-generation")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    full = model(input_ids=ids).logits
    model.prefill_chunk = 2
    assert torch.allclose(model(input_ids=ids).logits, full, atol=1e-5)
    last = model(input_ids=ids, logits_to_keep=1).logits
    assert last.shape == (1, 1, full.shape[-1])
    assert torch.allclose(last, full[:, -1:], atol=1e-5)


def test_a_runtime_cache_is_refused_where_it_does_not_fit(llama_folder: Path, tmp_path: Path) -> None:
    """A cache continued with the wrong mask, another batch or on another model gets a clear error."""
    from acceleron.errors import InvalidInputError

    def load(name: str) -> Any:
        return OptimizedModel.from_pretrained(
            llama_folder, accelerator="torch", task="text-generation", export_cache=ExportCache(tmp_path / name)
        )

    model, other = load("one"), load("two")
    ids = torch.tensor([[5, 6, 7, 8]])
    cache = model(input_ids=ids).past_key_values
    with pytest.raises(InvalidInputError, match="attention_mask has shape"):
        model(input_ids=ids[:, :1], attention_mask=torch.ones(1, 3, dtype=torch.long), past_key_values=cache)
    with pytest.raises(InvalidInputError, match="holds 1 rows, the inputs have 2"):
        model(input_ids=torch.tensor([[9], [9]]), past_key_values=cache)
    with pytest.raises(InvalidInputError, match="another model"):
        other(input_ids=ids[:, :1], past_key_values=cache)
    assert cache.get_seq_length() == 4  # the refused calls left it as it was
