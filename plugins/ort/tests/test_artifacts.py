"""Loading ONNX files others produced: folder layouts, file_name, damaged files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from support import SENTENCES, encode, load

from acceleron.cache import MANIFEST_NAME, ExportCache
from acceleron.errors import AcceleronError, ArtifactNotFoundError
from acceleron_ort.artifacts import find_onnx


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"onnx")


def _sentence_transformers_layout(saved: Path, target: Path) -> Path:
    """Config and tokenizer at the root, the graph in onnx/, no acceleron manifest."""
    shutil.copytree(saved, target)
    (target / MANIFEST_NAME).unlink()
    (target / "onnx").mkdir()
    (target / "model.onnx").rename(target / "onnx" / "model.onnx")
    return target


# ---- which file is picked ----


def test_root_model_onnx_wins_over_the_subfolder(tmp_path: Path) -> None:
    _touch(tmp_path, "model.onnx", "onnx/model.onnx")
    assert find_onnx(tmp_path) == tmp_path / "model.onnx"


def test_model_onnx_is_found_in_the_onnx_subfolder_beside_other_variants(tmp_path: Path) -> None:
    _touch(tmp_path, "onnx/model.onnx", "onnx/model_qint8_avx512.onnx", "onnx/model_O4.onnx")
    assert find_onnx(tmp_path) == tmp_path / "onnx" / "model.onnx"


def test_a_single_onnx_file_is_used_whatever_its_name(tmp_path: Path) -> None:
    _touch(tmp_path, "encoder.onnx")
    assert find_onnx(tmp_path) == tmp_path / "encoder.onnx"


def test_several_onnx_files_without_model_onnx_are_listed_in_the_error(tmp_path: Path) -> None:
    _touch(tmp_path, "onnx/model_O1.onnx", "onnx/model_qint8.onnx")
    with pytest.raises(ArtifactNotFoundError, match=r"onnx/model_O1\.onnx, onnx/model_qint8\.onnx.*file_name"):
        find_onnx(tmp_path)


def test_file_name_picks_a_file_in_the_onnx_subfolder(tmp_path: Path) -> None:
    _touch(tmp_path, "onnx/model.onnx", "onnx/model_qint8.onnx")
    assert find_onnx(tmp_path, "model_qint8.onnx") == tmp_path / "onnx" / "model_qint8.onnx"


def test_a_file_name_that_matches_nothing_lists_what_is_there(tmp_path: Path) -> None:
    _touch(tmp_path, "onnx/model.onnx")
    with pytest.raises(ArtifactNotFoundError, match=r"no ONNX file named 'model_int8\.onnx'.*onnx/model\.onnx"):
        find_onnx(tmp_path, "model_int8.onnx")


def test_a_folder_without_onnx_files_has_no_artifact(tmp_path: Path) -> None:
    _touch(tmp_path, "model.safetensors")
    assert find_onnx(tmp_path) is None


# ---- loading them ----


def test_sentence_transformers_layout_loads_without_exporting(
    saved_classifier: Path, tiny_classifier: Path, tmp_path: Path
) -> None:
    folder = _sentence_transformers_layout(saved_classifier, tmp_path / "st")
    untouched = ExportCache(tmp_path / "must-stay-empty")
    model = load(folder, export=False, export_cache=untouched)
    assert model.artifact == folder / "onnx" / "model.onnx"
    assert not untouched.root.exists()
    inputs = encode(folder, SENTENCES)
    reference = load_torch(tiny_classifier)(**inputs).logits
    assert torch.allclose(model(**inputs).logits, reference, atol=1e-4)


def test_pipeline_on_the_sentence_transformers_layout_uses_its_onnx_file(
    saved_classifier: Path, tmp_path: Path
) -> None:
    from acceleron import pipeline

    folder = _sentence_transformers_layout(saved_classifier, tmp_path / "st")
    classify = pipeline(
        "text-classification",
        model=str(folder),
        accelerator="onnxruntime",
        model_kwargs={"export_cache": ExportCache(tmp_path / "must-stay-empty")},
    )
    assert classify.model.artifact == folder / "onnx" / "model.onnx"
    assert classify("what a wonderful film")[0]["label"] in {"NEGATIVE", "POSITIVE"}
    assert not (tmp_path / "must-stay-empty").exists()


def test_file_name_selects_among_several_onnx_files(saved_classifier: Path, tmp_path: Path) -> None:
    folder = _sentence_transformers_layout(saved_classifier, tmp_path / "st")
    shutil.copy(folder / "onnx" / "model.onnx", folder / "onnx" / "model_variant.onnx")
    (folder / "onnx" / "model.onnx").unlink()
    _touch(folder, "onnx/model_broken.onnx")
    with pytest.raises(ArtifactNotFoundError, match="model_broken.onnx, onnx/model_variant.onnx"):
        load(folder, export=False)
    model = load(folder, export=False, file_name="model_variant.onnx")
    assert model.artifact == folder / "onnx" / "model_variant.onnx"


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda data: data[: len(data) // 2], "Protobuf parsing failed"),
        (lambda data: b"this is not an onnx file" * 10, "Protobuf parsing failed"),
        (lambda data: b"", "the file is empty"),
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_a_damaged_onnx_file_raises_a_clear_error_naming_it(
    saved_classifier: Path, tmp_path: Path, damage: object, cause: str
) -> None:
    folder = shutil.copytree(saved_classifier, tmp_path / "damaged")
    artifact = folder / "model.onnx"
    artifact.write_bytes(damage(artifact.read_bytes()))  # type: ignore[operator]
    with pytest.raises(AcceleronError, match="cannot load the ONNX model") as caught:
        load(folder, export=False)
    message = str(caught.value)
    assert str(artifact) in message
    assert cause in message
    assert "corrupt or truncated" in message
    assert "export=True" in message


def load_torch(folder: Path) -> torch.nn.Module:
    from acceleron.tasks import get_task

    return get_task("text-classification").load_torch_model(folder)
