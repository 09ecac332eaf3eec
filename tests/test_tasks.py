"""The task table: names, aliases, inference from folders, inputs and axes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acceleron.errors import TaskNotSupportedError
from acceleron.tasks import TASKS, get_task, infer_task, normalize_task
from acceleron.testing import build_tiny_model

REQUIRED = {
    "feature-extraction",
    "text-classification",
    "zero-shot-classification",
    "token-classification",
    "question-answering",
    "fill-mask",
    "image-classification",
    "audio-classification",
    "automatic-speech-recognition",
    "text-generation",
}


def test_the_table_covers_the_required_tasks() -> None:
    assert set(TASKS) >= REQUIRED


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("sentiment-analysis", "text-classification"),
        ("ner", "token-classification"),
        ("Text-Classification", "text-classification"),
        ("question_answering", "question-answering"),
        (" fill-mask ", "fill-mask"),
        ("asr", "automatic-speech-recognition"),
    ],
)
def test_aliases_and_spellings_normalise(given: str, canonical: str) -> None:
    assert normalize_task(given) == canonical


def test_unknown_task_lists_the_supported_ones() -> None:
    with pytest.raises(TaskNotSupportedError, match="unknown task 'translate-klingon'.*text-classification"):
        normalize_task("translate-klingon")


def test_task_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="task must be a string"):
        normalize_task(3)  # type: ignore[arg-type]


def _folder_with_architecture(tmp_path: Path, architecture: str) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    return tmp_path


@pytest.mark.parametrize(
    ("architecture", "task"),
    [
        ("BertForSequenceClassification", "text-classification"),
        ("BertModel", "feature-extraction"),
        ("RobertaForTokenClassification", "token-classification"),
        ("DistilBertForQuestionAnswering", "question-answering"),
        ("BertForMaskedLM", "fill-mask"),
        ("ViTForImageClassification", "image-classification"),
        ("Wav2Vec2ForSequenceClassification", "audio-classification"),
        ("Wav2Vec2ForCTC", "automatic-speech-recognition"),
        ("HubertForCTC", "automatic-speech-recognition"),
        ("LlamaForCausalLM", "text-generation"),
        ("YolosForObjectDetection", "object-detection"),
        ("DetrForObjectDetection", "object-detection"),
        ("SegformerForSemanticSegmentation", "image-segmentation"),
        ("DPTForDepthEstimation", "depth-estimation"),
        ("GLPNForDepthEstimation", "depth-estimation"),
        # A base model in both the image mapping and the all-models one: the narrower mapping wins.
        ("ViTModel", "image-feature-extraction"),
        ("CLIPModel", "zero-shot-image-classification"),
    ],
)
def test_task_is_inferred_from_the_architecture(tmp_path: Path, architecture: str, task: str) -> None:
    assert infer_task(_folder_with_architecture(tmp_path, architecture)) == task


def test_inference_without_config_says_to_pass_the_task(tmp_path: Path) -> None:
    with pytest.raises(TaskNotSupportedError, match="config.json does not exist. Pass task="):
        infer_task(tmp_path)


def test_inference_of_an_unknown_architecture_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(TaskNotSupportedError, match="FluxCapacitorModel"):
        infer_task(_folder_with_architecture(tmp_path, "FluxCapacitorModel"))


def test_inputs_follow_the_model_signature(tmp_path: Path) -> None:
    spec = get_task("text-classification")
    bert = spec.load_torch_model(build_tiny_model("text-classification", tmp_path / "b", "bert"))
    distil = spec.load_torch_model(build_tiny_model("text-classification", tmp_path / "d", "distilbert"))
    assert spec.plan(bert).graph.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert spec.plan(distil).graph.input_names == ["input_ids", "attention_mask"]


def test_example_inputs_pad_the_last_row(tmp_path: Path) -> None:
    spec = get_task("text-classification")
    model = spec.load_torch_model(build_tiny_model("text-classification", tmp_path / "b"))
    inputs = spec.example_inputs(model, batch_size=2, sequence_length=8)
    assert inputs["attention_mask"][0].tolist() == [1] * 8
    assert inputs["attention_mask"][1].tolist() == [1] * 4 + [0] * 4
    assert int(inputs["input_ids"].max()) < model.config.vocab_size


def test_dynamic_axes_cover_inputs_and_outputs() -> None:
    from acceleron.tasks import SINGLE_PASS

    axes = SINGLE_PASS.dynamic_axes(get_task("question-answering"), ["input_ids", "attention_mask"])
    assert axes["input_ids"] == {0: "batch", 1: "sequence"}
    assert axes["start_logits"] == {0: "batch", 1: "sequence"}
    assert SINGLE_PASS.dynamic_axes(get_task("image-classification"), ["pixel_values"])["pixel_values"] == {0: "batch"}
    assert SINGLE_PASS.dynamic_axes(get_task("text-classification"), ["input_ids"])["logits"] == {0: "batch"}


def test_speech_recognition_exports_waveforms_with_their_mask_and_dynamic_frames(tmp_path: Path) -> None:
    spec = get_task("automatic-speech-recognition")
    model = spec.load_torch_model(build_tiny_model(spec.name, tmp_path / "ctc"))
    graph = spec.plan(model).graph
    assert graph.input_names == ["input_values", "attention_mask"]
    assert graph.output_names == ["logits"]
    assert graph.dynamic_axes == {
        "input_values": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "frames"},
    }


def test_audio_example_inputs_have_an_odd_length_and_a_padded_last_row(tmp_path: Path) -> None:
    spec = get_task("automatic-speech-recognition")
    model = spec.load_torch_model(build_tiny_model(spec.name, tmp_path / "ctc"))
    inputs = spec.example_inputs(model, batch_size=2, sequence_length=11)
    samples = inputs["input_values"].shape[1]
    assert samples % 2 == 1
    assert inputs["attention_mask"][0].tolist() == [1] * samples
    padded = inputs["attention_mask"][1]
    assert 0 < int(padded.sum()) < samples and padded.tolist() == sorted(padded.tolist(), reverse=True)
    assert bool((inputs["input_values"][1][padded == 0] == 0).all())


def test_a_waveform_without_its_mask_gets_an_all_ones_one_and_an_all_ones_mask_may_be_dropped() -> None:
    import torch

    from acceleron.errors import InvalidInputError
    from acceleron.tasks import normalize_inputs

    waves = torch.zeros(2, 4001)
    filled = normalize_inputs({"input_values": waves}, ["input_values", "attention_mask"])
    assert filled["attention_mask"].dtype == torch.long and bool((filled["attention_mask"] == 1).all())
    ones = torch.ones(2, 4001, dtype=torch.int32)  # what Wav2Vec2FeatureExtractor returns
    assert list(normalize_inputs({"input_values": waves, "attention_mask": ones}, ["input_values"])) == ["input_values"]
    ones[1, 3000:] = 0
    with pytest.raises(InvalidInputError, match="takes no input 'attention_mask'"):
        normalize_inputs({"input_values": waves, "attention_mask": ones}, ["input_values"])


def test_a_task_served_by_several_kinds_picks_its_entry_by_architecture() -> None:
    """Speech recognition: CTC models single-pass; a later encoder-decoder entry for Whisper, same name."""
    from acceleron.tasks import Seq2SeqLM, SinglePass, select_variant, task_variants

    ctc = get_task("automatic-speech-recognition")
    assert isinstance(ctc.kind, SinglePass)
    variants = task_variants("asr")
    assert variants[0] is ctc and len(variants) == 2
    seq2seq = variants[1]
    assert isinstance(seq2seq.kind, Seq2SeqLM) and seq2seq.auto_class == "AutoModelForSpeechSeq2Seq"
    assert get_task("asr", ["Wav2Vec2ForCTC"]) is ctc
    assert get_task("speech-recognition", ["WhisperForConditionalGeneration"]) is seq2seq
    assert select_variant((ctc, seq2seq), ["WhisperForConditionalGeneration"]) is seq2seq
    assert select_variant((ctc, seq2seq), ["Wav2Vec2ForCTC"]) is ctc
    assert select_variant((ctc, seq2seq), []) is ctc  # no config: the default entry


def test_image_text_tasks_have_a_batch_axis_per_tower(tmp_path: Path) -> None:
    """CLIP gets candidate labels x images: the text and image batches are separate symbolic axes."""
    spec = get_task("zero-shot-image-classification")
    model = spec.load_torch_model(build_tiny_model(spec.name, tmp_path / "clip"))
    graph = spec.plan(model).graph
    assert graph.input_names == ["input_ids", "attention_mask", "pixel_values"]
    assert graph.dynamic_axes["input_ids"] == {0: "text_batch", 1: "sequence"}
    assert graph.dynamic_axes["pixel_values"] == {0: "image_batch"}
    assert graph.dynamic_axes["logits_per_image"] == {0: "image_batch", 1: "text_batch"}
    inputs = spec.example_inputs(model, batch_size=2, sequence_length=8)
    assert inputs["input_ids"].shape == (2, 8)
    assert inputs["pixel_values"].shape[0] == 3  # never equal to the text batch in a trace


def test_model_specific_output_classes_are_named_by_dotted_path() -> None:
    import torch
    from transformers.models.yolos.modeling_yolos import YolosObjectDetectionOutput

    spec = get_task("object-detection")
    wrapped = spec.wrap_outputs({"logits": torch.zeros(1, 4, 4), "pred_boxes": torch.zeros(1, 4, 4)})
    assert isinstance(wrapped, YolosObjectDetectionOutput)
    assert set(wrapped.keys()) == {"logits", "pred_boxes"}


def test_an_unpadded_pixel_mask_is_dropped_and_a_padded_one_refused() -> None:
    import torch

    from acceleron.errors import InvalidInputError
    from acceleron.tasks import normalize_inputs

    pixels = torch.zeros(2, 3, 8, 8)
    full = torch.ones(2, 8, 8, dtype=torch.long)
    assert list(normalize_inputs({"pixel_values": pixels, "pixel_mask": full}, ["pixel_values"])) == ["pixel_values"]
    padded = full.clone()
    padded[1, :, 4:] = 0
    with pytest.raises(InvalidInputError, match="pixel_mask"):
        normalize_inputs({"pixel_values": pixels, "pixel_mask": padded}, ["pixel_values"])


def test_segmentation_takes_any_image_size_and_is_validated_at_another(tmp_path: Path) -> None:
    spec = get_task("image-segmentation")
    model = spec.load_torch_model(build_tiny_model(spec.name, tmp_path / "segformer"))
    plan = spec.plan(model)
    assert plan.graph.dynamic_axes["pixel_values"] == {0: "batch", 2: "height", 3: "width"}
    traced = plan.graph.example_inputs["pixel_values"].shape
    (case,) = spec.kind.validation_cases(plan)
    assert case.inputs["pixel_values"].shape[2:] == (traced[2] + 8, traced[3] + 16)
