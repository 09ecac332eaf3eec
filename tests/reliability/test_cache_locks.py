"""Entry locks: clear never breaks a running export, dead exporters leave nothing stuck, waiters say why."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_reliability import build_files

import acceleron.cache as cache_module
from acceleron.cache import ExportCache
from acceleron.errors import CacheError

KEY = "0123456789abcdef0123456789abcdef"

HOLDER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def hold_lock(tmp_path: Path) -> Iterator[object]:
    """Hold a key's lock from another process, as an exporter does."""
    processes: list[subprocess.Popen[str]] = []

    def hold(cache: ExportCache, key: str) -> None:
        (cache.root / ".locks").mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cache.root / ".locks" / f"{key}.lock")],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "held"

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_a_waiter_says_what_it_waits_for_and_gives_up_naming_the_lock(
    tmp_path: Path, hold_lock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ExportCache(tmp_path)
    hold_lock(cache, KEY)
    monkeypatch.setattr(cache_module, "WAIT_NOTICE_SECONDS", 0.2)
    monkeypatch.setenv("ACCELERON_LOCK_TIMEOUT", "1")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="acceleron.cache"), pytest.raises(CacheError) as raised:
        cache.get_or_build(KEY, build_files)
    assert 0.9 < time.monotonic() - started < 10
    lock_file = str(tmp_path / ".locks" / f"{KEY}.lock")
    assert lock_file in str(raised.value) and "ACCELERON_LOCK_TIMEOUT" in str(raised.value)
    assert any(f"waiting for {lock_file}" in record.getMessage() for record in caplog.records)
    assert not (tmp_path / KEY).exists()


def test_a_waiter_names_the_exporter_it_waits_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ExportCache(tmp_path)
    monkeypatch.setattr(cache_module, "WAIT_NOTICE_SECONDS", 0.2)
    monkeypatch.setenv("ACCELERON_LOCK_TIMEOUT", "30")
    inside, release = threading.Event(), threading.Event()

    def slow_build(folder: Path) -> dict[str, str]:
        inside.set()
        release.wait(30)
        return build_files(folder)

    first = threading.Thread(
        target=cache.get_or_build, args=(KEY, slow_build), kwargs={"describe": {"source": {"id": "tiny/bert"}}}
    )
    first.start()
    assert inside.wait(30)
    threading.Timer(1.0, release.set).start()
    with caplog.at_level(logging.WARNING, logger="acceleron.cache"):
        entry = cache.get_or_build(KEY, build_files)  # waits, then reuses the first one's entry
    first.join()
    assert entry.path == tmp_path / KEY
    assert any(
        f"process {os.getpid()}" in r.getMessage() and "exporting tiny/bert" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_lock_timeout_is_a_cache_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ACCELERON_LOCK_TIMEOUT", value)
    with pytest.raises(CacheError, match="ACCELERON_LOCK_TIMEOUT must be a number of seconds"):
        ExportCache(tmp_path).get_or_build(KEY, build_files)


def test_clear_during_a_running_export_leaves_it_alone(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    other = "fedcba9876543210fedcba9876543210"
    cache.get_or_build(other, build_files)
    inside, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow_build(folder: Path) -> dict[str, str]:
        inside.set()
        release.wait(30)
        return build_files(folder)

    thread = threading.Thread(target=lambda: results.append(cache.get_or_build(KEY, slow_build)))
    thread.start()
    assert inside.wait(30)
    report = cache.clear()
    release.set()
    thread.join()
    assert report.removed == [other] and report.reclaimed == []  # its temp folder survived
    assert cache.lookup(KEY) is not None and results[0].path == tmp_path / KEY  # type: ignore[attr-defined]


def test_clear_skips_an_entry_whose_lock_is_held_and_says_so(
    tmp_path: Path, hold_lock, capsys: pytest.CaptureFixture[str]
) -> None:
    from acceleron.cli import main

    cache = ExportCache(tmp_path)
    cache.get_or_build(KEY, build_files)
    hold_lock(cache, KEY)
    assert main(["cache", "--dir", str(tmp_path), "clear", "--yes"]) == 0
    assert f"skipped {KEY}: another process is using it" in capsys.readouterr().out
    assert cache.lookup(KEY) is not None


def test_temp_folders_of_dead_exporters_are_reclaimed(tmp_path: Path, hold_lock) -> None:
    cache = ExportCache(tmp_path)
    cache.get_or_build("b" * 32, build_files)
    dead = tmp_path / ".tmp" / f"{KEY}-0a1b2c3d4e5f"  # its lock is free: its exporter is gone
    old = tmp_path / ".tmp" / f"{'c' * 32}-0a1b2c3d4e5f"  # its lock is held, but it is two days old
    live = tmp_path / ".tmp" / f"{'d' * 32}-0a1b2c3d4e5f"  # its lock is held and it is fresh: in use
    trash = tmp_path / ".tmp" / "trash-x-12345678"  # an interrupted removal
    for folder in (dead, old, live, trash):
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    hold_lock(cache, "c" * 32)
    hold_lock(cache, "d" * 32)
    report = cache.clear(lambda entry: False)
    assert sorted(report.reclaimed) == sorted([dead.name, old.name, trash.name])
    assert [p.name for p in (tmp_path / ".tmp").iterdir()] == [live.name]


def test_an_export_reclaims_the_temp_folders_its_key_left_behind(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    dead = tmp_path / ".tmp" / f"{KEY}-0a1b2c3d4e5f"
    dead.mkdir(parents=True)
    cache.get_or_build(KEY, build_files)
    assert list((tmp_path / ".tmp").iterdir()) == []
