"""Runtime knobs of the ``ov`` backend: devices, precision, threads, hints, static shapes, caching, threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from acceleron_openvino.devices import available_devices, default_precision, has_native_bfloat16
from acceleron_openvino.plugin import OpenVINOBackend

from acceleron.errors import AcceleronError, InvalidOptionError

TASK = "text-classification"


def _nncf_installed() -> bool:
    from acceleron.backend import module_installed

    return module_installed("nncf")


# ---- devices ----


def test_unknown_device_lists_the_available_ones(saved_classifier: Path, load_ov: Any) -> None:
    with pytest.raises(InvalidOptionError, match=r"no device 'cuda:0' here; available: CPU"):
        load_ov(saved_classifier, device="cuda:0")


def test_device_names_are_normalised_to_openvino_spelling() -> None:
    assert OpenVINOBackend().parse_options({"device": "cpu"}).device == "CPU"


def test_virtual_devices_check_the_devices_they_list() -> None:
    assert OpenVINOBackend().parse_options({"device": "AUTO:CPU"}).device == "AUTO:CPU"
    with pytest.raises(InvalidOptionError, match=r"no device 'HETERO:XPU,CPU'"):
        OpenVINOBackend().parse_options({"device": "HETERO:XPU,CPU"})


def test_available_devices_include_the_cpu() -> None:
    assert "CPU" in available_devices()


# ---- options ----


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"performance_hint": "fastest"}, "performance_hint must be one of latency, throughput"),
        ({"static_batch_size": 0}, "static_batch_size must be a positive integer"),
        ({"static_sequence_length": "long"}, "static_sequence_length must be a positive integer"),
        ({"ov_config": ["NUM_STREAMS", 2]}, "ov_config must be a dict"),
        ({"compile_cache": 3}, "compile_cache must be True, False or a folder path"),
        ({"dtype": "float16"}, "does not support dtype='float16'"),
        ({"num_streams": 2}, "does not know the option"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        OpenVINOBackend().parse_options(options)


def test_num_threads_and_hint_reach_the_compiled_model(saved_classifier: Path, load_ov: Any) -> None:
    model = load_ov(saved_classifier, num_threads=1, performance_hint="throughput", compile_cache=False)
    runtime = model.report()["runtime"]
    assert runtime["num_threads"] == 1
    assert runtime["performance_hint"] == "throughput"


def test_ov_config_is_passed_through_last(saved_classifier: Path, load_ov: Any) -> None:
    model = load_ov(saved_classifier, performance_hint="latency", ov_config={"NUM_STREAMS": 2}, compile_cache=False)
    assert model.report()["runtime"]["num_streams"] == 2


# ---- precision ----


def test_float32_reports_float32_and_matches_pytorch(
    saved_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any], torch_logits: torch.Tensor
) -> None:
    model = load_ov(saved_classifier, dtype="float32")
    runtime = model.report()["runtime"]
    assert (runtime["dtype"], runtime["activations"], runtime["weights"]) == ("float32", "float32", "float32")
    assert torch.allclose(model(**classifier_inputs).logits, torch_logits, atol=1e-4)


def test_auto_reports_openvinos_default_precision(saved_classifier: Path, load_ov: Any) -> None:
    model = load_ov(saved_classifier)
    runtime = model.report()["runtime"]
    expected = default_precision("CPU")
    assert runtime["dtype"] == expected == OpenVINOBackend().resolve_dtype(model.options) == model.options.compute_dtype
    assert runtime["requested_dtype"] == "auto"
    assert f"default precision on CPU here is {expected}" in runtime["precision_note"]


def test_default_precision_follows_the_cpus_bfloat16_support() -> None:
    expected = {"bfloat16"} if has_native_bfloat16("CPU") else {"float32", "float16"}
    assert default_precision("CPU") in expected


def test_bfloat16_without_native_support_runs_float32_and_says_so(saved_classifier: Path, load_ov: Any) -> None:
    if has_native_bfloat16("CPU"):
        pytest.skip("this CPU computes bfloat16 natively")
    model = load_ov(saved_classifier, dtype="bfloat16")
    runtime = model.report()["runtime"]
    assert runtime["dtype"] == "float32"
    assert "no native bfloat16" in runtime["notes"][0]
    assert OpenVINOBackend().resolve_dtype(model.options) == model.options.compute_dtype == "float32"


def test_bfloat16_with_native_support_runs_bfloat16(saved_classifier: Path, load_ov: Any) -> None:
    if not has_native_bfloat16("CPU"):
        pytest.skip("this CPU has no native bfloat16")
    assert load_ov(saved_classifier, dtype="bfloat16").report()["runtime"]["dtype"] == "bfloat16"


def test_a_precision_forced_through_ov_config_is_the_effective_dtype() -> None:
    import openvino

    backend = OpenVINOBackend()
    forced = {"INFERENCE_PRECISION_HINT": "f32"}
    assert backend.parse_options({"dtype": "auto", "ov_config": forced}).compute_dtype == "float32"
    forced = {"INFERENCE_PRECISION_HINT": openvino.Type.bf16}
    assert backend.parse_options({"dtype": "float32", "ov_config": forced}).compute_dtype == "bfloat16"


@pytest.mark.skipif(not _nncf_installed(), reason="dtype='int8' needs the int8 extra (NNCF)")
def test_int8_compresses_the_weights_in_its_own_export(
    tiny_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any], torch_logits: torch.Tensor
) -> None:
    int8 = load_ov(tiny_classifier, task=TASK, dtype="int8", strict=True)
    fp32 = load_ov(tiny_classifier, task=TASK, dtype="float32")
    assert int8.artifact.parent != fp32.artifact.parent
    assert int8.artifact.with_suffix(".bin").stat().st_size < fp32.artifact.with_suffix(".bin").stat().st_size / 2
    runtime = int8.report()["runtime"]
    assert (runtime["dtype"], runtime["weights"]) == ("int8", "int8")
    logits = int8(**classifier_inputs).logits
    assert torch.equal(logits.argmax(-1), torch_logits.argmax(-1))


@pytest.mark.skipif(not _nncf_installed(), reason="dtype='int8' needs the int8 extra (NNCF)")
def test_int8_on_a_float_ir_compresses_at_load(saved_classifier: Path, load_ov: Any) -> None:
    assert load_ov(saved_classifier, dtype="int8").report()["runtime"]["weights"] == "int8"


@pytest.mark.skipif(not _nncf_installed(), reason="dtype='int4' needs the int8 extra (NNCF)")
def test_int4_compresses_the_weights_and_its_ir_stays_int4(tiny_classifier: Path, load_ov: Any, tmp_path: Path) -> None:
    int4 = load_ov(tiny_classifier, task=TASK, dtype="int4")
    int8 = load_ov(tiny_classifier, task=TASK, dtype="int8")
    assert int4.artifact.parent != int8.artifact.parent
    assert int4.manifest["options"]["dtype"] == "int4"
    runtime = int4.report()["runtime"]
    assert (runtime["dtype"], runtime["weights"]) == ("int4", "int4")
    saved = int4.save_pretrained(tmp_path / "int4")
    assert load_ov(saved).report()["runtime"]["weights"] == "int4"  # dtype='auto': the IR decides


def test_compressed_weights_compile_with_dynamic_quantisation_on_the_cpu() -> None:
    backend = OpenVINOBackend()
    for dtype, group in (("int8", 128), ("int4", 32)):
        assert backend.parse_options({"dtype": dtype}).compile_config(None)["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == group
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in backend.parse_options({"dtype": "float32"}).compile_config("f32")
    # a compressed IR loaded without asking for its dtype gets its own group size
    assert backend.parse_options({}).compile_config(None, "int8")["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 128
    off = backend.parse_options({"dtype": "int4", "ov_config": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}})
    assert off.compile_config(None)["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 0


@pytest.mark.skipif(not _nncf_installed(), reason="dtype='int4' needs the int8 extra (NNCF)")
def test_int4_on_a_float_ir_compresses_at_load(saved_classifier: Path, load_ov: Any) -> None:
    assert load_ov(saved_classifier, dtype="int4").report()["runtime"]["weights"] == "int4"


# ---- static shapes ----


def test_static_shapes_give_the_dynamic_results(
    saved_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any], torch_logits: torch.Tensor
) -> None:
    model = load_ov(saved_classifier, dtype="float32", static_batch_size=3, static_sequence_length=13)
    assert model.report()["runtime"]["input_shapes"]["input_ids"] == [3, 13]
    assert torch.allclose(model(**classifier_inputs).logits, torch_logits, atol=1e-4)


def test_a_smaller_batch_is_padded_to_the_static_batch(
    saved_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any], torch_logits: torch.Tensor
) -> None:
    model = load_ov(saved_classifier, dtype="float32", static_batch_size=4, static_sequence_length=13)
    logits = model(**{name: tensor[:2] for name, tensor in classifier_inputs.items()}).logits
    assert logits.shape == (2, 2)
    assert torch.allclose(logits, torch_logits[:2], atol=1e-4)


def test_a_sequence_length_other_than_the_static_one_is_refused(
    saved_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any]
) -> None:
    model = load_ov(saved_classifier, static_sequence_length=16)
    with pytest.raises(
        AcceleronError, match=r"shape \(3, 13\).*static shape \?x16 \(loaded with static_sequence_length=16\)"
    ):
        model(**classifier_inputs)


def test_a_batch_larger_than_the_static_one_is_refused(
    saved_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any]
) -> None:
    model = load_ov(saved_classifier, static_batch_size=2)
    with pytest.raises(AcceleronError, match=r"input 'input_ids' has shape \(3, 13\).*static shape 2x\?"):
        model(**classifier_inputs)


def test_static_shapes_serve_a_pipeline_that_pads_to_the_static_length(tiny_classifier: Path) -> None:
    from acceleron import pipeline
    from acceleron.testing import sample_inputs

    sentences = sample_inputs(TASK, 6)
    dynamic = pipeline(TASK, model=str(tiny_classifier), accelerator="ov", dtype="float32")
    static = pipeline(
        TASK,
        model=str(tiny_classifier),
        accelerator="ov",
        dtype="float32",
        accelerator_options={"static_batch_size": 4, "static_sequence_length": 16},
        length_sorted=False,
    )
    padded = static(sentences, batch_size=4, padding="max_length", max_length=16, truncation=True)
    expected = dynamic(sentences, batch_size=4)
    assert [row["label"] for row in padded] == [row["label"] for row in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(padded, expected))


# ---- compiled-model cache ----


def test_compiled_models_are_cached_under_the_acceleron_cache(
    saved_classifier: Path, load_ov: Any, isolated_acceleron_cache: Path
) -> None:
    model = load_ov(saved_classifier, num_threads=1, performance_hint="latency")
    folder = isolated_acceleron_cache / ".compiled" / "openvino"
    assert model.report()["runtime"]["compile_cache"] == str(folder)
    assert any(path.suffix == ".blob" for path in folder.iterdir())


def test_another_users_cache_is_only_read(
    tiny_classifier: Path, load_ov: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image built by one user, a service running as another: the entry loads, nothing is written
    into the cache (root ignores chmod, so the test checks what changed instead of relying on it)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("making a cache of another user needs chown, i.e. root")
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("ACCELERON_CACHE_DIR", str(shared))
    load_ov(tiny_classifier, task=TASK, num_threads=1)  # the image build exports as the cache's owner
    before = {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in shared.rglob("*") if p.is_file()}
    for path in [shared, *shared.rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)  # the cache now belongs to 'nobody'
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "service-home-cache"))
    model = load_ov(tiny_classifier, task=TASK, num_threads=1)
    own = tmp_path / "service-home-cache" / "acceleron" / "compiled" / "openvino"
    assert model.report()["runtime"]["compile_cache"] == str(own)
    assert any(path.suffix == ".blob" for path in own.iterdir())
    assert str(model.artifact).startswith(str(shared))  # the shared entry was used ...
    after = {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in shared.rglob("*") if p.is_file()}
    assert after == before  # ... and nothing in the shared cache was written


def test_compile_cache_can_be_turned_off_or_moved(saved_classifier: Path, load_ov: Any, tmp_path: Path) -> None:
    assert load_ov(saved_classifier, compile_cache=False).report()["runtime"]["compile_cache"] is None
    moved = load_ov(saved_classifier, compile_cache=str(tmp_path / "blobs"), num_threads=1)
    assert moved.report()["runtime"]["compile_cache"] == str(tmp_path / "blobs")
    assert any((tmp_path / "blobs").glob("*.blob"))


def test_an_export_leaves_one_compiled_blob(tiny_classifier: Path, load_ov: Any, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    load_ov(tiny_classifier, task=TASK, export_cache=tmp_path / "exports", compile_cache=str(blobs), num_threads=1)
    assert len(list(blobs.glob("*.blob"))) == 1  # validated with the session that serves: one compile


# ---- concurrency ----


def test_eight_threads_get_the_serial_results(tiny_classifier: Path, saved_classifier: Path, load_ov: Any) -> None:
    from acceleron.tasks import get_task

    spec = get_task(TASK)
    torch_model = spec.load_torch_model(tiny_classifier)
    batches = [spec.example_inputs(torch_model, batch_size=1 + i % 3, sequence_length=5 + i, seed=i) for i in range(8)]
    model = load_ov(saved_classifier, dtype="float32")
    serial = [model(**batch).logits for batch in batches]
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(8)}
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(5):
            results[index].append(model(**batches[index]).logits)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, outputs in results.items():
        assert len(outputs) == 5
        assert all(torch.equal(output, serial[index]) for output in outputs)
    assert 1 <= model.report()["runtime"]["infer_requests"] <= 8


def test_outputs_do_not_alias_the_request_buffers(
    saved_classifier: Path, load_ov: Any, classifier_inputs: dict[str, Any]
) -> None:
    model = load_ov(saved_classifier, dtype="float32")
    first = model(**classifier_inputs).logits
    kept = first.clone()
    model(**{name: tensor.flip(0) for name, tensor in classifier_inputs.items()})
    assert torch.equal(first, kept)


# ---- selection ----


def test_accelerator_none_prefers_ov_over_every_other_installed_backend() -> None:
    from acceleron import resolve_backend
    from acceleron.plugins import reset_plugin_manager

    reset_plugin_manager()
    assert resolve_backend(None, TASK).name == "ov"


def test_openvino_is_an_alias_of_ov() -> None:
    from acceleron.plugins import get_backend

    assert get_backend("openvino").name == "ov"
