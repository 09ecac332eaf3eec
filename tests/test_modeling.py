"""OptimizedModel: the load-or-export decision, saving, pushing, and bad inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from acceleron import ExportCache, OptimizedModel
from acceleron.cache import MANIFEST_NAME
from acceleron.errors import AcceleronError, ArtifactNotFoundError, TaskNotSupportedError
from acceleron.plugins import PluginManager, get_backend
from acceleron.tasks import get_task

Install = Callable[..., PluginManager]


def _inputs(folder: Path) -> dict[str, torch.Tensor]:
    spec = get_task("text-classification")
    return spec.example_inputs(spec.load_torch_model(folder))


class _On:
    """``from_pretrained`` on one backend instance."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def from_pretrained(self, *args: Any, **kwargs: Any) -> OptimizedModel:
        return OptimizedModel.from_pretrained(*args, accelerator=self.backend, **kwargs)


def _alpha(use_plugins: Install) -> _On:
    return _On(use_plugins(alpha="alpha").get("alpha"))


def test_export_false_with_nothing_to_load_is_a_clear_error(use_plugins: Install, tiny_classifier: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match="holds no alpha artifact.*pass export=True"):
        _alpha(use_plugins).from_pretrained(tiny_classifier, export=False)


def test_export_none_exports_once_then_reuses_the_cache(use_plugins: Install, tiny_classifier: Path) -> None:
    model_class = _alpha(use_plugins)
    first = model_class.from_pretrained(tiny_classifier)
    second = model_class.from_pretrained(tiny_classifier)
    assert first.artifact == second.artifact
    assert first.manifest["validation"]["passed"] is True
    assert len(list(ExportCache().entries())) == 1


def test_export_none_loads_an_artifact_that_is_present(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path
) -> None:
    model_class = _alpha(use_plugins)
    saved = model_class.from_pretrained(tiny_classifier).save_pretrained(tmp_path / "saved")
    cache = ExportCache(tmp_path / "other-cache")
    model = model_class.from_pretrained(saved, export_cache=cache)
    assert model.artifact == saved / "alpha.artifact"
    assert not cache.root.exists()


def test_export_true_exports_even_when_an_artifact_is_present(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path
) -> None:
    import shutil

    folder = Path(shutil.copytree(tiny_classifier, tmp_path / "both"))
    (folder / "alpha.artifact").write_text(".")  # the fake artifact points at the folder's own weights
    model_class = _alpha(use_plugins)
    cache = ExportCache(tmp_path / "forced")
    assert model_class.from_pretrained(folder, export_cache=cache).artifact == folder / "alpha.artifact"
    assert not cache.root.exists()
    model = model_class.from_pretrained(folder, export=True, export_cache=cache)
    assert cache.root in model.artifact.parents


def test_exporting_a_folder_without_weights_is_an_export_error(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path
) -> None:
    from acceleron.errors import ExportError

    (tmp_path / "config.json").write_text((tiny_classifier / "config.json").read_text())
    with pytest.raises(ExportError, match="cannot load the PyTorch model"):
        _alpha(use_plugins).from_pretrained(tmp_path, task="text-classification")


def test_outputs_are_the_tasks_model_output(tiny_classifier: Path) -> None:
    from transformers.modeling_outputs import SequenceClassifierOutput

    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    output = model(**_inputs(tiny_classifier))
    assert isinstance(output, SequenceClassifierOutput)
    assert output.logits.shape == (2, 2)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.can_generate() is False


def test_save_and_reload_keeps_task_and_outputs(use_plugins: Install, tiny_classifier: Path, tmp_path: Path) -> None:
    model_class = _alpha(use_plugins)
    model = model_class.from_pretrained(tiny_classifier)
    saved = model.save_pretrained(tmp_path / "saved")
    manifest = json.loads((saved / MANIFEST_NAME).read_text())
    assert manifest["task"] == "text-classification" and manifest["backend"] == "alpha"
    assert {"config.json", "tokenizer.json", "alpha.artifact", MANIFEST_NAME} <= {p.name for p in saved.iterdir()}
    reloaded = model_class.from_pretrained(saved, export=False)  # task from the manifest
    inputs = _inputs(tiny_classifier)
    assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


def test_save_into_a_file_path_is_refused(tiny_classifier: Path, tmp_path: Path) -> None:
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        model.save_pretrained(tmp_path / "file")


def test_push_to_hub_uploads_one_folder_in_one_commit(tiny_classifier: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class RecordingApi:
        def __init__(self, token: Any = None) -> None:
            calls.append(("init", {"token": token}))

        def create_repo(self, repo_id: str, **kwargs: Any) -> None:
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs: Any) -> str:
            files = sorted(
                p.relative_to(kwargs["folder_path"]).as_posix() for p in Path(kwargs["folder_path"]).rglob("*")
            )
            calls.append(("upload_folder", {**kwargs, "files": files}))
            return "commit-info"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    assert model.push_to_hub("me/tiny", token="t0k") == "commit-info"
    names = [name for name, _ in calls]
    assert names == ["init", "create_repo", "upload_folder"]
    upload = calls[2][1]
    assert upload["repo_id"] == "me/tiny"
    assert {"config.json", "model.safetensors", MANIFEST_NAME} <= set(upload["files"])


def test_push_to_hub_offline_is_refused(tiny_classifier: Path) -> None:
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    with pytest.raises(AcceleronError, match="HF_HUB_OFFLINE is set"):
        model.push_to_hub("me/tiny")


def test_a_hub_id_offline_and_uncached_says_so() -> None:
    with pytest.raises(ArtifactNotFoundError, match="cannot find model 'nobody/nothing'.*offline"):
        OptimizedModel.from_pretrained("nobody/nothing", accelerator=get_backend("torch"))


@pytest.mark.parametrize("bad", [3, None, ["a"]])
def test_a_model_of_the_wrong_type_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match="model must be a model id or a folder path"):
        OptimizedModel.from_pretrained(bad, accelerator=get_backend("torch"))


def test_an_empty_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        OptimizedModel.from_pretrained("  ", accelerator=get_backend("torch"))


def test_a_bad_export_flag_is_refused(tiny_classifier: Path) -> None:
    with pytest.raises(TypeError, match="export must be None, True or False"):
        OptimizedModel.from_pretrained(tiny_classifier, export="yes", accelerator=get_backend("torch"))  # type: ignore[arg-type]


def test_an_unsupported_task_is_refused_at_load(use_plugins: Install, tiny_classifier: Path) -> None:
    with pytest.raises(TaskNotSupportedError, match="does not support question-answering"):
        _alpha(use_plugins).from_pretrained(tiny_classifier, task="qa")


def test_an_empty_batch_is_refused(tiny_classifier: Path) -> None:
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    empty = torch.zeros((0, 4), dtype=torch.long)
    with pytest.raises(ValueError, match="empty batch"):
        model(input_ids=empty, attention_mask=empty)


def test_non_tensor_inputs_are_refused(tiny_classifier: Path) -> None:
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model(input_ids=[[1, 2, 3]])


def test_moving_to_another_device_says_to_reload(tiny_classifier: Path) -> None:
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    assert model.to("cpu") is model
    with pytest.raises(AcceleronError, match="load it again with device='cuda:0'"):
        model.to("cuda:0")


def test_model_classes_are_real_importable_and_picklable(tiny_classifier: Path) -> None:
    import pickle

    from acceleron.modeling import CausalLMModel

    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator="torch")
    assert type(model) is OptimizedModel and model.backend is get_backend("torch")
    for cls in (OptimizedModel, CausalLMModel):
        assert pickle.loads(pickle.dumps(cls)) is cls


def test_loading_an_artifact_made_with_other_options_warns(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_class = _alpha(use_plugins)
    saved = model_class.from_pretrained(tiny_classifier, dtype="float32").save_pretrained(tmp_path / "saved")
    with caplog.at_level("WARNING", logger="acceleron.loading"):
        model_class.from_pretrained(saved, dtype="float32")
    assert not caplog.records
    with caplog.at_level("WARNING", logger="acceleron.loading"):
        model_class.from_pretrained(saved, dtype="bfloat16")
    assert "made with dtype='float32', not the 'bfloat16' asked for" in caplog.text


def test_loading_with_the_default_dtype_does_not_warn(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_class = _alpha(use_plugins)
    saved = model_class.from_pretrained(tiny_classifier, dtype="bfloat16").save_pretrained(tmp_path / "saved")
    with caplog.at_level("WARNING", logger="acceleron.loading"):
        model_class.from_pretrained(saved)
    assert not caplog.records
