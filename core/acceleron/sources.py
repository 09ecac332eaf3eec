"""Where a model comes from: a local folder or a hub snapshot, and what identifies its content.

:func:`resolve_source` finds the folder (honouring ``HF_HUB_OFFLINE``); :func:`source_fingerprint`
is the part of the export cache key that changes when the weights or the config do.

A model folder from elsewhere must not make acceleron read files outside it into the cache, a saved
model or a hub upload (a ``tokenizer.json`` linked to ``~/.ssh/id_rsa`` would be pushed with the
model). So a symlink is followed only when it stays inside the model folder, or inside the blob
store of the hub cache the folder is a snapshot of (``<repo>/snapshots/<rev>/x -> ../../blobs/<sha>``,
how every hub download is laid out); the file is then copied, never the link. A preprocessor file
linked elsewhere is skipped with a warning; an artifact file linked elsewhere, and a ``subfolder`` or
``file_name`` leading out of the folder, are refused with :class:`~acceleron.errors.UnsafePathError`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from acceleron.cache import MANIFEST_NAME, cache_key, confined_path, file_sha256
from acceleron.errors import ArtifactNotFoundError, UnsafePathError

logger = logging.getLogger(__name__)

#: Top-level files of a model folder that describe the model or its preprocessing (not weights).
_PREPROCESSOR_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")


@dataclass(frozen=True)
class ModelSource:
    """A model folder on disk, and the id the user named it by."""

    path: Path
    model_id: str
    revision: str | None
    is_local: bool
    file_name: str | None = None

    def __str__(self) -> str:
        return self.model_id


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_source(
    model_id_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    subfolder: str = "",
) -> ModelSource:
    """Find the model folder: a local path, or a hub snapshot (honouring HF_HUB_OFFLINE)."""
    if not isinstance(model_id_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a model id or a folder path, got {type(model_id_or_path).__name__}")
    text = os.fspath(model_id_or_path)
    if not text.strip():
        raise ValueError("model must not be empty: give a model id or a folder path")
    path = Path(text).expanduser()
    file_name = None
    if subfolder and not confined_path(Path(subfolder).as_posix()):
        raise UnsafePathError(
            f"subfolder={subfolder!r} leads outside the model folder; give a folder inside it, such as 'onnx'."
        )
    if path.is_file():
        path, file_name = path.parent, path.name
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if subfolder and not stays_inside(folder, path):
            raise UnsafePathError(
                f"subfolder={subfolder!r} of {path} is a symlink to {folder.resolve()}, outside the model folder; "
                "copy the files into the model folder instead."
            )
        if not folder.is_dir():
            raise ArtifactNotFoundError(f"{path} has no subfolder {subfolder!r}")
        return ModelSource(folder.resolve(), text, revision, True, file_name)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise ArtifactNotFoundError(f"no such model folder: {text}")
    from huggingface_hub import snapshot_download

    offline_only = bool(local_files_only) or offline()
    try:
        snapshot = snapshot_download(
            text,
            revision=revision,
            token=token,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=offline_only,
            ignore_patterns=[
                "*.h5",
                "*.msgpack",
                "*.ot",
                "flax_model*",
                "tf_model*",
                "rust_model*",
                "coreml/*",
            ],
        )
    except Exception as error:
        where = "in the local hub cache (offline mode)" if offline_only else "locally or on the hub"
        raise ArtifactNotFoundError(
            f"cannot find model {text!r} {where}: {type(error).__name__}: {error}. "
            "Check the id, or pass a local folder."
        ) from error
    folder = Path(snapshot) / subfolder if subfolder else Path(snapshot)
    return ModelSource(folder, text, Path(snapshot).name, False)


def stays_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (after following symlinks) is inside ``folder``, or inside the blob store of
    the hub cache ``folder`` is a snapshot of."""
    target = path.resolve()
    base = folder.resolve()
    roots = [base]
    for parent in (folder.absolute(), *folder.absolute().parents):
        if parent.parent.name == "snapshots":  # <repo>/snapshots/<rev>: hub files link to <repo>/blobs
            roots.append(parent.parent.parent.resolve() / "blobs")
            break
    return any(target == root or root in target.parents for root in roots)


def check_inside(path: Path, folder: Path, what: str) -> None:
    """Raise :class:`UnsafePathError` when ``path`` leads outside ``folder`` (see the module docstring)."""
    if not stays_inside(path, folder):
        raise UnsafePathError(
            f"{what} {path} leads to {path.resolve()}, outside {folder}; acceleron does not copy files from "
            "outside a model folder. Copy the file into the folder instead of linking it."
        )


def copy_preprocessor_files(source: Path, target: Path) -> list[str]:
    """Copy config, tokenizer and processor files (never weights) from ``source`` to ``target``.

    A file that is a symlink leading outside ``source`` is skipped with a warning (module docstring).
    """
    copied = []
    for path in sorted(source.iterdir()):
        if (
            path.is_file()
            and path.suffix in _PREPROCESSOR_SUFFIXES
            and path.name != MANIFEST_NAME
            and not (target / path.name).exists()
        ):
            if not stays_inside(path, source):
                logger.warning(
                    "acceleron: skipping %s: it links to %s, outside the model folder (copy the file in to keep it)",
                    path,
                    path.resolve(),
                )
                continue
            shutil.copy2(path, target / path.name)  # follows the link: the copy is a file
            copied.append(path.name)
    for relative in sentence_module_files(source):
        destination = target / relative
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, destination)
        copied.append(relative)
    return copied


def sentence_module_files(folder: Path) -> list[str]:
    """The configuration files of a sentence-transformers folder's modules (``1_Pooling/config.json``, ...).

    sentence-transformers lists its modules in ``modules.json``; each module other than the transformer
    keeps its settings in a subfolder. Those settings shape a sentence-embedding export (the pooling
    mode is part of the graph), so they are part of the source's fingerprint, and they travel with
    exports and saved models. Only ``*.json`` files directly inside a listed subfolder count (never
    weights); a path leading out of ``folder``, or a file linking out of it, is skipped. Relative
    POSIX paths, sorted; empty for a folder without ``modules.json``.
    """
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found: set[str] = set()
    for module in modules if isinstance(modules, list) else []:
        relative = module.get("path") if isinstance(module, dict) else None
        if not isinstance(relative, str) or not confined_path(relative):
            continue  # "" is the transformer at the folder's top level; others are refused when read
        subfolder = folder / relative
        if not subfolder.is_dir() or not stays_inside(subfolder, folder):
            continue
        for path in sorted(subfolder.iterdir()):
            if path.is_file() and path.suffix == ".json" and stays_inside(path, folder):
                found.add(f"{relative}/{path.name}")
    return sorted(found)


def source_fingerprint(source: ModelSource) -> str:
    """What identifies the source's content: a hub commit, or the hashes of the folder's top-level files
    and of its sentence-transformers module settings (:func:`sentence_module_files`)."""
    if not source.is_local:
        return f"hub:{source.model_id}@{source.revision}"
    entries = []
    for path in sorted(source.path.iterdir()):
        if path.is_file() and path.name != MANIFEST_NAME:
            entries.append(f"{path.name}:{_memo_sha256(path)}")
    # A sentence-transformers folder's pooling settings live in a subfolder (1_Pooling/config.json).
    entries += [f"{relative}:{_memo_sha256(source.path / relative)}" for relative in sentence_module_files(source.path)]
    return "sha256:" + cache_key({"files": entries})


_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _memo_sha256(path: Path) -> str:
    # Hashing weights costs ~0.1 s per 100 MB; remember digests per (path, size, mtime) in-process.
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        cached = _hash_memo.get(key)
    if cached is None:
        cached = file_sha256(path)
        with _hash_lock:
            _hash_memo[key] = cached
    return cached
