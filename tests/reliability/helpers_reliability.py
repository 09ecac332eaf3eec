"""Shared helpers of the reliability suite (the fixtures of tests/conftest.py apply here too)."""

from __future__ import annotations

import os
from pathlib import Path

from acceleron.cache import MANIFEST_NAME, ExportCache


def build_files(folder: Path) -> dict[str, str]:
    """A small entry: an artifact, a file in a subfolder."""
    (folder / "model.bin").write_bytes(b"0123456789" * 100)
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.txt").write_text("hello")
    return {"artifact": "model.bin"}


def flip_bytes_keep_mtime(path: Path) -> None:
    """Corrupt ``path`` in place, same size, and put its modification time back."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    data[-1] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_size == stat.st_size


def manifest_path(cache: ExportCache, key: str) -> Path:
    return cache.root / key / MANIFEST_NAME
