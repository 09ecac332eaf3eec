"""Where the ``ov`` backend finds its model files, what it saves, and how it fails on broken ones."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from acceleron_openvino.plugin import OpenVINOBackend

from acceleron.errors import AcceleronError, ArtifactNotFoundError


def _copy(saved: Path, target: Path, ir_folder: str = "", ir_name: str = "openvino_model") -> Path:
    """A model folder with the saved IR under ``ir_folder``/``ir_name``.xml and the rest at the root."""
    for path in saved.iterdir():
        if path.suffix in (".xml", ".bin"):
            destination = target / ir_folder / f"{ir_name}{path.suffix}"
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        elif path.name != "acceleron_manifest.json":
            shutil.copy2(path, target / path.name)
    return target


def test_find_artifact_prefers_the_root_ir(saved_classifier: Path) -> None:
    assert OpenVINOBackend().find_artifact(saved_classifier) == saved_classifier / "openvino_model.xml"


def test_find_artifact_looks_in_the_openvino_subfolder(saved_classifier: Path, tmp_path: Path) -> None:
    folder = _copy(saved_classifier, tmp_path, ir_folder="openvino")
    assert OpenVINOBackend().find_artifact(folder) == folder / "openvino" / "openvino_model.xml"


def test_find_artifact_returns_none_without_a_model(tiny_classifier: Path) -> None:
    assert OpenVINOBackend().find_artifact(tiny_classifier) is None


def test_several_irs_without_file_name_is_an_error_naming_them(saved_classifier: Path, tmp_path: Path) -> None:
    folder = _copy(saved_classifier, tmp_path, ir_name="first")
    _copy(saved_classifier, folder, ir_name="second")
    with pytest.raises(AcceleronError, match=r"first\.xml, second\.xml.*file_name="):
        OpenVINOBackend().find_artifact(folder)


def test_the_default_ir_name_wins_over_auxiliary_graphs(saved_classifier: Path, tmp_path: Path) -> None:
    folder = _copy(saved_classifier, tmp_path)
    _copy(saved_classifier, folder, ir_name="openvino_tokenizer")
    assert OpenVINOBackend().find_artifact(folder) == folder / "openvino_model.xml"


def test_file_name_picks_one_of_several_in_a_subfolder(
    saved_classifier: Path, tmp_path: Path, classifier_inputs: dict[str, Any], torch_logits: torch.Tensor, load_ov: Any
) -> None:
    folder = _copy(saved_classifier, tmp_path, ir_folder="openvino", ir_name="first")
    _copy(saved_classifier, folder, ir_folder="openvino", ir_name="second")
    model = load_ov(folder, export=False, file_name="second.xml", task="text-classification", dtype="float32")
    assert model.artifact == folder / "openvino" / "second.xml"
    assert torch.allclose(model(**classifier_inputs).logits, torch_logits, atol=1e-4)


def test_artifact_files_are_the_xml_and_its_bin(saved_classifier: Path) -> None:
    artifact = saved_classifier / "openvino_model.xml"
    assert OpenVINOBackend().artifact_files(artifact) == [artifact, saved_classifier / "openvino_model.bin"]


def test_saved_folder_holds_ir_config_and_tokenizer(saved_classifier: Path) -> None:
    names = {path.name for path in saved_classifier.iterdir()}
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json"} <= names


def test_ir_inputs_and_outputs_carry_the_task_names(saved_classifier: Path) -> None:
    import openvino

    model = openvino.Core().read_model(saved_classifier / "openvino_model.xml")
    assert [port.get_any_name() for port in model.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [port.get_any_name() for port in model.outputs] == ["logits"]
    assert [str(dim) for dim in model.inputs[0].get_partial_shape()] == ["?", "?"]


def test_missing_bin_is_a_clear_error(saved_classifier: Path, tmp_path: Path, load_ov: Any) -> None:
    folder = _copy(saved_classifier, tmp_path)
    (folder / "openvino_model.bin").unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"no weights file openvino_model\.bin"):
        load_ov(folder, export=False, task="text-classification")


def test_corrupt_xml_is_a_clear_error(saved_classifier: Path, tmp_path: Path, load_ov: Any) -> None:
    folder = _copy(saved_classifier, tmp_path)
    xml = folder / "openvino_model.xml"
    xml.write_text(xml.read_text()[: len(xml.read_text()) // 2])
    with pytest.raises(AcceleronError, match=r"cannot read the OpenVINO IR .*openvino_model\.xml.*export=True"):
        load_ov(folder, export=False, task="text-classification")


def test_truncated_bin_is_a_clear_error(saved_classifier: Path, tmp_path: Path, load_ov: Any) -> None:
    folder = _copy(saved_classifier, tmp_path)
    weights = folder / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(AcceleronError, match=r"cannot read the OpenVINO IR .*truncated"):
        load_ov(folder, export=False, task="text-classification")


def test_onnx_file_is_loaded_as_the_source(
    tiny_classifier: Path, tmp_path: Path, classifier_inputs: dict[str, Any], torch_logits: torch.Tensor, load_ov: Any
) -> None:
    pytest.importorskip("onnx", reason="writing the ONNX test file needs the onnx package")
    import warnings

    from acceleron.tasks import get_task

    folder = _copy(tiny_classifier, tmp_path)
    (folder / "onnx").mkdir()
    names = list(classifier_inputs)
    torch_model = get_task("text-classification").load_torch_model(tiny_classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch_model,
            (),
            str(folder / "onnx" / "model.onnx"),
            kwargs=dict(classifier_inputs),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*names, "logits"]},
            dynamo=False,
        )
    model = load_ov(folder, export=False, task="text-classification", dtype="float32")
    assert model.artifact == folder / "onnx" / "model.onnx"
    other = {name: tensor[:2, :7] for name, tensor in classifier_inputs.items()}
    assert torch.allclose(model(**classifier_inputs).logits, torch_logits, atol=1e-4)
    assert model(**other).logits.shape == (2, 2)
    saved = model.save_pretrained(tmp_path / "saved")
    assert (saved / "model.onnx").is_file()
    assert load_ov(saved, export=False).artifact == saved / "model.onnx"
