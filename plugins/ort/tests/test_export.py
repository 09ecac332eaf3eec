"""Exporting: exporters, external data, fusions, int8, failures, options."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from support import SENTENCES, encode, load

from acceleron.cache import ExportCache
from acceleron.errors import AcceleronError, ExportError, InvalidOptionError
from acceleron.tasks import get_task
from acceleron_ort import export

QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def _entries(cache: ExportCache) -> list[Any]:
    return list(cache.entries())


@pytest.fixture
def cache(tmp_path: Path) -> ExportCache:
    return ExportCache(tmp_path / "cache")


def _reference(folder: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return get_task("text-classification").load_torch_model(folder)(**inputs).logits


# ---- the default export ----


def test_default_export_is_one_self_contained_torchscript_file(tiny_classifier: Path, cache: ExportCache) -> None:
    model = load(tiny_classifier, export_cache=cache)
    files = sorted(path.name for path in model.artifact.parent.iterdir() if path.suffix in {".onnx", ".data"})
    assert files == ["model.onnx"]
    assert model.report()["runtime"]["exporter"] == "torchscript"
    assert model.backend.artifact_files(model.artifact) == [model.artifact]


def test_a_failed_export_raises_the_cause_and_leaves_no_cache_entry(tiny_classifier: Path, cache: ExportCache) -> None:
    # The TorchScript exporter has no SDPA before opset 14: a real conversion failure (with the model's own
    # attention traced; the default eager pattern exports at opset 11).
    with pytest.raises(ExportError, match="scaled_dot_product_attention.*opset version 11"):
        load(tiny_classifier, export_cache=cache, opset=11, attention="model")
    assert _entries(cache) == []
    assert [path.name for path in cache.root.iterdir() if not path.name.startswith(".")] == []
    assert list((cache.root / ".tmp").iterdir()) == []


def test_the_onnx_checker_rejects_an_invalid_graph(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["y"])],
        "broken",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match="not a valid ONNX model.*NoSuchOp"):
        export.check_onnx(path)


# ---- external data ----


def test_weights_above_the_threshold_go_to_one_external_data_file(
    tiny_classifier: Path, cache: ExportCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(export, "EXTERNAL_DATA_THRESHOLD", 0)
    model = load(tiny_classifier, export_cache=cache)
    data = model.artifact.parent / "model.onnx.data"
    assert model.backend.artifact_files(model.artifact) == [model.artifact, data]
    assert data.stat().st_size > model.artifact.stat().st_size
    inputs = encode(tiny_classifier, SENTENCES)
    assert torch.allclose(model(**inputs).logits, _reference(tiny_classifier, inputs), atol=1e-4)
    saved = model.save_pretrained(tmp_path / "saved")
    assert (saved / "model.onnx.data").is_file()
    reloaded = load(saved, export=False)
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def test_scattered_external_data_is_gathered_into_one_file(tmp_path: Path) -> None:
    # The TorchScript exporter writes one file per tensor for models over 2 GB.
    weights = onnx.numpy_helper.from_array(torch.arange(600, dtype=torch.float32).numpy(), "w")
    bias = onnx.numpy_helper.from_array(torch.ones(600).numpy(), "b")
    node = onnx.helper.make_node("Add", ["w", "b"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g", [], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [600])], [weights, bias]
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(onnx.helper.make_model(graph), str(path), save_as_external_data=True, all_tensors_to_one_file=False)
    assert len(list(tmp_path.iterdir())) == 3
    export.store_weights(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    restored = onnx.numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])
    assert restored.tolist() == list(range(600))


def test_a_missing_external_data_file_is_a_clear_load_error(
    tiny_classifier: Path, cache: ExportCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(export, "EXTERNAL_DATA_THRESHOLD", 0)
    saved = load(tiny_classifier, export_cache=cache).save_pretrained(tmp_path / "saved")
    (saved / "model.onnx.data").unlink()
    with pytest.raises(AcceleronError, match=r"cannot load the ONNX model .*model\.onnx.*external data"):
        load(saved, export=False)


# ---- the other exporter ----


@pytest.mark.slow
def test_dynamo_exporter_writes_external_data_and_matches_pytorch(
    tiny_classifier: Path, cache: ExportCache, tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript")
    model = load(tiny_classifier, export_cache=cache, exporter="dynamo")
    assert model.report()["runtime"]["exporter"] == "dynamo"
    assert [path.name for path in model.backend.artifact_files(model.artifact)] == ["model.onnx", "model.onnx.data"]
    inputs = encode(tiny_classifier, SENTENCES)
    assert torch.allclose(model(**inputs).logits, _reference(tiny_classifier, inputs), atol=1e-4)
    saved = model.save_pretrained(tmp_path / "saved")
    assert torch.equal(load(saved, export=False)(**inputs).logits, model(**inputs).logits)


def test_dynamo_exporter_without_onnxscript_says_what_to_install(
    tiny_classifier: Path, cache: ExportCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    with pytest.raises(ExportError, match=r"pip install 'acceleron-ort\[dynamo\]'"):
        load(tiny_classifier, export_cache=cache, exporter="dynamo")
    assert _entries(cache) == []


# ---- fusions ----


def test_optimize_fuses_attention_and_stays_within_tolerance(tiny_classifier: Path, cache: ExportCache) -> None:
    model = load(tiny_classifier, export_cache=cache, optimize=True)
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= _op_types(model.artifact)
    assert "Attention" in model.report()["runtime"]["fused"]
    inputs = encode(tiny_classifier, SENTENCES)
    assert torch.allclose(model(**inputs).logits, _reference(tiny_classifier, inputs), atol=1e-4)


def test_optimize_restores_the_models_attention_implementation(tiny_classifier: Path, tmp_path: Path) -> None:
    from acceleron_ort.fusion import eager_attention

    model = get_task("text-classification").load_torch_model(tiny_classifier, attn_implementation="sdpa")
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("options", "traced"),
    [({}, "eager"), ({"attention": "model"}, "sdpa"), ({"attention": "model", "optimize": True}, "eager")],
)
def test_attention_is_traced_eager_by_default_and_the_model_keeps_its_own(
    tiny_classifier: Path, options: dict[str, object], traced: str
) -> None:
    from acceleron.plugins import get_backend

    backend = get_backend("ort")
    model = get_task("text-classification").load_torch_model(tiny_classifier, attn_implementation="sdpa")
    plan = get_task("text-classification").plan(model)
    prepared = backend.prepare_plan(plan, backend.parse_options(options))
    if traced == "sdpa":
        assert prepared is plan
    seen: list[str] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    with torch.inference_mode():
        prepared.graph.module(*prepared.graph.example_args)
    assert seen == [traced]
    assert model.config._attn_implementation == "sdpa"


def test_attention_option_is_checked() -> None:
    from acceleron.errors import InvalidOptionError
    from acceleron.plugins import get_backend

    with pytest.raises(InvalidOptionError, match="attention='flash'"):
        get_backend("ort").parse_options({"attention": "flash"})


# ---- int8 ----


@pytest.fixture(scope="module")
def tagger(tiny_model: Any) -> Path:
    """A tiny token classifier: 5 labels over hundreds of tokens, so label agreement means something."""
    return tiny_model("token-classification", "bert")


@pytest.fixture(scope="module")
def float32_and_int8(tagger: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    shared = ExportCache(tmp_path_factory.mktemp("int8-cache"))
    task = "token-classification"
    yield load(tagger, task, export_cache=shared), load(tagger, task, export_cache=shared, dtype="int8")


def test_int8_export_is_its_own_cache_entry(float32_and_int8: tuple[Any, Any]) -> None:
    float32, int8 = float32_and_int8
    assert float32.artifact.parent != int8.artifact.parent
    assert float32.artifact.parent.parent == int8.artifact.parent.parent
    # The manifest records the fields that shape the artifact, dtype as the one computed in ("auto" resolved).
    recorded = {
        "dtype": "float32",
        "exporter": "torchscript",
        "opset": None,
        "attention": "eager",
        "optimize": False,
        "decoder": "auto",
    }
    assert float32.manifest["options"] == recorded
    assert int8.manifest["options"]["dtype"] == "int8"
    assert not QUANTIZED_OPS & _op_types(float32.artifact)
    assert QUANTIZED_OPS & _op_types(int8.artifact)
    assert int8.report()["runtime"]["dtype"] == "int8"
    assert sorted(path.name for path in int8.artifact.parent.glob("*.onnx*")) == ["model.onnx"]


def test_int8_agrees_with_float32_labels_on_the_tiny_model(float32_and_int8: tuple[Any, Any], tagger: Path) -> None:
    float32, int8 = float32_and_int8
    sentences = [f"{first} {second}" for first in SENTENCES for second in SENTENCES[:4]]
    inputs = encode(tagger, sentences)
    tokens = inputs["attention_mask"].bool()
    labels32 = float32(**inputs).logits.argmax(-1)[tokens]
    labels8 = int8(**inputs).logits.argmax(-1)[tokens]
    assert len(set(labels32.tolist())) >= 3, "the tiny tagger should predict several labels"
    agreement = float((labels32 == labels8).float().mean())
    assert agreement >= 0.97, f"int8 agrees with float32 on {agreement:.1%} of {len(labels32)} tokens"


def test_int4_is_weight_only_for_a_task_that_does_not_generate(tagger: Path, tmp_path: Path) -> None:
    """int4 has no dynamic recipe: a classifier's MatMuls become 4-bit ``MatMulNBits`` too."""
    cache = ExportCache(tmp_path / "cache")
    float32 = load(tagger, "token-classification", export_cache=cache)
    int4 = load(tagger, "token-classification", export_cache=cache, dtype="int4")
    assert int4.manifest["options"]["dtype"] == "int4"
    assert int4.report()["runtime"]["dtype"] == "int4"
    ops = _op_types(int4.artifact)
    assert "MatMulNBits" in ops and not QUANTIZED_OPS & ops
    inputs = encode(tagger, SENTENCES)
    tokens = inputs["attention_mask"].bool()
    agreement = float(
        (float32(**inputs).logits.argmax(-1)[tokens] == int4(**inputs).logits.argmax(-1)[tokens]).float().mean()
    )
    assert agreement >= 0.8, f"int4 agrees with float32 on {agreement:.1%} of the tokens"


# ---- options ----


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"exporter": "jit"}, "exporter='jit' is not valid.*torchscript, dynamo"),
        ({"graph_optimization": "max"}, "graph_optimization='max'.*disable, basic, extended, all"),
        ({"opset": 7}, "opset must be an integer between 11 and 23"),
        ({"optimize": "yes"}, "optimize must be True or False"),
        ({"session_options": ["threads"]}, "session_options must be a dict"),
        ({"provider": "cuda"}, "provider must name an onnxruntime execution provider"),
        ({"dtype": "bfloat16"}, "does not support dtype='bfloat16'"),
        ({"intra_op_threads": 2}, "does not know the option"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    tiny_classifier: Path, cache: ExportCache, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        load(tiny_classifier, export_cache=cache, **options)
    assert not cache.root.exists()
