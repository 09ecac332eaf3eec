"""Hostile model folders: symlinks and paths that lead outside never bring other files in."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from acceleron import OptimizedModel
from acceleron.cache import ExportCache
from acceleron.errors import UnsafePathError
from acceleron.sources import stays_inside


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    path.write_text('{"token": "TOPSECRET"}')
    return path


@pytest.fixture
def folder(tiny_classifier: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_classifier, copy)
    return copy


def _alpha(use_plugins: Any) -> Any:
    return use_plugins(alpha="alpha").get("alpha")


def _all_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_a_preprocessor_linked_outside_reaches_neither_cache_nor_saved_model(
    folder: Path, secret: Path, tmp_path: Path, use_plugins: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / "added_tokens_extra.json").symlink_to(secret)
    (folder / "alias.json").symlink_to(folder / "config.json")  # inside the folder: copied as a file
    with caplog.at_level(logging.WARNING, logger="acceleron.sources"):
        model = OptimizedModel.from_pretrained(folder, accelerator=_alpha(use_plugins))
    saved = model.save_pretrained(tmp_path / "saved")
    for root in (ExportCache().root, saved):
        assert "TOPSECRET" not in _all_text(root)
        assert not (root / model.artifact.parent.name / "added_tokens_extra.json").exists()
        assert not any(p.is_symlink() for p in root.rglob("*"))
    assert (saved / "alias.json").read_text() == (folder / "config.json").read_text()
    assert any("skipping" in r.getMessage() and "added_tokens_extra.json" in r.getMessage() for r in caplog.records)


def test_save_pretrained_refuses_an_artifact_file_linked_outside(
    folder: Path, tmp_path: Path, use_plugins: Any
) -> None:
    backend = _alpha(use_plugins)
    saved = OptimizedModel.from_pretrained(folder, accelerator=backend).save_pretrained(tmp_path / "saved")
    weights = next((saved / "weights").glob("*.safetensors"))
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    model = OptimizedModel.from_pretrained(saved, accelerator=backend, export=False)
    with pytest.raises(UnsafePathError, match="outside"):
        model.save_pretrained(tmp_path / "again")
    assert not (tmp_path / "again" / "weights").exists()


@pytest.mark.parametrize("subfolder", ["..", "../model", "/etc", "a/../../x"])
def test_a_subfolder_leading_out_is_refused(folder: Path, use_plugins: Any, subfolder: str) -> None:
    with pytest.raises(UnsafePathError, match="leads outside the model folder"):
        OptimizedModel.from_pretrained(folder, accelerator=_alpha(use_plugins), subfolder=subfolder)


def test_a_subfolder_that_links_outside_is_refused(folder: Path, tmp_path: Path, use_plugins: Any) -> None:
    (tmp_path / "elsewhere").mkdir()
    (folder / "onnx").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the model folder"):
        OptimizedModel.from_pretrained(folder, accelerator=_alpha(use_plugins), subfolder="onnx")


@pytest.mark.parametrize("file_name", ["../other/alpha.artifact", "/etc/hostname", "linked.artifact"])
def test_a_file_name_leading_out_is_refused(folder: Path, tmp_path: Path, use_plugins: Any, file_name: str) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "alpha.artifact").write_text("weights")
    (folder / "linked.artifact").symlink_to(tmp_path / "other" / "alpha.artifact")
    with pytest.raises(UnsafePathError, match="outside"):
        OptimizedModel.from_pretrained(folder, accelerator=_alpha(use_plugins), file_name=file_name, export=False)


def test_hub_snapshot_links_into_their_blob_store_are_followed(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc123").write_text("{}")
    snapshot = repo / "snapshots" / "0123abcd"
    (snapshot / "sub").mkdir(parents=True)
    (snapshot / "tokenizer.json").symlink_to("../../blobs/abc123")
    (snapshot / "sub" / "config.json").symlink_to("../../../blobs/abc123")
    (snapshot / "stolen.json").symlink_to(tmp_path)
    assert stays_inside(snapshot / "tokenizer.json", snapshot)
    assert stays_inside(snapshot / "sub" / "config.json", snapshot / "sub")
    assert not stays_inside(snapshot / "stolen.json", snapshot)
