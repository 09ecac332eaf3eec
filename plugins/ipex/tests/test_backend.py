"""The ipex backend on tiny models: exactness, dtypes, the artifact on disk, options and threads."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from acceleron_ipex import artifacts, cpu, engine

from acceleron import OptimizedModel
from acceleron.errors import AcceleronError, InvalidOptionError
from acceleron.plugins import get_backend
from acceleron.tasks import get_task
from acceleron.testing import build_tiny_model

TINY_CASES = [
    ("text-classification", "bert"),
    ("text-classification", "roberta"),
    ("text-classification", "distilbert"),
    ("question-answering", "bert"),
    ("image-classification", "vit"),
    ("audio-classification", "wav2vec2"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    root = tmp_path_factory.mktemp("tiny")
    built: dict[tuple[str, str], Path] = {}

    def get(task: str, arch: str = "bert") -> Path:
        if (task, arch) not in built:
            text_arch = None if arch in {"vit", "wav2vec2"} else arch
            built[(task, arch)] = build_tiny_model(task, root / f"{task}-{arch}", text_arch)
        return built[(task, arch)]

    return get


def load(folder: Path, task: str, **options: Any) -> Any:
    return OptimizedModel.from_pretrained(folder, accelerator="ipex", task=task, strict=True, **options)


def reference(folder: Path, task: str, batch_size: int = 3, sequence_length: int = 13) -> tuple[dict, dict]:
    spec = get_task(task)
    model = spec.load_torch_model(folder)
    inputs = spec.example_inputs(model, batch_size=batch_size, sequence_length=sequence_length, seed=5)
    with torch.inference_mode():
        outputs = {name: model(**inputs)[name] for name in spec.output_names}
    return inputs, outputs


# ---- float32 is exact --------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "arch"), TINY_CASES, ids=[f"{t}-{a}" for t, a in TINY_CASES])
def test_float32_matches_pytorch_within_1e_5(tiny: Callable[[str, str], Path], task: str, arch: str) -> None:
    folder = tiny(task, arch)
    model = load(folder, task, dtype="float32")
    inputs, expected = reference(folder, task)
    got = model(**inputs)
    assert model.report()["runtime"]["mode"] == "torchscript"
    for name, tensor in expected.items():
        assert (got[name] - tensor).abs().max().item() <= 1e-5, name


# ---- dtypes -------------------------------------------------------------------------------------


def test_auto_is_bfloat16_exactly_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = get_backend("ipex")
    for flags, expected in ((frozenset({"avx512f", "amx_bf16"}), "bfloat16"), (frozenset({"avx512f"}), "float32")):
        monkeypatch.setattr(cpu, "cpu_flags", lambda flags=flags: flags)
        cpu.has_native_bf16.cache_clear()
        assert backend.parse_options({"dtype": "auto"}).compute_dtype == expected
    cpu.has_native_bf16.cache_clear()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert cpu.cpu_flags(cpuinfo) == frozenset({"fpu", "avx512f", "avx512_bf16", "amx_tile"})
    assert cpu.cpu_flags(tmp_path / "missing") is None


def test_bfloat16_runs_in_bfloat16_and_keeps_the_labels(tiny: Callable[[str, str], Path]) -> None:
    folder = tiny("token-classification", "bert")
    model = load(folder, "token-classification", dtype="bfloat16")
    inputs, expected = reference(folder, "token-classification")
    got = model(**inputs).logits
    assert model.report()["runtime"]["dtype"] == "bfloat16"
    assert got.dtype == torch.float32  # outputs come back in float32
    assert 0 < (got - expected["logits"]).abs().max().item() < 0.05  # really computed in bfloat16, and close
    assert (got.argmax(-1) == expected["logits"].argmax(-1)).float().mean().item() >= 0.95


def test_bfloat16_image_inputs_are_bfloat16_for_the_torch_engine(tiny: Callable[[str, str], Path]) -> None:
    model = load(tiny("image-classification", "vit"), "image-classification", dtype="bfloat16", engine="torch")
    assert model.dtype == torch.bfloat16  # pipelines cast pixel values to model.dtype


def test_int8_runs_dynamically_quantised_linears(tiny: Callable[[str, str], Path]) -> None:
    folder = tiny("text-classification", "bert")
    model = load(folder, "text-classification", dtype="int8")
    inputs, expected = reference(folder, "text-classification")
    got = model(**inputs).logits
    kinds = {node.kind() for node in model.session.module.graph.nodes()}
    assert "quantized::linear_dynamic" in kinds
    assert "aten::linear" not in kinds
    assert model.report()["runtime"]["dtype"] == "int8"
    assert 0 < (got - expected["logits"]).abs().max().item() < 0.05
    assert torch.equal(got.argmax(-1), expected["logits"].argmax(-1))


# ---- the artifact -------------------------------------------------------------------------------


def test_saved_model_loads_and_runs_without_the_source(tiny: Callable[[str, str], Path], tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny("text-classification", "bert"), source)
    inputs, _ = reference(source, "text-classification")
    model = load(source, "text-classification", dtype="int8", export_cache=tmp_path / "cache")
    saved = model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(source)
    shutil.rmtree(tmp_path / "cache")
    reloaded = OptimizedModel.from_pretrained(saved, accelerator="ipex", export=False, trust_remote_code=True)
    assert {path.name for path in saved.iterdir()} >= {artifacts.TORCHSCRIPT_FILE, artifacts.RECIPE_FILE, "config.json"}
    assert reloaded.report()["runtime"]["dtype"] == "int8"
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
    assert not any(path.suffix == ".safetensors" for path in saved.iterdir())  # the trace alone suffices


def test_recipe_records_inputs_outputs_dtype_and_engine(tiny: Callable[[str, str], Path], tmp_path: Path) -> None:
    model = load(tiny("question-answering", "distilbert"), "question-answering", dtype="float32")
    data = json.loads((model.artifact.parent / artifacts.RECIPE_FILE).read_text())
    assert data["kind"] == "torchscript"
    assert data["inputs"] == ["input_ids", "attention_mask"]  # DistilBERT takes no token_type_ids
    assert data["outputs"] == ["start_logits", "end_logits"]
    assert (data["dtype"], data["engine"], data["compile"]) == ("float32", engine.choose_engine().engine, None)


def test_an_untraceable_model_is_saved_as_weights_and_round_trips(
    tiny: Callable[[str, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from acceleron_ipex import export

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this model cannot be traced")

    monkeypatch.setattr(export, "trace_and_freeze", refuse)
    source = tmp_path / "source"
    shutil.copytree(tiny("fill-mask", "roberta"), source)
    inputs, expected = reference(source, "fill-mask")
    model = load(source, "fill-mask", dtype="float32", export_cache=tmp_path / "cache")
    runtime = model.report()["runtime"]
    assert (runtime["mode"], model.artifact.name) == ("eager", artifacts.WEIGHTS_FILE)
    assert "this model cannot be traced" in runtime["note"]
    assert (model(**inputs).logits - expected["logits"]).abs().max().item() <= 1e-5
    saved = model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(source)
    reloaded = OptimizedModel.from_pretrained(saved, accelerator="ipex", export=False, trust_remote_code=True)
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def test_an_untraceable_encoder_decoder_rebuilds_each_graph_from_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights saved instead of a trace rebuild the graph their recipe names (encoder or decoder step), from the
    config saved beside them, also after save_pretrained moved them."""
    import transformers
    from acceleron_ipex import export

    from acceleron.seq2seq import encoder_example
    from acceleron.testing import tiny_seq2seq

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this model cannot be traced")

    monkeypatch.setattr(export, "trace_and_freeze", refuse)
    source = tiny_seq2seq("bart", tmp_path / "bart")
    model = load(source, "summarization", dtype="float32", export_cache=tmp_path / "cache")
    recipes = {name: artifacts.read_recipe(path.parent) for name, path in model.artifacts.items()}
    assert {name: (r.kind, r.graph) for name, r in recipes.items()} == {
        "encoder": ("weights", "encoder"),
        "decoder": ("weights", "decoder"),
    }
    reference = transformers.AutoModelForSeq2SeqLM.from_pretrained(source).eval()
    inputs = encoder_example(reference, batch_size=2, length=7, seed=1)
    settings = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False}
    with torch.inference_mode():
        expected = reference.generate(**inputs, **settings)
    assert torch.equal(model.generate(**inputs, **settings), expected)
    saved = model.save_pretrained(tmp_path / "saved")
    assert (saved / "decoder" / "config.json").is_file()
    reloaded = OptimizedModel.from_pretrained(saved, accelerator="ipex", export=False, trust_remote_code=True)
    assert torch.equal(reloaded.generate(**inputs, **settings), expected)


def test_a_saved_artifact_runs_as_its_recipe_says_whatever_dtype_is_asked(
    tiny: Callable[[str, str], Path], tmp_path: Path
) -> None:
    saved = load(tiny("text-classification"), "text-classification", dtype="int8").save_pretrained(tmp_path / "s")
    reloaded = OptimizedModel.from_pretrained(
        saved, accelerator="ipex", export=False, trust_remote_code=True, dtype="float32"
    )
    assert reloaded.report()["runtime"]["dtype"] == "int8"  # the core warns that int8 was not asked for


def test_an_ipex_engine_artifact_is_refused_where_ipex_cannot_run(
    tiny: Callable[[str, str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = load(tiny("text-classification"), "text-classification", dtype="float32").save_pretrained(tmp_path / "s")
    path = saved / artifacts.RECIPE_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "engine": "ipex"}))
    mismatched = engine.EngineChoice("torch", "IPEX 2.8 installed but torch is 2.13: using the torch engine.", "2", "2")
    monkeypatch.setattr(engine, "choose_engine", lambda: mismatched)
    with pytest.raises(AcceleronError, match="made by the ipex engine and needs IPEX, which cannot run here"):
        OptimizedModel.from_pretrained(saved, accelerator="ipex", export=False, trust_remote_code=True)


# ---- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "xpu"}, "runs on the CPU only"),
        ({"device": "cuda:0"}, "runs on the CPU only"),
        ({"dtype": "float16"}, "does not support dtype='float16'"),
        ({"compile": "turbo"}, "compile must be True, False or one of"),
        ({"compile": True, "dtype": "int8"}, "compile does not support dtype='int8'"),
        ({"engine": "onnx"}, "engine must be one of auto, torch, ipex"),
        ({"dtype": "int4"}, r"does not offer dtype='int4'.*accelerator='ort'.*accelerator='ov'"),
    ],
)
def test_bad_options_are_refused_with_the_next_step(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        get_backend("ipex").parse_options(options)


def test_options_that_change_the_artifact_are_cache_keys() -> None:
    backend = get_backend("ipex")
    assert {"dtype", "compile", "engine"} <= backend.options_class.artifact_fields
    assert backend.versions()["auto-dtype"] == cpu.auto_dtype()


def test_default_engine_and_compile_key_the_cache_like_absent_options() -> None:
    backend = get_backend("ipex")
    parsed = backend.parse_options({"compile": False, "engine": "auto"})
    assert parsed == backend.parse_options({})
    assert parsed.artifact_key() == backend.parse_options({}).artifact_key()
    assert backend.parse_options({"compile": True}).compile == "default"


def test_accelerator_none_picks_ipex_when_it_is_the_only_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from acceleron.plugins import reset_plugin_manager
    from acceleron.selection import resolve_backend

    monkeypatch.setenv("ACCELERON_PLUGINS", "ipex")
    reset_plugin_manager()
    assert resolve_backend(None, "text-classification").name == "ipex"


# ---- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_eight_threads_give_the_serial_results(tiny: Callable[[str, str], Path], dtype: str) -> None:
    folder = tiny("text-classification", "bert")
    model = load(folder, "text-classification", dtype=dtype)
    spec = get_task("text-classification")
    torch_model = spec.load_torch_model(folder)
    batches = [spec.example_inputs(torch_model, batch_size=1 + i % 3, sequence_length=5 + i, seed=i) for i in range(8)]
    serial = [model(**batch).logits for batch in batches]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(5):
                results[index] = model(**batches[index]).logits
        except BaseException as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, logits in results.items():
        assert torch.allclose(logits, serial[index], atol=1e-6), index


# ---- torch.compile (slow: inductor compiles C++) ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ACCELERON_SLOW_TESTS") != "1", reason="set ACCELERON_SLOW_TESTS=1 (compiles)")
def test_compile_mode_matches_pytorch_and_saves_the_weights(tiny: Callable[[str, str], Path], tmp_path: Path) -> None:
    folder = tiny("text-classification", "bert")
    model = load(folder, "text-classification", dtype="float32", compile=True, export_cache=tmp_path / "cache")
    inputs, expected = reference(folder, "text-classification")
    assert (model.report()["runtime"]["mode"], model.artifact.name) == ("compile", artifacts.WEIGHTS_FILE)
    assert (model(**inputs).logits - expected["logits"]).abs().max().item() <= 1e-5
    saved = model.save_pretrained(tmp_path / "s")
    reloaded = OptimizedModel.from_pretrained(saved, accelerator="ipex", export=False, trust_remote_code=True)
    assert reloaded.report()["runtime"]["compile"] == "default"
