"""The persistent cache of exported artifacts.

Layout under the cache root (``$ACCELERON_CACHE_DIR``, else ``$XDG_CACHE_HOME/acceleron/exports``,
else ``~/.cache/acceleron/exports``)::

    .acceleron-cache            the marker: acceleron made (or adopted) this folder
    <key>/                      one finished entry: artifact files, config, preprocessors
    <key>/acceleron_manifest.json   written last; lists every file with its size, sha256 and identity
    .tmp/<key>-<random>/        an entry being built (never read)
    .locks/<key>.lock           held while one process builds, verifies or removes <key>
    .locks/<key>.owner          who holds the lock (pid, host, what it builds), for waiters' messages
    .compiled/<backend>/        a backend's compiled blobs, when the root belongs to this user

An entry is built in ``.tmp`` and renamed into place, so readers never see half an entry. A
per-key file lock makes a second process wait for the first and then reuse its entry; a waiter
logs what it waits for after a few seconds and gives up after ``$ACCELERON_LOCK_TIMEOUT`` seconds
(default 1800) with a :class:`~acceleron.errors.CacheError` naming the lock file.

What is loaded is what was written. An entry is damaged, removed and rebuilt (never loaded) when its
manifest is missing or unreadable, names another key, lists a path that leaves the entry (``..``,
an absolute path), or when a file is missing, resized, unlisted, a symlink (or the entry itself
is one), or differs from its sha256. Hashing every file at every load would cost ~1 s per GB, so a
file is re-hashed only when its *identity* changed: the manifest records each file's device,
inode, size, modification time and status-change time (``ctime``). Any write, ``touch``, ``chmod``
or restored mtime changes the ctime (which no user can set), and a copy, a restore from a backup
or an image layer, or a move to another filesystem changes the inode or device: those entries,
"restored from elsewhere", are always fully re-verified. When the check passes and the entry
belongs to this user, the manifest is stamped with the new identity so the next load is cheap
again; an entry of another user is only read (never stamped, removed or written into) and is
re-hashed at each load in a new process until its owner runs ``acceleron cache verify``.
:meth:`ExportCache.verify` (``acceleron cache verify``) re-hashes everything on demand.

:meth:`ExportCache.clear` removes only what acceleron made: it refuses a non-empty root without
the marker, removes only folders whose manifest acceleron wrote (its ``key`` is the folder's
name), takes each entry's lock (an entry being built or loaded by another process is skipped and
reported), and reclaims temp folders of dead exporters (their key's lock is free, or they are
older than a day).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from acceleron.errors import CacheError

if TYPE_CHECKING:
    from filelock import BaseFileLock

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "ACCELERON_CACHE_DIR"
ENV_LOCK_TIMEOUT = "ACCELERON_LOCK_TIMEOUT"
MANIFEST_NAME = "acceleron_manifest.json"
MARKER_NAME = ".acceleron-cache"
FORMAT_VERSION = 1
#: Seconds a process waits for another's lock on an entry before giving up (``$ACCELERON_LOCK_TIMEOUT``).
DEFAULT_LOCK_TIMEOUT = 1800.0
#: Seconds of waiting before a waiter says what it waits for.
WAIT_NOTICE_SECONDS = 5.0
#: A temp folder this old belongs to a dead exporter even if its key's lock is held (by another).
STALE_TEMP_SECONDS = 24 * 3600
#: Folders of the root that acceleron makes besides entries (older versions kept OpenVINO blobs in the last).
_OWN_FOLDERS = frozenset({".tmp", ".locks", ".compiled", MARKER_NAME, "openvino-compiled"})
_KEY_PATTERN = re.compile(r"[0-9a-f]{32}")
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Where exports are cached unless told otherwise."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return user_cache_home() / "exports"


def user_cache_home() -> Path:
    """This user's own acceleron folder: ``$XDG_CACHE_HOME/acceleron``, else ``~/.cache/acceleron``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "acceleron"


def compiled_cache_dir(backend: str) -> Path:
    """A per-user folder for ``backend``'s compiled blobs (a runtime's own model cache).

    Under the export cache root (``.compiled/<backend>``) when the root belongs to this user (or is
    not made yet); else, as when a service reads a cache an image build wrote as root, under this
    user's own cache home: writing blobs into another user's folder fails or leaves files that
    user cannot replace, while the entries themselves are only read.
    """
    root = default_cache_dir()
    if not root.exists() or owned_by_current_user(root):
        return root / ".compiled" / backend
    return user_cache_home() / "compiled" / backend


def owned_by_current_user(path: Path) -> bool:
    """Whether ``path`` exists and belongs to the user running this process (not merely writable:
    root may write anywhere, but files it leaves in another user's folder break that user)."""
    try:
        return path.stat().st_uid == os.getuid()
    except (OSError, AttributeError):  # AttributeError: no getuid (Windows); nothing to compare
        return path.exists()


def lock_timeout() -> float:
    """Seconds to wait for another process's lock on an entry (``$ACCELERON_LOCK_TIMEOUT``)."""
    text = os.environ.get(ENV_LOCK_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise CacheError(f"{ENV_LOCK_TIMEOUT} must be a number of seconds >= 0, got {text!r}; unset it for 1800.")
    return value


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


def _identity(stat: os.stat_result) -> list[int]:
    # See the module docstring: a change of any of these means the file may not be what was hashed.
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _is_manifest_file(name: str) -> bool:
    # The manifest, or the temp file of an atomic manifest write that was interrupted.
    return name == MANIFEST_NAME or name.startswith(f".{MANIFEST_NAME}.")


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """(files, symlinks) under ``folder`` as posix paths relative to it; symlinks are not followed."""
    files: list[str] = []
    links: list[str] = []
    for current, dirs, names in os.walk(folder):
        base = Path(current)
        for name in list(dirs):
            if (base / name).is_symlink():
                links.append((base / name).relative_to(folder).as_posix())
                dirs.remove(name)
        for name in names:
            path = base / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                links.append(relative)
            elif not (base == folder and _is_manifest_file(name)):
                files.append(relative)
    return sorted(files), sorted(links)


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` (the manifest excepted) with size, mtime, identity and sha256.

    A symlink is refused (:class:`CacheError`): what a manifest describes must be inside its folder.
    """
    names, links = _walk(folder)
    if links:
        raise CacheError(
            f"{folder} holds symlinks ({', '.join(links)}); acceleron copies files, never links, into "
            "exports and saved models. Replace them with the files they point to."
        )
    files: dict[str, dict[str, Any]] = {}
    for relative in names:
        path = folder / relative
        digest = file_sha256(path)
        stat = path.stat()  # after hashing: a file changed while hashed then differs from its identity
        files[relative] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "identity": _identity(stat),
            "sha256": digest,
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


def confined_path(relative: Any) -> bool:
    """Whether ``relative`` is a relative path that stays inside its folder (no ``..``, not absolute)."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        return False
    path = PurePosixPath(relative)
    return not path.is_absolute() and all(part not in ("", ".", "..") for part in path.parts)


def check_files(folder: Path, manifest: Mapping[str, Any], *, full: bool = False) -> str:
    """Why the files in ``folder`` do not match ``manifest``; empty when they match.

    Files whose identity is unchanged are trusted without hashing, unless ``full``.
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "the manifest lists no files"
    outside = sorted(str(name) for name in files if not confined_path(name))
    if outside:
        return f"the manifest lists paths outside the entry: {', '.join(outside)}"
    artifact = manifest.get("artifact")
    if artifact is not None and (not confined_path(artifact) or artifact not in files):
        return f"the manifest's artifact {artifact!r} is not one of the entry's files"
    if folder.is_symlink():
        return "the entry is a symlink"
    present, links = _walk(folder)
    if links:
        return f"it holds symlinks: {', '.join(links)}"
    unlisted = sorted(set(present) - set(files))
    if unlisted:
        return f"it holds files its manifest does not list: {', '.join(unlisted)}"
    for relative, info in files.items():
        path = folder / relative
        if not isinstance(info, dict):
            return f"the manifest's record of {relative} is malformed"
        try:
            stat = path.stat()
        except OSError:
            return f"{relative} is missing"
        if stat.st_size != info.get("size"):
            return f"{relative} has {stat.st_size} bytes, the manifest says {info.get('size')}"
        if (full or _identity(stat) != info.get("identity")) and file_sha256(path) != info.get("sha256"):
            return f"{relative} does not match its sha256"
    return ""


def _identities_changed(folder: Path, manifest: Mapping[str, Any]) -> bool:
    files = manifest.get("files") or {}
    for relative, info in files.items():
        try:
            if _identity((folder / relative).stat()) != info.get("identity"):
                return True
        except OSError:
            return True
    return False


def _restamp(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the files' current identities after a full check passed (this user's entries only)."""
    files = {}
    for relative, info in manifest["files"].items():
        stat = (folder / relative).stat()
        files[relative] = {**info, "mtime_ns": stat.st_mtime_ns, "identity": _identity(stat)}
    stamped = {**manifest, "files": files}
    try:
        write_manifest(folder, stamped)
    except OSError as error:  # a read-only copy still loads; it is just hashed again next time
        logger.info("acceleron: cannot record the verified state of %s (%s)", folder, error)
        return manifest
    return stamped


@dataclass(frozen=True)
class CacheEntry:
    """A finished, verified cache entry."""

    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        files = self.manifest.get("files")
        if not isinstance(files, dict):
            return 0
        return sum(int(info.get("size", 0)) for info in files.values() if isinstance(info, dict))


@dataclass
class CacheReport:
    """What :meth:`ExportCache.clear` or :meth:`ExportCache.verify` did, folder names per outcome."""

    removed: list[str] = field(default_factory=list)  # clear: entries removed
    verified: list[str] = field(default_factory=list)  # verify: entries whose every file matched
    damaged: dict[str, str] = field(default_factory=dict)  # verify: entry -> why (removed, if ours)
    busy: list[str] = field(default_factory=list)  # another process held the entry's lock: left alone
    foreign: list[str] = field(default_factory=list)  # folders acceleron did not make: left alone
    kept: list[str] = field(default_factory=list)  # another user's entries: left alone
    reclaimed: list[str] = field(default_factory=list)  # temp folders of dead exporters, removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "verified": self.verified,
            "damaged": self.damaged,
            "busy": self.busy,
            "foreign": self.foreign,
            "kept": self.kept,
            "reclaimed": self.reclaimed,
        }


class ExportCache:
    """A folder of exported artifacts, keyed by :func:`cache_key`."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"ExportCache({str(self.root)!r})"

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    def _ensure_dirs(self) -> None:
        try:
            fresh = not self.root.is_dir() or not any(self.root.iterdir())
            for sub in (self.root, self.root / ".tmp", self.root / ".locks"):
                sub.mkdir(parents=True, exist_ok=True)
            # Adopt a cache made by an older acceleron (only its own folders), never someone's folder.
            if not self.marker.exists() and (fresh or not self._unknown_folders()):
                self.marker.write_text(
                    "This folder is an acceleron export cache; `acceleron cache clear` may empty it.\n",
                    encoding="utf-8",
                )
        except OSError as error:
            raise CacheError(
                f"cannot create the export cache at {self.root}: {error}. "
                f"Point {ENV_CACHE_DIR} (or cache_dir=...) at a writable folder."
            ) from error

    def _is_entry(self, path: Path) -> bool:
        """Whether acceleron made the folder ``path`` of the root: its manifest names it, or, in a
        marked root, it is named like a key (an entry whose manifest got damaged)."""
        if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
            return False
        manifest = read_manifest(path)
        if manifest is not None and manifest.get("key") == path.name and "format_version" in manifest:
            return True
        return manifest is None and bool(_KEY_PATTERN.fullmatch(path.name)) and self.marker.is_file()

    def _unknown_folders(self) -> list[str]:
        return sorted(
            path.name for path in self.root.iterdir() if path.name not in _OWN_FOLDERS and not self._is_entry(path)
        )

    # ---- locks ----

    def _lock(self, key: str) -> BaseFileLock:
        from filelock import FileLock

        # thread_local=False: a lock taken by one thread may be checked by another (clear, verify).
        return FileLock(str(self.root / ".locks" / f"{key}.lock"), thread_local=False)

    @contextlib.contextmanager
    def _locked(self, key: str, doing: str) -> Iterator[None]:
        """Hold ``key``'s lock, waiting for another process at most ``lock_timeout()`` seconds."""
        from filelock import Timeout

        lock = self._lock(key)
        limit = lock_timeout()
        try:
            lock.acquire(timeout=min(WAIT_NOTICE_SECONDS, limit))
        except Timeout:
            logger.warning(
                "acceleron: waiting for %s: %s; giving up after %.0f s (%s=...)",
                lock.lock_file,
                self._holder(key),
                limit,
                ENV_LOCK_TIMEOUT,
            )
            try:
                lock.acquire(timeout=max(0.0, limit - WAIT_NOTICE_SECONDS))
            except Timeout:
                raise CacheError(
                    f"gave up after {limit:.0f} s waiting for the lock {lock.lock_file} ({self._holder(key)}). "
                    "If that process is stuck, stop it (its lock is released when it ends); if it is "
                    f"just slow, raise {ENV_LOCK_TIMEOUT} (seconds)."
                ) from None
        owner = self.root / ".locks" / f"{key}.owner"
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "doing": doing, "since": time.time()}
        try:
            with contextlib.suppress(OSError):
                owner.write_text(json.dumps(holder), encoding="utf-8")
            yield
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()
            lock.release()

    def _holder(self, key: str) -> str:
        try:
            info = json.loads((self.root / ".locks" / f"{key}.owner").read_text(encoding="utf-8"))
            since = time.strftime("%H:%M:%S", time.localtime(float(info["since"])))
            return f"process {info['pid']} on {info['host']} is {info['doing']} since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"another process holds cache entry {key}"

    @contextlib.contextmanager
    def _try_locked(self, key: str) -> Iterator[bool]:
        """Hold ``key``'s lock if it is free now (yields True), else yield False at once."""
        from filelock import Timeout

        lock = self._lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        except OSError:  # no lock folder, or not ours to write: nobody can be building there either
            yield True
            return
        try:
            yield True
        finally:
            lock.release()

    # ---- reading ----

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``; a damaged entry is removed and None returned.

        A damaged entry of another user cannot be removed: that is a :class:`CacheError`.
        """
        return self._verified(key, full=False)

    def _verified(self, key: str, *, full: bool) -> CacheEntry | None:
        path = self.root / key
        if not path.is_dir() and not path.is_symlink():
            return None
        manifest = read_manifest(path)
        restored = False
        if manifest is None:
            problem = "its manifest is missing or unreadable"
        elif manifest.get("key", key) != key:
            problem = f"its manifest belongs to entry {manifest.get('key')!r}"
        else:
            restored = _identities_changed(path, manifest)
            problem = check_files(path, manifest, full=full)
        if manifest is None or problem:
            self._drop_damaged(path, problem)
            return None
        if restored and owned_by_current_user(path) and not path.is_symlink():
            manifest = _restamp(path, manifest)
        return CacheEntry(key=key, path=path, manifest=manifest)

    def _drop_damaged(self, path: Path, problem: str) -> None:
        if path.is_symlink() or owned_by_current_user(path):
            logger.warning("acceleron: cache entry %s is damaged (%s); removing it to rebuild", path, problem)
            self._discard(path)
            return
        raise CacheError(
            f"cache entry {path} is damaged ({problem}) and belongs to another user, so it is neither loaded "
            f"nor removed. Ask its owner to run `acceleron cache verify`, or point {ENV_CACHE_DIR} at a "
            "folder of your own."
        )

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
        what = (describe or {}).get("source")
        doing = f"exporting {what.get('id') if isinstance(what, dict) else key}"
        with self._locked(key, doing):
            entry = self.lookup(key)  # another process may have finished it while we waited
            if entry is not None:
                return entry
            # Holding the key's lock, every temp folder of this key is a dead exporter's.
            for stale in (self.root / ".tmp").glob(f"{key}-*"):
                self._remove_tree(stale)
            temp = self.root / ".tmp" / f"{key}-{uuid.uuid4().hex[:12]}"
            temp.mkdir(parents=True)
            try:
                started = time.perf_counter()
                extra = dict(build(temp))
                manifest: dict[str, Any] = {
                    "format_version": FORMAT_VERSION,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.perf_counter() - started, 3),
                    **dict(describe or {}),
                    **extra,
                    "key": key,
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
        """Every entry acceleron wrote, with a readable manifest (not re-verified: listing must stay cheap)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            manifest = read_manifest(path) if self._is_entry(path) else None
            if manifest is not None:
                yield CacheEntry(key=path.name, path=path, manifest=manifest)

    # ---- maintenance ----

    def remove(self, key: str) -> bool:
        path = self.root / key
        if not path.is_dir():
            return False
        self._discard(path)
        return True

    def verify(self) -> CacheReport:
        """Re-hash every file of every entry; remove the damaged ones (this user's), stamp the good ones.

        Entries another process holds the lock of are skipped (``busy``); a damaged entry of another
        user is reported (``damaged``) and left in place (``kept``).
        """
        report = CacheReport()
        if not self.root.is_dir():
            return report
        for path in sorted(self.root.iterdir()):
            if path.name in _OWN_FOLDERS:
                continue
            if not self._is_entry(path):
                if not path.name.startswith("."):
                    report.foreign.append(path.name)
                continue
            with self._try_locked(path.name) as free:
                if not free:
                    report.busy.append(path.name)
                    continue
                manifest = read_manifest(path)
                if manifest is None:
                    problem = "its manifest is missing or unreadable"
                else:
                    problem = check_files(path, manifest, full=True)
                if not problem:
                    if manifest is not None and owned_by_current_user(path):
                        _restamp(path, manifest)
                    report.verified.append(path.name)
                    continue
                report.damaged[path.name] = problem
                try:
                    self._drop_damaged(path, problem)
                except CacheError:
                    report.kept.append(path.name)
        report.reclaimed = self._reclaim_temps()
        return report

    def clear(self, predicate: Callable[[CacheEntry], bool] | None = None) -> CacheReport:
        """Remove every entry acceleron made (or those ``predicate`` selects) and dead exporters' temp folders.

        Refuses (:class:`CacheError`) a non-empty root without the marker file: it may be a folder of
        the user's own that ``ACCELERON_CACHE_DIR`` points at. Entries whose lock another process
        holds (being built or loaded) are skipped and listed in ``busy``; folders acceleron did not
        make are listed in ``foreign`` and left alone.
        """
        report = CacheReport()
        if not self.root.is_dir():
            return report
        if not self.marker.is_file() and any(self.root.iterdir()):
            raise CacheError(
                f"{self.root} has no {MARKER_NAME} file, so acceleron did not create it as its export cache "
                "(it may hold your own files): nothing was removed. Check "
                f"{ENV_CACHE_DIR}; if the folder really is an acceleron cache, create the marker "
                f"(touch {self.marker}) and clear again."
            )
        for path in sorted(self.root.iterdir()):
            if path.name in _OWN_FOLDERS:
                continue
            if not self._is_entry(path):
                if not path.name.startswith("."):
                    report.foreign.append(path.name)
                continue
            manifest = read_manifest(path)
            if predicate is not None and (
                manifest is None or not predicate(CacheEntry(key=path.name, path=path, manifest=manifest))
            ):
                continue
            with self._try_locked(path.name) as free:
                if not free:
                    report.busy.append(path.name)
                elif not owned_by_current_user(path):
                    report.kept.append(path.name)
                else:
                    self._discard(path)
                    report.removed.append(path.name)
        if predicate is None:
            for folder in (self.root / ".compiled", self.root / "openvino-compiled"):
                self._remove_tree(folder)
        report.reclaimed = self._reclaim_temps()
        return report

    def _reclaim_temps(self) -> list[str]:
        """Remove temp folders whose exporter is dead: its key's lock is free, or it is over a day old."""
        reclaimed: list[str] = []
        temp_root = self.root / ".tmp"
        if not temp_root.is_dir():
            return reclaimed
        for path in sorted(temp_root.iterdir()):
            key = path.name.rsplit("-", 1)[0]
            if path.name.startswith("trash-"):  # a removal that was interrupted: nobody reads it
                self._remove_tree(path)
                reclaimed.append(path.name)
                continue
            try:
                old = time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS
            except OSError:
                continue
            with self._try_locked(key) as free:
                if free or old:
                    self._remove_tree(path)
                    reclaimed.append(path.name)
        return reclaimed

    def _remove_tree(self, path: Path) -> None:
        if path.is_symlink() or path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)

    def _discard(self, path: Path) -> None:
        if path.is_symlink():  # remove the link, never what it points to
            with contextlib.suppress(OSError):
                path.unlink()
            return
        # Rename first so that a half-deleted folder is never mistaken for an entry.
        trash = self.root / ".tmp" / f"trash-{path.name}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)
            path = trash
        shutil.rmtree(path, ignore_errors=True)
