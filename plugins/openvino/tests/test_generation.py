"""Text generation on the ``ov`` backend: the flat KV-cache step graph on tiny GPT-2, Llama and Qwen2 models.

The backend's steps are driven directly (prepare_plan, export, load, the session's ``_forward``); greedy
decoding carries the cache between steps as transformers' ``DynamicCache`` through
:func:`acceleron.kv_cache.to_flat` and :func:`~acceleron.kv_cache.from_flat`, as the core's generation model
does. The reference is PyTorch's own ``generate()`` in float32.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from acceleron_openvino.plugin import OpenVINOBackend

from acceleron.errors import InvalidOptionError
from acceleron.kv_cache import (
    CacheLayout,
    FlatCacheCausalLM,
    example_inputs,
    from_flat,
    position_ids_for,
    to_flat,
    validation_cases,
)
from acceleron.tasks import get_task

FAMILIES = ("gpt2", "llama", "qwen2")
NEW_TOKENS = 64
TASK = get_task("text-generation")
Step = Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]


def tiny_causal_lm(family: str) -> Any:
    """A tiny random decoder: 2 layers, 4 heads (2 key/value heads for Llama and Qwen2), vocabulary 100, no EOS."""
    torch.manual_seed(0)
    special: dict[str, Any] = {"vocab_size": 100, "bos_token_id": None, "eos_token_id": None, "pad_token_id": 0}
    if family == "gpt2":
        model: Any = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **special)
        )
    else:
        sizes: dict[str, Any] = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        }
        config_class, model_class = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        }[family]
        model = model_class(config_class(**sizes, **special))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, Any]]:
    """``sessions(family, dtype)``: the PyTorch model and a loaded ``ov`` session of it, exported once."""
    root = tmp_path_factory.mktemp("ov-generation")
    models: dict[str, Any] = {}
    loaded: dict[tuple[str, str], tuple[Any, Any]] = {}

    def get(family: str, dtype: str = "float32") -> tuple[Any, Any]:
        if family not in models:
            models[family] = tiny_causal_lm(family)
        if (family, dtype) not in loaded:
            model = models[family]
            backend = OpenVINOBackend()
            options = backend.parse_options({"dtype": dtype, "num_threads": 1, "compile_cache": False})
            folder = root / f"{family}-{dtype}"
            folder.mkdir()
            artifact = backend.export(backend.prepare_plan(TASK.plan(model), options), folder, options)
            loaded[family, dtype] = (model, backend.load(artifact, TASK, options))
        return loaded[family, dtype]

    return get


def step_of(session: Any) -> Step:
    return lambda inputs: session._forward(inputs)


def prompts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 1: a prompt of 6 tokens. Batch 2: a second prompt of 3 tokens, left-padded to 6."""
    ids = torch.tensor([[11, 23, 35, 47, 59, 61], [0, 0, 0, 72, 84, 96]])[:batch]
    mask = (ids != 0).long()
    return ids, mask


def greedy(step: Step, config: Any, ids: torch.Tensor, mask: torch.Tensor, steps: list[int] | None = None) -> Any:
    """Greedy decoding of ``NEW_TOKENS`` tokens; ``steps`` collects the input length fed at each step."""
    layout = CacheLayout.from_config(config)
    cache = None
    tokens, generated = ids, []
    for _ in range(NEW_TOKENS):
        inputs = {
            "input_ids": tokens,
            "attention_mask": mask,
            "position_ids": position_ids_for(mask, tokens.shape[1]),
            **to_flat(cache, layout, ids.shape[0], torch.float32),
        }
        if steps is not None:
            steps.append(tokens.shape[1])
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


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch", [1, 2])
def test_float32_greedy_is_token_identical_to_pytorch(
    sessions: Callable[..., tuple[Any, Any]], family: str, batch: int
) -> None:
    model, session = sessions(family)
    ids, mask = prompts(batch)
    steps: list[int] = []
    got = greedy(step_of(session), model.config, ids, mask, steps)
    assert steps == [ids.shape[1]] + [1] * (NEW_TOKENS - 1)  # a real cache: decode steps feed one token
    assert got.shape == (batch, NEW_TOKENS)
    assert torch.equal(got, pytorch_greedy(model, ids, mask))


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_prefill_and_decode_logits_and_presents_within_1e_4(
    sessions: Callable[..., tuple[Any, Any]], family: str
) -> None:
    model, session = sessions(family)
    layout = CacheLayout.from_config(model.config)
    reference = FlatCacheCausalLM(model).eval()
    cases = dict(validation_cases(model.config))  # left-padded prefill at batch 2, decode at batch 3
    cases["prefill-1"] = example_inputs(model.config, batch_size=1, sequence_length=5, past_length=0, seed=3)
    cases["decode-1"] = example_inputs(model.config, batch_size=1, sequence_length=1, past_length=17, seed=4)
    for case, inputs in cases.items():
        with torch.inference_mode():
            expected = dict(zip(layout.output_names, reference(*inputs.values())))
        got = session._forward(inputs)
        assert list(got) == layout.output_names
        for name, tensor in expected.items():
            assert got[name].dtype == torch.float32
            assert got[name].shape == tensor.shape, f"{case} {name}"
            assert torch.isfinite(got[name]).all(), f"{case} {name}"
            assert (got[name] - tensor).abs().max().item() <= 1e-4, f"{case} {name}"


def test_ir_is_stateful_and_the_session_keeps_the_flat_protocol(sessions: Callable[..., tuple[Any, Any]]) -> None:
    """The exported IR keeps its cache in variables; the session still names the flat inputs and outputs."""
    model, session = sessions("llama")
    layout = CacheLayout.from_config(model.config)
    compiled = session.compiled
    assert [port.get_any_name() for port in compiled.inputs] == [
        "input_ids",
        "attention_mask",
        "position_ids",
        "beam_idx",
        "logits_to_keep",
    ]
    assert [port.get_any_name() for port in compiled.outputs] == ["logits"]
    assert str(compiled.output("logits").get_partial_shape()) == "[?,?,100]"
    assert list(session.input_names) == layout.input_names
    assert list(session.output_names) == layout.output_names
    states = compiled.create_infer_request().query_state()
    assert len(states) == len(layout.past_names)
    assert session.describe()["kv_cache"]["precision"] == "float32"


def test_attention_implementation_of_the_source_model_is_restored(
    sessions: Callable[..., tuple[Any, Any]],
) -> None:
    model, _ = sessions("qwen2")
    assert model.config._attn_implementation == "sdpa"


def test_two_threads_generating_at_once_get_their_serial_results(sessions: Callable[..., tuple[Any, Any]]) -> None:
    model, session = sessions("llama")
    step = step_of(session)
    jobs = [prompts(2), (torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]]), torch.ones(1, 8, dtype=torch.long))]
    serial = [greedy(step, model.config, ids, mask) for ids, mask in jobs]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = greedy(step, model.config, *jobs[index])
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, expected in enumerate(serial):
        assert torch.equal(results[index], expected)
    assert session.pool.created >= 1


def test_int8_weights_still_generate(sessions: Callable[..., tuple[Any, Any]]) -> None:
    pytest.importorskip("nncf", reason="dtype='int8' needs the int8 extra (NNCF)")
    model, session = sessions("llama", "int8")
    assert session.weights == "int8"
    ids, mask = prompts(2)
    got = greedy(step_of(session), model.config, ids, mask)
    assert got.shape == (2, NEW_TOKENS)
    # Random tiny weights leave logits close together, so int8 may pick other tokens later on; the first agree.
    assert torch.equal(got[:, :1], pytorch_greedy(model, ids, mask)[:, :1])


def test_int4_weights_still_generate(sessions: Callable[..., tuple[Any, Any]]) -> None:
    pytest.importorskip("nncf", reason="dtype='int4' needs the int8 extra (NNCF)")
    import openvino

    model, session = sessions("llama", "int4")
    assert session.weights == "int4"
    assert session.describe()["dtype"] == "int4"
    weight_types = {
        node.get_output_element_type(0).get_type_name()
        for node in openvino.Core().read_model(session.artifact).get_ops()
        if node.get_type_name() == "Constant"
    }
    assert "i4" in weight_types  # 4-bit groups; NNCF keeps the embedding and the LM head in int8
    ids, mask = prompts(2)
    got = greedy(step_of(session), model.config, ids, mask)
    assert got.shape == (2, NEW_TOKENS)


def test_static_shapes_are_refused_for_generation(sessions: Callable[..., tuple[Any, Any]]) -> None:
    _, session = sessions("gpt2")
    backend = OpenVINOBackend()
    options = backend.parse_options({"static_batch_size": 1, "compile_cache": False})
    with pytest.raises(InvalidOptionError, match="do not apply to text-generation"):
        backend.load(session.artifact, TASK, options)


def test_text_generation_is_a_supported_task() -> None:
    assert "text-generation" in OpenVINOBackend().supported_tasks()


def test_export_refuses_inputs_off_the_protocol(tmp_path: Path) -> None:
    from acceleron.errors import ExportError

    backend = OpenVINOBackend()
    options = backend.parse_options({"dtype": "float32"})
    plan = backend.prepare_plan(TASK.plan(tiny_causal_lm("gpt2")), options)
    plan.graph.example_inputs.pop("position_ids")
    with pytest.raises(ExportError, match="must be"):
        backend.export(plan, tmp_path, options)


def test_prepare_plan_swaps_only_the_flat_cache_step(tiny_classifier: Path) -> None:
    from acceleron_openvino.generation import DirectPast

    backend = OpenVINOBackend()
    options = backend.parse_options({"dtype": "float32"})
    causal = TASK.plan(tiny_causal_lm("llama"))
    prepared = backend.prepare_plan(causal, options)
    assert isinstance(prepared.graph.module, DirectPast) and prepared.graph.module.model is causal.model
    assert prepared.graph.input_names == causal.graph.input_names
    classifier = get_task("text-classification")
    plan = classifier.plan(classifier.load_torch_model(tiny_classifier))
    assert backend.prepare_plan(plan, options).graph.module is plan.graph.module


def test_a_flat_ir_is_made_stateful_when_loaded(tmp_path: Path) -> None:
    """An IR saved with past/present ports (acceleron before the stateful export) loads stateful, same results."""
    import openvino
    from acceleron_openvino.export import convert_graph
    from acceleron_openvino.stateful import past_inputs

    model = tiny_causal_lm("llama")
    backend = OpenVINOBackend()
    options = backend.parse_options({"dtype": "float32", "num_threads": 1, "compile_cache": False})
    plan = backend.prepare_plan(TASK.plan(model), options)
    flat = convert_graph(plan.graphs[0], "tiny llama")
    assert past_inputs(flat)  # convert_graph alone leaves the flat ports
    target = tmp_path / "openvino_model.xml"
    openvino.save_model(flat, str(target), compress_to_fp16=False)
    session = backend.load(target, TASK, options)
    assert session.stateful and session.keeps_logits
    layout = CacheLayout.from_config(model.config)
    ids, mask = prompts(2)
    state = session.start_decoding(layout, 2)
    try:
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask, ids.shape[1])}
        last = state.step(inputs, 1)
        assert last.shape == (2, 1, 100) and state.length == ids.shape[1]
        with torch.inference_mode():
            expected = model(input_ids=ids, attention_mask=mask, position_ids=inputs["position_ids"]).logits
        assert (last[:, 0] - expected[:, -1]).abs().max().item() < 1e-4
        past = state.read()
        assert list(past) == layout.past_names and past[layout.past_names[0]].shape[2] == ids.shape[1]
    finally:
        state.close()
    assert session.pool.created == 1  # the flat-protocol calls and the generation shared the pooled request
