"""Runtime knobs: device -> execution provider, threads, graph optimisation, pass-through options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
import torch
from support import load

from acceleron.backend import Availability
from acceleron.errors import BackendUnavailableError, InvalidOptionError
from acceleron.plugins import get_backend
from acceleron_ort import plugin as plugin_module
from acceleron_ort.session import SHRINK_ABOVE_BYTES, execution_providers, session_options


def test_the_backend_is_found_by_its_alias() -> None:
    backend = get_backend("onnxruntime")
    assert backend.name == "ort"
    assert backend.priority == 200


def test_availability_needs_an_onnxruntime_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_module, "distribution_version", lambda *names: None)
    availability = plugin_module.OrtBackend().availability()
    assert availability == Availability(False, availability.reason)
    assert "onnxruntime, onnxruntime-gpu" in availability.reason


def test_availability_accepts_onnxruntime_gpu_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"onnxruntime-gpu": "1.31.0", "onnx": "1.23.2"}
    monkeypatch.setattr(
        plugin_module,
        "distribution_version",
        lambda *names: next((installed[n] for n in names if n in installed), None),
    )
    assert plugin_module.OrtBackend().availability().ok


def _options(**options: Any) -> Any:
    return get_backend("ort").parse_options(options)


def test_cpu_maps_to_the_cpu_provider() -> None:
    assert execution_providers(_options(device="cpu")) == (["CPUExecutionProvider"], [{}])


def test_cuda_maps_to_the_cuda_provider_with_its_device_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    providers, options = execution_providers(_options(device="cuda:1", provider_options={"arena_extend_strategy": 1}))
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options == [{"device_id": 1, "arena_extend_strategy": 1}, {}]


def test_cuda_without_a_gpu_build_says_what_to_install() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendUnavailableError, match="no CUDAExecutionProvider.*Install onnxruntime-gpu"):
        execution_providers(_options(device="cuda"))


def test_an_unknown_device_is_refused_when_the_options_are_parsed() -> None:
    with pytest.raises(InvalidOptionError, match="'cpu' or 'cuda\\[:N\\]', not 'mps'"):
        _options(device="mps")


def test_session_options_map_threads_level_and_pass_through() -> None:
    settings = session_options(
        _options(
            num_threads=3,
            graph_optimization="basic",
            session_options={"enable_mem_pattern": False, "session.intra_op.allow_spinning": "0"},
        )
    )
    assert settings.intra_op_num_threads == 3
    assert settings.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert settings.enable_mem_pattern is False
    assert settings.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_idle_threads_sleep_unless_spinning_is_asked_for() -> None:
    key = "session.intra_op.allow_spinning"
    assert session_options(_options()).get_session_config_entry(key) == "0"
    assert session_options(_options(session_options={key: "1"})).get_session_config_entry(key) == "1"
    assert session_options(_options(session_options={key: 1})).get_session_config_entry(key) == "1"


def test_the_cpu_arena_is_shrunk_after_each_run_unless_turned_off(saved_classifier: Path) -> None:
    model = load(saved_classifier, export=False)
    run_options = model.session.run_options
    assert run_options is not None
    assert run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert model.report()["runtime"]["arena_shrinkage"] is True
    small, large = torch.zeros(4, dtype=torch.int64), torch.zeros(SHRINK_ABOVE_BYTES // 8 + 1, dtype=torch.int64)
    assert model.session._run_options_for([small]) is None  # small runs keep the arena's memory
    assert model.session._run_options_for([small, large]) is run_options
    kept = load(saved_classifier, export=False, arena_shrinkage=False)
    assert kept.session.run_options is None
    with pytest.raises(InvalidOptionError, match="arena_shrinkage must be True or False"):
        _options(arena_shrinkage="yes")


def test_an_unknown_session_option_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="'intra_threads' is neither an onnxruntime.SessionOptions attribute"):
        session_options(_options(session_options={"intra_threads": 2}))


def test_the_loaded_model_reports_what_it_runs_with(saved_classifier: Path) -> None:
    model = load(saved_classifier, export=False, num_threads=2, graph_optimization="extended")
    runtime = model.report()["runtime"]
    assert runtime["provider"] == "CPUExecutionProvider"
    assert runtime["num_threads"] == 2
    assert runtime["graph_optimization"] == "extended"
    assert runtime["dtype"] == "float32"
    assert runtime["io_binding"] is False
    settings = model.session.session.get_session_options()
    assert settings.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
