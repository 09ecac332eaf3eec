"""The export cache: keys, atomic writes, damaged entries, concurrent exporters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from acceleron import OptimizedModel
from acceleron.cache import MANIFEST_NAME, ExportCache, cache_key
from acceleron.errors import ExportError
from acceleron.plugins import PluginManager

Install = Callable[..., PluginManager]


def _build_files(folder: Path) -> dict[str, str]:
    (folder / "model.bin").write_bytes(b"0123456789" * 100)
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.txt").write_text("hello")
    return {"artifact": "model.bin"}


def test_keys_are_stable_and_sensitive() -> None:
    parts = {"source": "sha256:abc", "task": "text-classification", "backend": "ort", "options": {"dtype": "int8"}}
    assert cache_key(parts) == cache_key(dict(reversed(list(parts.items()))))
    assert cache_key(parts) != cache_key({**parts, "options": {"dtype": "float32"}})


def test_an_entry_is_built_once_and_described(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    built: list[Path] = []

    def build(folder: Path) -> dict[str, str]:
        built.append(folder)
        return _build_files(folder)

    entry = cache.get_or_build("k1", build, describe={"task": "t"})
    again = cache.get_or_build("k1", build)
    assert len(built) == 1
    assert again.path == entry.path == tmp_path / "k1"
    assert entry.manifest["task"] == "t" and entry.manifest["artifact"] == "model.bin"
    assert set(entry.manifest["files"]) == {"model.bin", "sub/extra.txt"}
    assert entry.size == 1005


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)

    def build(folder: Path) -> dict[str, str]:
        _build_files(folder)
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        cache.get_or_build("k1", build)
    assert not (tmp_path / "k1").exists()
    assert list((tmp_path / ".tmp").iterdir()) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: (path / MANIFEST_NAME).unlink(),
        lambda path: (path / MANIFEST_NAME).write_text("{not json"),
        lambda path: (path / "model.bin").unlink(),
        lambda path: (path / "model.bin").write_bytes(b"short"),
        lambda path: (path / "model.bin").write_bytes(b"X" * 1000),  # same size, other content
    ],
    ids=["no-manifest", "bad-manifest", "missing-file", "truncated", "same-size-corruption"],
)
def test_a_damaged_entry_is_rebuilt_never_loaded(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    cache = ExportCache(tmp_path)
    entry = cache.get_or_build("k1", _build_files)
    damage(entry.path)
    assert cache.lookup("k1") is None
    rebuilt = cache.get_or_build("k1", _build_files)
    assert (rebuilt.path / "model.bin").read_bytes() == b"0123456789" * 100


def test_clear_and_list(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build("a", lambda folder: {**_build_files(folder), "backend": "ort"})
    cache.get_or_build("b", lambda folder: {**_build_files(folder), "backend": "ov"})
    assert [e.key for e in cache.entries()] == ["a", "b"]
    assert cache.clear(lambda entry: entry.manifest["backend"] == "ov").removed == ["b"]
    assert [e.key for e in cache.entries()] == ["a"]
    assert cache.clear().removed == ["a"]
    assert list(cache.entries()) == []


def test_an_unwritable_cache_says_where_to_point_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="ACCELERON_CACHE_DIR"):
        ExportCache(blocker / "cache").get_or_build("k", _build_files)


def test_a_failed_export_leaves_no_cache_entry(use_plugins: Install, tiny_classifier: Path) -> None:
    manager = use_plugins(failing="failing")
    with pytest.raises(ExportError, match="converter crashed halfway"):
        OptimizedModel.from_pretrained(tiny_classifier, accelerator=manager.get("failing"))
    cache = ExportCache()
    assert list(cache.entries()) == []
    assert [p for p in cache.root.iterdir() if not p.name.startswith(".")] == []
    assert list((cache.root / ".tmp").iterdir()) == []
