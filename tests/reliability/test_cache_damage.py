"""Cache damage: what was not written by acceleron, or no longer is what it wrote, is never loaded."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from helpers_reliability import build_files, flip_bytes_keep_mtime, manifest_path

import acceleron.cache as cache_module
from acceleron.cache import MARKER_NAME, ExportCache
from acceleron.cli import main
from acceleron.errors import CacheError

KEY = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def _tamper_manifest(cache: ExportCache, key: str, **fields: Any) -> None:
    path = manifest_path(cache, key)
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


# ---- clear removes only what acceleron made ----


def test_clear_refuses_a_non_empty_folder_acceleron_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("precious")
    with pytest.raises(CacheError, match=f"{tmp_path}.*{MARKER_NAME}.*touch") as raised:
        ExportCache(tmp_path).clear()
    assert isinstance(raised.value, OSError)
    assert (tmp_path / "thesis" / "chapter1.tex").read_text() == "precious"


def test_cli_clear_yes_on_an_unmarked_folder_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "photos").mkdir()
    assert main(["cache", "--dir", str(tmp_path), "clear", "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("acceleron: error:") and err.count("\n") == 1
    assert (tmp_path / "photos").is_dir()


def test_clear_removes_only_entries_whose_manifest_acceleron_wrote(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    assert (tmp_path / MARKER_NAME).is_file()  # the cache made its root: it is marked
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "lookalike").mkdir()  # a manifest, but not one of this cache's entries
    (tmp_path / "lookalike" / "acceleron_manifest.json").write_text(json.dumps({"files": {}}))
    report = cache.clear()
    assert report.removed == [KEY]
    assert report.foreign == ["lookalike", "notes"]
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert (tmp_path / "lookalike" / "acceleron_manifest.json").is_file()


def test_an_export_into_a_foreign_folder_does_not_mark_it(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    ExportCache(tmp_path).get_or_build(KEY, build_files)
    assert not (tmp_path / MARKER_NAME).exists()
    with pytest.raises(CacheError):
        ExportCache(tmp_path).clear()


def test_a_cache_of_an_older_acceleron_is_adopted(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    (tmp_path / MARKER_NAME).unlink()  # as an older version left it
    cache.get_or_build(OTHER, build_files)
    assert (tmp_path / MARKER_NAME).is_file()
    assert cache.clear().removed == [KEY, OTHER]


# ---- same-size corruption, restored entries ----


def test_same_size_corruption_with_the_mtime_restored_is_never_loaded(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    entry = cache.get_or_build(KEY, build_files)
    time.sleep(0.05)  # the kernel's ctime clock is coarse: corrupt in a later tick, as real damage is
    flip_bytes_keep_mtime(entry.path / "model.bin")
    assert cache.lookup(KEY) is None
    assert not entry.path.exists()
    rebuilt = cache.get_or_build(KEY, build_files)
    assert (rebuilt.path / "model.bin").read_bytes() == b"0123456789" * 100


def test_an_entry_restored_from_elsewhere_is_fully_verified_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ExportCache(tmp_path / "a")
    original.get_or_build(KEY, build_files)
    restored = ExportCache(tmp_path / "b")
    shutil.copytree(original.root, restored.root, copy_function=shutil.copy2)  # keeps mtimes
    hashed: list[str] = []
    real_sha = cache_module.file_sha256
    monkeypatch.setattr(cache_module, "file_sha256", lambda path: hashed.append(path.name) or real_sha(path))
    assert restored.lookup(KEY) is not None
    assert sorted(hashed) == ["extra.txt", "model.bin"]  # new inodes: every file re-hashed
    hashed.clear()
    assert restored.lookup(KEY) is not None
    assert hashed == []  # stamped with its new identity: cheap again


def test_a_backup_corrupted_before_it_was_restored_is_never_loaded(tmp_path: Path) -> None:
    original = ExportCache(tmp_path / "a")
    original.get_or_build(KEY, build_files)
    time.sleep(0.05)
    flip_bytes_keep_mtime(original.root / KEY / "model.bin")
    restored = ExportCache(tmp_path / "b")
    shutil.copytree(original.root, restored.root, copy_function=shutil.copy2)
    assert restored.lookup(KEY) is None


# ---- manifest paths are confined to their entry; symlinks are refused ----


@pytest.mark.parametrize(
    "artifact",
    [f"../{OTHER}/model.bin", "/etc/hostname", "sub/../../x", "missing.bin"],
    ids=["parent", "absolute", "dotdot", "unlisted"],
)
def test_a_tampered_artifact_field_is_damage(tmp_path: Path, artifact: str) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    cache.get_or_build(OTHER, build_files)
    _tamper_manifest(cache, KEY, artifact=artifact)
    assert cache.lookup(KEY) is None
    assert cache.lookup(OTHER) is not None  # the entry it pointed at is untouched


def test_a_tampered_file_list_pointing_outside_is_damage(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    entry = cache.get_or_build(KEY, build_files)
    cache.get_or_build(OTHER, build_files)
    files = dict(entry.manifest["files"])
    files[f"../{OTHER}/sub/extra.txt"] = files.pop("sub/extra.txt")  # the same bytes, in another entry
    (entry.path / "sub" / "extra.txt").unlink()
    _tamper_manifest(cache, KEY, files=files)
    assert cache.lookup(KEY) is None


def test_an_entry_that_is_a_symlink_to_another_is_refused(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(OTHER, build_files)
    (tmp_path / KEY).symlink_to(tmp_path / OTHER, target_is_directory=True)
    assert cache.lookup(KEY) is None
    assert not (tmp_path / KEY).exists()  # the link is gone ...
    assert cache.lookup(OTHER) is not None  # ... not what it pointed at


def test_an_entry_copied_under_another_key_is_refused(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(OTHER, build_files)
    shutil.copytree(tmp_path / OTHER, tmp_path / KEY)
    assert cache.lookup(KEY) is None


def test_an_entry_holding_a_symlink_is_refused(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    cache.get_or_build(OTHER, build_files)
    (tmp_path / KEY / "model.bin").unlink()
    (tmp_path / KEY / "model.bin").symlink_to(tmp_path / OTHER / "model.bin")  # same bytes, same size
    assert cache.lookup(KEY) is None
    assert cache.lookup(OTHER) is not None


def test_a_file_planted_in_an_entry_is_damage(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    (tmp_path / KEY / "tokenizer.json").write_text("{}")
    assert cache.lookup(KEY) is None


# ---- verify ----


def test_verify_rehashes_everything_and_removes_the_damaged(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    cache.get_or_build(OTHER, build_files)
    time.sleep(0.05)
    flip_bytes_keep_mtime(tmp_path / OTHER / "sub" / "extra.txt")
    report = cache.verify()
    assert report.verified == [KEY]
    assert report.damaged == {OTHER: "sub/extra.txt does not match its sha256"}
    assert not (tmp_path / OTHER).exists()


def test_cli_verify_json_reports_and_exits_1_on_damage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    assert main(["cache", "--dir", str(tmp_path), "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] == [KEY]
    time.sleep(0.05)
    flip_bytes_keep_mtime(tmp_path / KEY / "model.bin")
    assert main(["cache", "--dir", str(tmp_path), "verify", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["damaged"] == {KEY: "model.bin does not match its sha256"}


# ---- another user's entries are only read ----


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_another_users_restored_entry_loads_without_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = ExportCache(tmp_path / "a")
    original.get_or_build(KEY, build_files)
    shared = ExportCache(tmp_path / "b")
    shutil.copytree(original.root, shared.root, copy_function=shutil.copy2)
    before = _snapshot(shared.root)
    monkeypatch.setattr(os, "getuid", lambda: (shared.root / KEY).stat().st_uid + 1)  # we are someone else
    assert shared.lookup(KEY) is not None
    assert shared.get_or_build(KEY, build_files).path == shared.root / KEY
    assert _snapshot(shared.root) == before  # verified, but not stamped: nothing written


def test_another_users_damaged_entry_is_neither_loaded_nor_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    time.sleep(0.05)
    flip_bytes_keep_mtime(tmp_path / KEY / "model.bin")
    monkeypatch.setattr(os, "getuid", lambda: (tmp_path / KEY).stat().st_uid + 1)
    with pytest.raises(CacheError, match="belongs to another user.*acceleron cache verify"):
        cache.lookup(KEY)
    assert (tmp_path / KEY / "model.bin").exists()
    report = cache.verify()
    assert list(report.damaged) == [KEY] and report.kept == [KEY]
