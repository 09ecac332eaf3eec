"""Bad input, table by table: what a user can get wrong, and the exact exception each mistake raises.

Through ``pipeline()``, ``OptimizedModel.from_pretrained`` and a model call (the torch reference
backend, so no runtime is needed), and through the ``acceleron`` command (exit code 2, one
``acceleron: error:`` line, never a traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from acceleron import OptimizedModel, pipeline
from acceleron.backend import max_threads
from acceleron.errors import (
    ArtifactLoadError,
    ArtifactNotFoundError,
    ExportError,
    InferenceError,
    InvalidInputError,
    InvalidOptionError,
    TaskNotSupportedError,
    UnknownBackendError,
)
from acceleron.plugins import get_plugin_manager

# ---- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [10**9, max_threads() + 1])
def test_an_absurd_thread_count_is_refused_by_every_backend(threads: int) -> None:
    # torch and IPEX die in libgomp on 10**9 threads (no exception): the core refuses it for all.
    backends = get_plugin_manager().backends()
    assert backends, "at least the torch reference is installed"
    for backend in backends:
        with pytest.raises(InvalidOptionError, match=f"num_threads={threads} is more than this machine can use"):
            backend.parse_options({"num_threads": threads})
    assert get_plugin_manager().get("torch").parse_options({"num_threads": max_threads()}).num_threads == max_threads()


def test_an_absurd_thread_count_is_refused_before_anything_is_exported(tiny_classifier: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(InvalidOptionError, match="at most"):
        pipeline(
            "text-classification",
            model=str(tiny_classifier),
            accelerator="torch",
            accelerator_options={"num_threads": 10**9},
            model_kwargs={"export_cache": str(cache)},
        )
    with pytest.raises(InvalidOptionError, match="at most"):
        OptimizedModel.from_pretrained(tiny_classifier, accelerator="torch", num_threads=10**9, export_cache=cache)
    assert not cache.exists()


def test_num_threads_as_a_pipeline_keyword_reaches_the_backend(tiny_classifier: Path, tmp_path: Path) -> None:
    # It used to fall through to the pipeline's call arguments and fail at the first call.
    cache = {"export_cache": str(tmp_path / "cache")}
    classifier = pipeline(
        "text-classification", str(tiny_classifier), accelerator="torch", num_threads=1, model_kwargs=cache
    )
    assert classifier.model.session.describe()["num_threads"] == 1
    assert classifier("fine")[0]["label"]
    both = {"accelerator_options": {"num_threads": 1}, "num_threads": 1}
    agreeing = pipeline("text-classification", str(tiny_classifier), accelerator="torch", model_kwargs=cache, **both)
    assert agreeing.model.session.describe()["num_threads"] == 1


# ---- construction: pipeline() and OptimizedModel.from_pretrained --------------------------------


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory, tiny_classifier: Path) -> dict[str, Path]:
    """Copies of the tiny classifier with a truncated weights file, and with weights that do not fit config.json."""
    root = tmp_path_factory.mktemp("damaged")
    truncated = Path(shutil.copytree(tiny_classifier, root / "truncated"))
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    misfit = Path(shutil.copytree(tiny_classifier, root / "misfit"))
    config = json.loads((misfit / "config.json").read_text())
    config.update(hidden_size=config["hidden_size"] * 2, intermediate_size=config["intermediate_size"] * 2)
    (misfit / "config.json").write_text(json.dumps(config))
    return {"truncated": truncated, "misfit": misfit}


PIPELINE_CASES: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("accelerator_options not a mapping", {"accelerator_options": "x"}, InvalidOptionError),
    ("model_kwargs not a mapping", {"model_kwargs": "x"}, TypeError),
    ("unknown model_kwargs", {"model_kwargs": {"attn_implementation": "eager"}}, TypeError),
    ("accelerator of a wrong type", {"accelerator": 1}, TypeError),
    ("unknown accelerator", {"accelerator": "warp-drive"}, UnknownBackendError),
    ("unknown task", {"task": "mind-reading"}, TaskNotSupportedError),
    ("unknown option", {"accelerator_options": {"warp_speed": 9}}, InvalidOptionError),
    ("unsupported dtype", {"dtype": "int8"}, InvalidOptionError),
    ("zero threads", {"accelerator_options": {"num_threads": 0}}, InvalidOptionError),
    ("threads as text", {"accelerator_options": {"num_threads": "2"}}, InvalidOptionError),
    ("absurd threads", {"accelerator_options": {"num_threads": 10**9}}, InvalidOptionError),
    ("zero threads as a keyword", {"num_threads": 0}, InvalidOptionError),
    ("threads twice, disagreeing", {"num_threads": 1, "accelerator_options": {"num_threads": 2}}, InvalidOptionError),
    ("a GPU that is not there", {"device": "cuda:7"}, InvalidOptionError),
    ("a GPU index that is not there", {"device": 7}, InvalidOptionError),
    ("a device torch does not know", {"device": "warp:0"}, InvalidOptionError),
    ("export of a wrong type", {"export": "yes"}, TypeError),
    ("a BERT asked to generate text", {"task": "text-generation"}, TaskNotSupportedError),
    ("no model", {"model": None}, ValueError),
    ("a model of a wrong type", {"model": 3}, TypeError),
    ("an empty model name", {"model": ""}, ValueError),
]


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in PIPELINE_CASES], ids=[c[0] for c in PIPELINE_CASES])
def test_pipeline_refuses(tiny_classifier: Path, kwargs: dict[str, Any], expected: type[Exception]) -> None:
    arguments: dict[str, Any] = {"task": "text-classification", "model": str(tiny_classifier), "accelerator": "torch"}
    with pytest.raises(expected) as raised:
        pipeline(**{**arguments, **kwargs})
    assert type(raised.value) is expected


def test_a_missing_model_path_says_so_with_or_without_a_task(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    for task in (None, "text-classification"):
        with pytest.raises(ArtifactNotFoundError, match="no such model folder"):
            pipeline(task, model=missing, accelerator="torch")
    with pytest.raises(ArtifactNotFoundError, match="no such model folder"):
        OptimizedModel.from_pretrained(missing, accelerator="torch")


@pytest.mark.parametrize("kind", ["truncated", "misfit"])
def test_weights_that_cannot_load_are_an_acceleron_error(damaged: dict[str, Path], kind: str) -> None:
    # Loaded as they are (the torch backend's artifact is the checkpoint), or exported from.
    with pytest.raises(ArtifactLoadError, match="cannot load .*model.safetensors.*export it again"):
        OptimizedModel.from_pretrained(damaged[kind], accelerator="torch")
    with pytest.raises(ExportError, match="cannot load the PyTorch model to export"):
        OptimizedModel.from_pretrained(damaged[kind], accelerator="torch", export=True)


# ---- inference: a model call ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> OptimizedModel:
    return OptimizedModel.from_pretrained(
        tiny_classifier, accelerator="torch", export_cache=tmp_path_factory.mktemp("cache")
    )


CALL_CASES: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("no inputs", {}, InvalidInputError),
    ("a list instead of a tensor", {"input_ids": [[1, 2, 3]]}, TypeError),
    ("an empty batch", {"input_ids": torch.ones(0, 4, dtype=torch.long)}, InvalidInputError),
    ("a scalar", {"input_ids": torch.tensor(3)}, InvalidInputError),
    ("token ids beyond the vocabulary", {"input_ids": torch.full((1, 5), 10**6)}, InferenceError),
    ("floating token ids", {"input_ids": torch.ones(1, 5)}, InferenceError),
    ("a batch of matrices", {"input_ids": torch.ones(1, 5, 2, dtype=torch.long)}, InferenceError),
]


@pytest.mark.parametrize(("inputs", "expected"), [c[1:] for c in CALL_CASES], ids=[c[0] for c in CALL_CASES])
def test_a_model_call_refuses(model: OptimizedModel, inputs: dict[str, Any], expected: type[Exception]) -> None:
    with pytest.raises(expected) as raised:
        model(**inputs)
    assert type(raised.value) is expected


def test_an_inference_error_puts_our_sentence_before_the_runtime_text(model: OptimizedModel) -> None:
    with pytest.raises(InferenceError) as raised:
        model(input_ids=torch.full((2, 7), 10**6))
    message = str(raised.value)
    assert message.startswith("the 'torch' backend failed to run text-classification on inputs {input_ids: int64[2, 7]")
    assert "token ids below" in message
    assert message.endswith("The runtime said: IndexError: index out of range in self")
    assert isinstance(raised.value, RuntimeError) and isinstance(raised.value.__cause__, IndexError)


def test_a_causal_lm_step_that_fails_is_an_inference_error(tmp_path: Path) -> None:
    from acceleron.testing import tiny_causal_lm

    lm = OptimizedModel.from_pretrained(tiny_causal_lm("gpt2", tmp_path / "gpt2"), accelerator="torch")
    with pytest.raises(InferenceError, match="failed to run text-generation.*The runtime said: IndexError"):
        lm(input_ids=torch.full((1, 3), 10**6))


# ---- the command line ---------------------------------------------------------------------------------


def acceleron(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acceleron", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("acceleron: error: ")]
    assert len(errors) == 1 and says in errors[0], result.stderr


def test_cli_run_with_a_folder_as_input_file(tiny_classifier: Path, tmp_path: Path) -> None:
    result = acceleron(
        "run", "--task", "text-classification", "--model", str(tiny_classifier), "--input-file", str(tmp_path)
    )
    _one_line_error(result, "is a folder")


def test_cli_export_into_a_file(tiny_classifier: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("mine")
    for extra in ((), ("--force",)):
        result = acceleron("export", str(tiny_classifier), "-o", str(target), "-a", "torch", *extra)
        _one_line_error(result, "is a file")
    assert target.read_text() == "mine"


def test_cli_a_missing_model_path_is_reported_as_missing(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    _one_line_error(acceleron("export", missing, "-o", str(tmp_path / "out"), "-a", "torch"), "no such model folder")
    _one_line_error(
        acceleron("run", "--task", "text-classification", "--model", missing, "-a", "torch", "hi"),
        "no such model folder",
    )


def test_cli_bad_options_are_one_line(tiny_classifier: Path) -> None:
    base = ("run", "--task", "text-classification", "--model", str(tiny_classifier), "-a", "torch")
    _one_line_error(acceleron(*base, "--option", "num_threads=1000000000", "hi"), "num_threads=1000000000")
    _one_line_error(acceleron(*base, "--option", "device=cuda:7", "hi"), "device='cuda:7' is not available")


def test_cli_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = acceleron("--debug", "export", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "-a", "torch")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "acceleron: error: no such model folder" in result.stderr


def test_cli_cache_list_survives_a_malformed_manifest(tmp_path: Path) -> None:
    from acceleron.cache import MANIFEST_NAME

    entry = tmp_path / "cache" / "0123456789abcdef"
    entry.mkdir(parents=True)
    # acceleron's own manifest (its key and format), with fields of the wrong types
    manifest = {
        "key": "0123456789abcdef",
        "format_version": 1,
        "backend": "torch",
        "task": "text-classification",
        "files": ["x"],
        "validation": "yes",
        "source": 1,
    }
    (entry / MANIFEST_NAME).write_text(json.dumps(manifest))
    env = {"ACCELERON_CACHE_DIR": str(tmp_path / "cache")}
    listing = acceleron("cache", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "0123456789abcdef" in listing.stdout and "DAMAGED" in listing.stdout
    rows = json.loads(acceleron("cache", "list", "--json", env=env).stdout)
    assert [(row["key"], row["validation"]) for row in rows] == [("0123456789abcdef", "DAMAGED")]
