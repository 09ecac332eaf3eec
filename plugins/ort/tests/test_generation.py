"""text-generation on ONNX Runtime: one graph with the KV cache as inputs and outputs (acceleron.kv_cache).

Tiny random GPT-2, Llama and Qwen2 models are exported through the backend and decoded greedily by a
small loop that carries the present key/values to the next step, the way the core's generation
model does; PyTorch's own ``generate()`` in float32 is the reference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from acceleron import kv_cache
from acceleron.errors import AcceleronError
from acceleron.plugins import get_backend
from acceleron.tasks import TASKS

TASK = TASKS["text-generation"]
FAMILIES = ("gpt2", "llama", "qwen2")
#: (family, decoder option): GPT-2 is traced; Llama and Qwen2 are written fused by default, and Llama
#: also traced, so both ways of writing a decoder stay checked against PyTorch.
DECODERS = [("gpt2", "auto"), ("llama", "auto"), ("qwen2", "auto"), ("llama", "traced")]
DECODER_IDS = ["gpt2", "llama-fused", "qwen2-fused", "llama-traced"]
NEW_TOKENS = 64
VOCAB = 100


def tiny_causal_lm(family: str, seed: int = 0) -> Any:
    """A tiny random causal LM of ``family``, in eval mode, that never stops early (no EOS)."""
    import transformers

    torch.manual_seed(seed)
    if family == "gpt2":
        config: Any = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=None
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        kwargs = {
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "bos_token_id": 1,
            "eos_token_id": None,
        }
        if family == "llama":
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs))
        else:
            model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


@pytest.fixture(scope="module")
def backend() -> Any:
    return get_backend("ort")


@pytest.fixture(scope="module")
def exported(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, Path]]:
    """``exported(family, dtype="float32", decoder="auto")``: (the PyTorch model, its model.onnx), built once."""
    built: dict[tuple[str, str, str], tuple[Any, Path]] = {}

    def get(family: str, dtype: str = "float32", decoder: str = "auto") -> tuple[Any, Path]:
        if (family, dtype, decoder) not in built:
            model = tiny_causal_lm(family)
            folder = tmp_path_factory.mktemp(f"{family}-{dtype}-{decoder}")
            built[(family, dtype, decoder)] = (model, export(backend, model, folder, dtype, decoder=decoder))
        return built[(family, dtype, decoder)]

    return get


def export(backend: Any, model: Any, folder: Path, dtype: str, **options: Any) -> Path:
    """The backend's export hook on the core's text-generation plan of ``model``."""
    parsed = backend.parse_options({"dtype": dtype, **options})
    return Path(backend.export(backend.prepare_plan(TASK.plan(model), parsed), folder, parsed))


def load(backend: Any, path: Path, **options: Any) -> Any:
    return backend.load(path, TASK, backend.parse_options(options))


def _session(backend: Any, path: Path) -> Any:
    return load(backend, path, num_threads=1)


def _prompts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` prompts; with two, the second is three tokens shorter and left-padded."""
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(5, VOCAB, (batch, 9), generator=generator)
    mask = torch.ones_like(ids)
    if batch > 1:
        ids[1, :3] = 0
        mask[1, :3] = 0
    return ids, mask


def greedy(
    session: Any, config: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int
) -> tuple[torch.Tensor, list[int]]:
    """Greedy decoding through ``session._forward`` with the KV cache; returns (new tokens, tokens fed per step)."""
    layout = kv_cache.CacheLayout.from_config(config)
    batch = input_ids.shape[0]
    past: dict[str, torch.Tensor] = layout.empty_past(batch)
    step_ids, mask = input_ids, attention_mask
    generated, fed = [], []
    for _ in range(new_tokens):
        inputs = {
            "input_ids": step_ids,
            "attention_mask": mask,
            "position_ids": kv_cache.position_ids_for(mask, step_ids.shape[1]),
            **past,
        }
        fed.append(step_ids.shape[1])
        outputs = session._forward(inputs)
        # The next step's cache goes through transformers' DynamicCache, as generate() carries it.
        cache = kv_cache.from_flat(outputs, layout, config)
        past = kv_cache.to_flat(cache, layout, batch, torch.float32)
        step_ids = outputs["logits"][:, -1, :].argmax(-1, keepdim=True)
        generated.append(step_ids)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
    return torch.cat(generated, dim=1), fed


def reference(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens, do_sample=False
        )
    return out[:, input_ids.shape[1] :]


def test_text_generation_is_supported(backend: Any) -> None:
    assert "text-generation" in backend.supported_tasks()


@pytest.mark.parametrize(("family", "decoder"), DECODERS, ids=DECODER_IDS)
def test_graph_takes_the_past_and_returns_the_present(backend: Any, exported: Any, family: str, decoder: str) -> None:
    model, path = exported(family, decoder=decoder)
    layout = kv_cache.CacheLayout.from_config(model.config)
    session = _session(backend, path)
    graph_inputs = [node.name for node in session.session.get_inputs()]
    graph_outputs = [node.name for node in session.session.get_outputs()]
    assert graph_inputs[:2] == ["input_ids", "attention_mask"]
    assert set(layout.past_names) <= set(graph_inputs)
    assert graph_outputs == layout.output_names
    # The core sees the flat protocol; a fused decoder's logits_to_keep is the session's own business.
    assert list(session.input_names) == [name for name in graph_inputs if name != "logits_to_keep"]
    assert ("logits_to_keep" in graph_inputs) == (decoder == "auto" and family != "gpt2")
    assert list(session.output_names) == layout.output_names


@pytest.mark.parametrize(("family", "decoder"), DECODERS, ids=DECODER_IDS)
def test_prefill_and_decode_match_pytorch(backend: Any, exported: Any, family: str, decoder: str) -> None:
    model, path = exported(family, decoder=decoder)
    session = _session(backend, path)
    wrapper = kv_cache.FlatCacheCausalLM(model).eval()
    names = wrapper.layout.output_names
    for case_name, case in kv_cache.validation_cases(model.config).items():
        with torch.inference_mode():
            expected = dict(zip(names, wrapper(*case.values())))
        got = session._forward(case)
        assert set(got) == set(names), case_name
        for name in names:
            assert got[name].dtype == torch.float32
            assert got[name].shape == expected[name].shape, (case_name, name)
        # Left-padding positions attend to nothing; what a graph computes there is its own business (the
        # core's rule, kv_cache.visible): eager attention and PyTorch's SDPA differ there, nowhere else.
        got, expected = (kv_cache.visible(x, attention_mask=case["attention_mask"]) for x in (got, expected))
        for name in names:
            assert torch.allclose(got[name], expected[name], atol=1e-4, rtol=0), (case_name, name)


def test_outputs_are_onnxruntime_arrays_not_copies(backend: Any, exported: Any) -> None:
    """The logits and presents are torch views of the arrays onnxruntime returns (torch.from_numpy)."""
    model, path = exported("llama")
    session = _session(backend, path)
    returned: list[np.ndarray] = []
    run = session.session.run

    def spy(*args: Any, **kwargs: Any) -> Any:
        returned.extend(run(*args, **kwargs))
        return returned

    session.session.run = spy
    try:
        got = session._forward(kv_cache.validation_cases(model.config)["decode"])
    finally:
        del session.session.run
    assert len(returned) == len(got)
    for array, tensor in zip(returned, got.values()):
        assert tensor.data_ptr() == array.ctypes.data


@pytest.mark.parametrize("batch", [1, 2], ids=["batch1", "batch2-left-padded"])
@pytest.mark.parametrize(("family", "decoder"), DECODERS, ids=DECODER_IDS)
def test_greedy_64_tokens_match_pytorch(backend: Any, exported: Any, family: str, decoder: str, batch: int) -> None:
    model, path = exported(family, decoder=decoder)
    session = _session(backend, path)
    ids, mask = _prompts(batch)
    tokens, fed = greedy(session, model.config, ids, mask, NEW_TOKENS)
    assert tokens.shape == (batch, NEW_TOKENS)
    assert torch.equal(tokens, reference(model, ids, mask, NEW_TOKENS))
    # A real cache: the prompt once, then one token a step (no recomputation of the prefix).
    assert fed == [ids.shape[1]] + [1] * (NEW_TOKENS - 1)


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llama_family_decoders_are_written_with_fused_ops(backend: Any, exported: Any, family: str) -> None:
    model, fused = exported(family)
    layers = model.config.num_hidden_layers
    counts = _op_counts(fused)
    assert counts["GroupQueryAttention"] == layers
    assert counts["RotaryEmbedding"] == 2 * layers
    assert counts["SkipSimplifiedLayerNormalization"] == 2 * layers
    assert counts["MatMul"] == 4 * layers + 1  # packed q/k/v, o, packed gate/up, down; the LM head
    assert _session(backend, fused).describe()["decoder"] == "fused"
    traced = _op_counts(exported(family, decoder="traced")[1]) if family == "llama" else None
    if traced is not None:
        assert "GroupQueryAttention" not in traced
        assert sum(counts.values()) * 3 < sum(traced.values())


def test_other_decoders_are_traced(backend: Any, exported: Any) -> None:
    _, path = exported("gpt2")
    assert "GroupQueryAttention" not in _op_counts(path)
    assert _session(backend, path).metadata.get("decoder") == "traced"


def test_a_fused_decoder_is_refused_where_the_architecture_has_none(backend: Any, tmp_path: Path) -> None:
    from acceleron.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=r"decoder='fused' cannot write this model: model type 'gpt2'"):
        export(backend, tiny_causal_lm("gpt2"), tmp_path, "float32", decoder="fused")
    with pytest.raises(InvalidOptionError, match="decoder"):
        backend.parse_options({"decoder": "compiled"})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mlp_bias": True}, "a biased MLP"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}, "rope type 'dynamic'"),
    ],
    ids=["mlp-bias", "gelu", "dynamic-rope"],
)
def test_llama_variants_the_fused_graph_cannot_express_are_traced(change: dict[str, Any], reason: str) -> None:
    import transformers

    from acceleron_ort.decoder_graph import unsupported_reason

    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, **change
    )
    assert reason in (unsupported_reason(transformers.LlamaForCausalLM(config)) or "")
    assert unsupported_reason(tiny_causal_lm("llama")) is None


def test_int4_fused_decoder_quantises_every_projection(backend: Any, exported: Any) -> None:
    model, path = exported("llama", "int4")
    counts = _op_counts(path)
    assert counts.get("MatMulNBits") == 4 * model.config.num_hidden_layers + 1
    assert "MatMul" not in counts


def test_two_threads_generate_what_they_generate_alone(backend: Any, exported: Any) -> None:
    model, path = exported("qwen2")
    session = _session(backend, path)
    prompts = [_prompts(2), _prompts(1)]
    serial = [greedy(session, model.config, ids, mask, 24)[0] for ids, mask in prompts]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(prompts))

    def work(index: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                ids, mask = prompts[index]
                results[index] = greedy(session, model.config, ids, mask, 24)[0]
                assert torch.equal(results[index], serial[index])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, expected in enumerate(serial):
        assert torch.equal(results[index], expected)


def test_corrupt_onnx_raises_a_clear_error(backend: Any, exported: Any, tmp_path: Path) -> None:
    _, path = exported("gpt2")
    broken = tmp_path / "model.onnx"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(AcceleronError, match=r"cannot load the ONNX model .*model\.onnx.*export again"):
        load(backend, broken)


def test_a_graph_without_a_cache_is_refused(saved_classifier: Path) -> None:
    """A non-generative graph (here a classifier's) loaded for text-generation names what is missing."""
    from acceleron import OptimizedModel

    with pytest.raises(AcceleronError, match="KV cache|not a causal language model"):
        OptimizedModel.from_pretrained(saved_classifier, accelerator="ort", task="text-generation", export=False)


def test_int8_quantises_the_matmuls_and_decodes(backend: Any, exported: Any) -> None:
    import onnx

    model, path = exported("llama", "int8")
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops  # weight-only blockwise int8, not dynamic per-tensor quantisation
    assert not ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    session = _session(backend, path)
    assert session.metadata.get("dtype") == "int8"
    ids, mask = _prompts(2)
    tokens, fed = greedy(session, model.config, ids, mask, 8)
    assert tokens.shape == (2, 8)
    assert fed == [9] + [1] * 7
    # Quantisation error stays small next to float32 on a decode step.
    case = kv_cache.validation_cases(model.config)["decode"]
    _, float_path = exported("llama")
    float32 = _session(backend, float_path)._forward(case)["logits"]
    int8 = session._forward(case)["logits"]
    assert float(torch.nn.functional.cosine_similarity(int8.flatten(), float32.flatten(), dim=0)) > 0.99


def _matmul_bits(path: Path) -> set[int]:
    """The ``bits`` of every ``MatMulNBits`` node of the file."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    nbits = [node for node in nodes if node.op_type == "MatMulNBits"]
    return {attribute.i for node in nbits for attribute in node.attribute if attribute.name == "bits"}


def test_int4_quantises_the_matmuls_to_4_bits_and_decodes(backend: Any, exported: Any) -> None:
    from acceleron_ort.quantize import WEIGHT_ONLY

    model, path = exported("llama", "int4")
    assert _matmul_bits(path) == {4}
    assert _matmul_bits(exported("llama", "int8")[1]) == {8}
    session = _session(backend, path)
    assert session.metadata.get("dtype") == "int4"
    assert session.describe()["dtype"] == "int4"
    ids, mask = _prompts(2)
    tokens, fed = greedy(session, model.config, ids, mask, 8)
    assert tokens.shape == (2, 8)
    assert fed == [9] + [1] * 7
    # The weights of a tiny random model are Gaussian, the worst case for 4 bits; still close to float32.
    case = kv_cache.validation_cases(model.config)["decode"]
    float32 = _session(backend, exported("llama")[1])._forward(case)["logits"]
    int4 = session._forward(case)["logits"]
    assert float(torch.nn.functional.cosine_similarity(int4.flatten(), float32.flatten(), dim=0)) > 0.9
    assert WEIGHT_ONLY["int4"].bits == 4 and WEIGHT_ONLY["int4"].accuracy_level == 4


def test_a_graph_without_position_ids_still_runs(backend: Any, tmp_path: Path) -> None:
    """An exporter drops inputs the model never reads; the caller's position_ids are then left out."""
    import onnx
    from onnx import TensorProto, helper

    def tensor(name: str, kind: int, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, kind, shape)

    cache = ["batch", 2, None, 4]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["ids_float", "last"], ["logits"]),
            helper.make_node("Concat", ["past_key_values.0.key", "past_key_values.0.key"], ["present.0.key"], axis=2),
            helper.make_node(
                "Concat", ["past_key_values.0.value", "past_key_values.0.value"], ["present.0.value"], axis=2
            ),
        ],
        "tiny-cache",
        [
            tensor("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            tensor("attention_mask", TensorProto.INT64, ["batch", "total"]),
            tensor("past_key_values.0.key", TensorProto.FLOAT, cache),
            tensor("past_key_values.0.value", TensorProto.FLOAT, cache),
        ],
        [
            tensor("logits", TensorProto.FLOAT, ["batch", "sequence", 1]),
            tensor("present.0.key", TensorProto.FLOAT, cache),
            tensor("present.0.value", TensorProto.FLOAT, cache),
        ],
        initializer=[helper.make_tensor("last", TensorProto.INT64, [1], [-1])],
    )
    path = tmp_path / "model.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    session = load(backend, path)
    past = {name: torch.ones(1, 2, 3, 4) for name in ("past_key_values.0.key", "past_key_values.0.value")}
    inputs = {
        "input_ids": torch.tensor([[7]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "position_ids": torch.tensor([[3]]),
        **past,
    }
    assert "position_ids" not in session.input_names
    got = session._forward(TASK.kind.prepare_inputs(inputs, session.input_names))
    assert list(got) == ["logits", "present.0.key", "present.0.value"]
    assert got["logits"].tolist() == [[[7.0]]]
    assert got["present.0.key"].shape == (1, 2, 6, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_greedy_matches_transformers(family: str, tmp_path: Path) -> None:
    """Through acceleron's pipeline and generation model (core): 64 greedy tokens as transformers gives them."""
    import transformers

    import acceleron
    from acceleron.testing import tiny_causal_lm

    folder = tiny_causal_lm(family, tmp_path / family)
    ours = acceleron.pipeline(
        "text-generation", model=str(folder), accelerator="ort", accelerator_options={"num_threads": 1}
    )
    theirs = transformers.pipeline("text-generation", model=str(folder))
    for prompt in ("hello world", "a b c"):
        expected = theirs(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[0]["generated_text"]
        assert ours(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[0]["generated_text"] == expected
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, padding_side="left")
    encoded = tokenizer(["hello world", "a b"], return_tensors="pt", padding=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.inference_mode():
        expected_ids = model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(ours.model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False), expected_ids)


def test_fused_decoder_appends_in_one_growing_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fused decoder's generation: one buffer per layer, grown in place; greedy and beams as transformers."""
    import transformers

    import acceleron
    from acceleron.decoding import RuntimeCache
    from acceleron.testing import tiny_causal_lm
    from acceleron_ort import decode

    monkeypatch.setattr(decode, "INITIAL_CAPACITY", 4)  # the 2-token prompt grows it 4 -> 8 -> ... -> 128
    folder = tiny_causal_lm("llama", tmp_path / "llama")
    ours = acceleron.pipeline(
        "text-generation", model=str(folder), accelerator="ort", accelerator_options={"num_threads": 1}
    ).model
    assert ours.session.metadata.get("decoder") == "fused"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, padding_side="left")
    encoded = tokenizer(["hello world", "a b"], return_tensors="pt", padding=True)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    for settings in ({"do_sample": False}, {"do_sample": False, "num_beams": 3, "num_return_sequences": 2}):
        with torch.inference_mode():
            expected = reference.generate(**encoded, max_new_tokens=NEW_TOKENS, **settings)
        assert torch.equal(ours.generate(**encoded, max_new_tokens=NEW_TOKENS, **settings), expected), settings

    state = ours.session.start_decoding(kv_cache.CacheLayout.from_config(ours.config), 2)
    assert isinstance(state, decode.SharedBufferDecode)
    cache = RuntimeCache(state, ours.session)
    with torch.inference_mode():
        ours(**encoded, past_key_values=cache)
    length, capacity = state.length, state.capacity
    assert length == encoded["input_ids"].shape[1] and capacity >= length
    grow = torch.ones(2, capacity - length + 1, dtype=torch.long)  # one position more than the buffer holds
    with torch.inference_mode():
        ours(input_ids=grow, attention_mask=torch.ones(2, capacity + 1, dtype=torch.long), past_key_values=cache)
    assert (state.length, state.capacity) == (capacity + 1, 2 * capacity)
    past = cache.to_flat()
    assert past["past_key_values.0.key"].shape[2] == state.length
    state.write(past)  # a round trip keeps the cache
    assert torch.equal(cache.to_flat()["past_key_values.1.value"], past["past_key_values.1.value"])


def test_fused_decoder_computes_the_kept_positions_logits_only(backend: Any, exported: Any) -> None:
    """``logits_to_keep``: hidden from the core (the flat path gets every position), fed by the decode state."""
    from acceleron_ort.artifacts import KEEP_INPUT

    model, path = exported("llama")
    session = _session(backend, path)
    assert session.keeps_logits and KEEP_INPUT not in session.input_names
    layout = kv_cache.CacheLayout.from_config(model.config)
    ids, mask = _prompts(2)
    step = {"input_ids": ids, "attention_mask": mask, "position_ids": kv_cache.position_ids_for(mask, ids.shape[1])}
    every = session._forward({**step, **layout.empty_past(2)})["logits"]
    assert every.shape[1] == ids.shape[1]
    last = session.start_decoding(layout, 2).step(step, keep=1)
    assert last.shape == (2, 1, every.shape[-1])
    assert torch.allclose(last, every[:, -1:], atol=1e-5)
    three = session.start_decoding(layout, 2).step(step, keep=3)
    assert torch.allclose(three, every[:, -3:], atol=1e-5)


def test_fused_decoder_refuses_positions_past_the_models_context(tmp_path: Path) -> None:
    """The rotary tables stop at max_position_embeddings: past them, a clear error instead of garbage."""
    import acceleron
    from acceleron.errors import InferenceError
    from acceleron.testing import tiny_causal_lm

    folder = tiny_causal_lm("llama", tmp_path / "llama")
    model = acceleron.pipeline("text-generation", model=str(folder), accelerator="ort").model
    limit = model.config.max_position_embeddings
    ids = torch.randint(5, 50, (1, limit - 2))
    assert model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False).shape[1] == limit
    with pytest.raises(InferenceError, match=rf"at most {limit} positions.*position_ids value {limit}"):
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
