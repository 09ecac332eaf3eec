"""The persistent cache of exported artifacts.

Layout under the cache root (``$ACCELERON_CACHE_DIR``, else ``$XDG_CACHE_HOME/acceleron/exports``,
else ``~/.cache/acceleron/exports``)::

    <key>/                      one finished entry: artifact files, config, preprocessors
    <key>/acceleron_manifest.json   written last; lists every file with its size and sha256
    .tmp/<key>-<random>/        an entry being built (never read)
    .locks/<key>.lock           held while one process builds <key>

An entry is built in ``.tmp`` and renamed into place, so readers never see half an entry. A
per-key file lock makes a second process wait for the first and then reuse its entry. An entry
whose manifest is missing or unreadable, or whose files are missing, resized or (when their
modification time changed) no longer match their sha256, is removed and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acceleron.errors import CacheError

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "ACCELERON_CACHE_DIR"
MANIFEST_NAME = "acceleron_manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Where exports are cached unless told otherwise."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "acceleron" / "exports"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable key for everything that determines an artifact."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` (the manifest excepted) with size, mtime and sha256."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            stat = path.stat()
            files[path.relative_to(folder).as_posix()] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": file_sha256(path),
            }
    return files


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Write the manifest atomically (temp file, then rename)."""
    target = folder / MANIFEST_NAME
    temp = folder / f".{MANIFEST_NAME}.{uuid.uuid4().hex}"
    temp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(temp, target)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in ``folder``, or None when there is none or it is unreadable."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_files(folder: Path, manifest: Mapping[str, Any]) -> str:
    """Why the files in ``folder`` do not match ``manifest``; empty when they match."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "the manifest lists no files"
    for relative, info in files.items():
        path = folder / relative
        try:
            stat = path.stat()
        except OSError:
            return f"{relative} is missing"
        if stat.st_size != info.get("size"):
            return f"{relative} has {stat.st_size} bytes, the manifest says {info.get('size')}"
        # Hashing is the expensive part: only re-hash files touched since the manifest was written.
        if stat.st_mtime_ns != info.get("mtime_ns") and file_sha256(path) != info.get("sha256"):
            return f"{relative} does not match its sha256"
    return ""


@dataclass(frozen=True)
class CacheEntry:
    """A finished, verified cache entry."""

    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        return sum(int(info.get("size", 0)) for info in self.manifest.get("files", {}).values())


class ExportCache:
    """A folder of exported artifacts, keyed by :func:`cache_key`."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"ExportCache({str(self.root)!r})"

    def _ensure_dirs(self) -> None:
        try:
            for sub in (self.root, self.root / ".tmp", self.root / ".locks"):
                sub.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(
                f"cannot create the export cache at {self.root}: {error}. "
                f"Point {ENV_CACHE_DIR} (or cache_dir=...) at a writable folder."
            ) from error

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``; a damaged entry is removed and None returned."""
        path = self.root / key
        if not path.is_dir():
            return None
        manifest = read_manifest(path)
        problem = "its manifest is missing or unreadable" if manifest is None else check_files(path, manifest)
        if manifest is None or problem:
            logger.warning("acceleron: cache entry %s is damaged (%s); removing it to rebuild", path, problem)
            self._discard(path)
            return None
        return CacheEntry(key=key, path=path, manifest=manifest)

    def get_or_build(
        self,
        key: str,
        build: Callable[[Path], Mapping[str, Any]],
        describe: Mapping[str, Any] | None = None,
        after_commit: Callable[[CacheEntry], Mapping[str, Any]] | None = None,
    ) -> CacheEntry:
        """The entry for ``key``, building it with ``build(folder)`` if needed.

        ``build`` fills the folder and returns extra manifest fields. If it raises, nothing is
        left behind. Two processes asking for one key at once build it once; both get it.
        ``after_commit(entry)`` runs once the new entry is in place, still under the key's lock
        (validation with the session that will serve); the fields it returns are added to the
        manifest, and if it raises the entry is removed.
        """
        entry = self.lookup(key)
        if entry is not None:
            return entry
        self._ensure_dirs()
        from filelock import FileLock

        with FileLock(str(self.root / ".locks" / f"{key}.lock")):
            entry = self.lookup(key)  # another process may have finished it while we waited
            if entry is not None:
                return entry
            temp = self.root / ".tmp" / f"{key}-{uuid.uuid4().hex[:12]}"
            temp.mkdir(parents=True)
            try:
                started = time.perf_counter()
                extra = dict(build(temp))
                manifest: dict[str, Any] = {
                    "format_version": FORMAT_VERSION,
                    "key": key,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.perf_counter() - started, 3),
                    **dict(describe or {}),
                    **extra,
                }
                manifest["files"] = describe_files(temp)
                write_manifest(temp, manifest)
                os.rename(temp, self.root / key)
            except BaseException:
                self._discard(temp)
                raise
            entry = CacheEntry(key=key, path=self.root / key, manifest=manifest)
            if after_commit is not None:
                try:
                    extra = dict(after_commit(entry))
                except BaseException:
                    self._discard(entry.path)
                    raise
                if extra:
                    manifest = {**manifest, **extra}
                    write_manifest(entry.path, manifest)
                    entry = CacheEntry(key=key, path=entry.path, manifest=manifest)
        return entry

    def entries(self) -> Iterator[CacheEntry]:
        """Every entry with a readable manifest (not re-verified: listing must stay cheap)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                manifest = read_manifest(path)
                if manifest is not None:
                    yield CacheEntry(key=path.name, path=path, manifest=manifest)

    def remove(self, key: str) -> bool:
        path = self.root / key
        if not path.is_dir():
            return False
        self._discard(path)
        return True

    def clear(self, predicate: Callable[[CacheEntry], bool] | None = None) -> int:
        """Remove every entry (or those ``predicate`` selects) and stale temp folders; returns the count."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in list(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            manifest = read_manifest(path)
            if predicate is not None and (
                manifest is None or not predicate(CacheEntry(key=path.name, path=path, manifest=manifest))
            ):
                continue
            self._discard(path)
            removed += 1
        if predicate is None:
            shutil.rmtree(self.root / ".tmp", ignore_errors=True)
        return removed

    def _discard(self, path: Path) -> None:
        # Rename first so that a half-deleted folder is never mistaken for an entry.
        trash = self.root / ".tmp" / f"trash-{path.name}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)
            path = trash
        shutil.rmtree(path, ignore_errors=True)
