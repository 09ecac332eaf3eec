"""acceleron.pipeline(): routing, argument handling, and equality with stock transformers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import transformers

from acceleron import OptimizedModel, pipeline
from acceleron.errors import AcceleronError, InvalidOptionError, TaskNotSupportedError, UnknownBackendError
from acceleron.plugins import PluginManager

Install = Callable[..., PluginManager]
SENTENCES = ["this movie was great fun", "the plot was boring and the actors were bad", "what a wonderful film"]


def test_torch_pipeline_equals_transformers(tiny_classifier: Path) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    assert isinstance(ours, transformers.TextClassificationPipeline)
    assert ours(SENTENCES) == stock(SENTENCES)
    assert ours(SENTENCES, top_k=None) == stock(SENTENCES, top_k=None)


def test_the_model_runs_on_the_backend(tiny_classifier: Path) -> None:
    pipe = pipeline("sentiment-analysis", model=tiny_classifier, accelerator="PyTorch")
    assert isinstance(pipe.model, OptimizedModel)
    assert pipe.model.backend.name == "torch"
    assert pipe.task == "text-classification"


def test_the_task_is_inferred_from_a_local_folder(tiny_classifier: Path) -> None:
    pipe = pipeline(model=str(tiny_classifier), accelerator="torch")
    assert isinstance(pipe, transformers.TextClassificationPipeline)


def test_auto_selection_uses_the_best_installed_backend(use_plugins: Install, tiny_classifier: Path) -> None:
    use_plugins(alpha="alpha", beta="beta")
    pipe = pipeline("text-classification", model=str(tiny_classifier))
    assert pipe.model.backend.name == "beta"
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    assert pipe(SENTENCES) == stock(SENTENCES)


def test_a_passed_model_goes_to_the_backend_that_owns_it(use_plugins: Install, tiny_classifier: Path) -> None:
    manager = use_plugins(alpha="alpha", beta="beta")
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=manager.get("alpha"))
    pipe = pipeline(model=model)
    assert pipe.model is model
    assert pipe.model.backend.name == "alpha"


def test_a_passed_model_and_another_accelerator_conflict(use_plugins: Install, tiny_classifier: Path) -> None:
    manager = use_plugins(alpha="alpha", beta="beta")
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=manager.get("alpha"))
    with pytest.raises(AcceleronError, match="runs on 'alpha' but accelerator='beta'"):
        pipeline(model=model, accelerator="beta")


def test_unknown_accelerator_is_a_value_error(tiny_classifier: Path) -> None:
    with pytest.raises(UnknownBackendError, match="unknown accelerator 'xyz'"):
        pipeline("text-classification", model=str(tiny_classifier), accelerator="xyz")


def test_nothing_installed_is_an_import_error(use_plugins: Install, tiny_classifier: Path) -> None:
    use_plugins()
    with pytest.raises(ImportError, match=r"pip install 'acceleron\[ort\]'"):
        pipeline("text-classification", model=str(tiny_classifier))


def test_an_unsupported_task_is_refused(use_plugins: Install, tiny_classifier: Path) -> None:
    use_plugins(alpha="alpha")
    with pytest.raises(TaskNotSupportedError, match="'alpha' does not support fill-mask"):
        pipeline("fill-mask", model=str(tiny_classifier), accelerator="alpha")


def test_a_model_is_required() -> None:
    with pytest.raises(ValueError, match="needs a model"):
        pipeline("text-classification", accelerator="torch")


def test_a_pytorch_instance_is_refused_with_advice(tiny_classifier: Path) -> None:
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_classifier)
    with pytest.raises(TypeError, match="save it and pass its folder"):
        pipeline("text-classification", model=torch_model, accelerator="torch")


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        pipeline("text-classification", model=str(tmp_path / "nope"), accelerator="torch")


def test_dtype_maps_to_the_backend_option(tiny_classifier: Path) -> None:
    pipe = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch", dtype="bfloat16")
    assert pipe.model.report()["runtime"]["dtype"] == "bfloat16"
    assert pipe(SENTENCES[0])[0]["label"] in {"NEGATIVE", "POSITIVE"}


def test_an_unsupported_dtype_is_refused(tiny_classifier: Path) -> None:
    with pytest.raises(InvalidOptionError, match="does not support dtype='int8'"):
        pipeline("text-classification", model=str(tiny_classifier), accelerator="torch", dtype="int8")


def test_unknown_backend_options_are_refused(tiny_classifier: Path) -> None:
    with pytest.raises(InvalidOptionError, match="does not know the option.*warp_speed"):
        pipeline(
            "text-classification",
            model=str(tiny_classifier),
            accelerator="torch",
            accelerator_options={"warp_speed": 9},
        )


def test_unknown_model_kwargs_are_refused(tiny_classifier: Path) -> None:
    with pytest.raises(TypeError, match="model_kwargs.*attn_implementation"):
        pipeline(
            "text-classification",
            model=str(tiny_classifier),
            accelerator="torch",
            model_kwargs={"attn_implementation": "eager"},
        )


def test_pipeline_call_arguments_pass_through(tiny_classifier: Path) -> None:
    pipe = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch", top_k=2)
    assert [len(result) for result in pipe(SENTENCES[0])] == [2]


def test_a_passed_model_must_fit_the_task(tiny_classifier: Path) -> None:
    from acceleron import get_backend

    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=get_backend("torch"))
    with pytest.raises(TaskNotSupportedError, match="loaded for text-classification, which cannot serve fill-mask"):
        pipeline("fill-mask", model=model)
    assert isinstance(pipeline("zero-shot-classification", model=model), transformers.ZeroShotClassificationPipeline)


def test_audio_classification_pipeline_equals_transformers(tmp_path: Path) -> None:
    from acceleron.testing import build_tiny_model, sample_inputs

    folder = str(build_tiny_model("audio-classification", tmp_path / "audio"))
    waves = sample_inputs("audio-classification", 2)
    ours = pipeline("audio-classification", model=folder, accelerator="torch")
    stock = transformers.pipeline("audio-classification", model=folder)
    assert ours(waves) == stock(waves)


def test_a_ctc_folder_gives_the_stock_speech_recognition_pipeline(tmp_path: Path) -> None:
    from acceleron.testing import build_tiny_model, sample_inputs

    folder = str(build_tiny_model("automatic-speech-recognition", tmp_path / "ctc"))
    ours = pipeline(model=folder, accelerator="torch")  # the task comes from Wav2Vec2ForCTC
    assert isinstance(ours, transformers.AutomaticSpeechRecognitionPipeline)
    assert ours.type == "ctc"
    waves = sample_inputs("automatic-speech-recognition", 2)
    assert ours(waves) == transformers.pipeline("automatic-speech-recognition", model=folder)(waves)


def test_a_declared_unsupported_task_is_refused_with_the_reason(use_plugins: Install, tiny_classifier: Path) -> None:
    from acceleron.status import list_backends

    use_plugins(declining="declining")
    with pytest.raises(TaskNotSupportedError, match="does not support fill-mask: its runtime lacks the vocabulary"):
        pipeline("fill-mask", model=str(tiny_classifier), accelerator="declining")
    with pytest.raises(TaskNotSupportedError, match="declining does not support fill-mask: its runtime lacks"):
        pipeline("fill-mask", model=str(tiny_classifier))
    status = next(status for status in list_backends() if status.name == "declining")
    assert status.unsupported == {"fill-mask": "its runtime lacks the vocabulary projection"}
    assert "fill-mask" not in status.tasks
