"""SIGKILL during exports and concurrent exporters: no corrupt load, no stuck lock, one artifact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from acceleron import OptimizedModel
from acceleron.cache import ExportCache

TESTS = Path(__file__).parents[1]
EXPORTER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import acceleron.plugins as plugins
    from acceleron import OptimizedModel
    from conftest import fake_entry_point
    plugins._manager = plugins.PluginManager(env={{}}, entry_points=[fake_entry_point("alpha", "alpha")])
    backend = plugins.get_backend("alpha")
    print("ready", flush=True)
    model = OptimizedModel.from_pretrained({model!r}, accelerator=backend)
    print(json.dumps({{"artifact": str(model.artifact)}}), flush=True)
    """
)


def _exporter(model: Path, cache: Path, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "FAKE_EXPORT_LOG": str(log), "ACCELERON_CACHE_DIR": str(cache)}
    script = EXPORTER.format(tests=str(TESTS), model=str(model))
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _assert_sound(cache: ExportCache) -> None:
    """Every entry verifies in full, and every lock is free."""
    report = cache.verify()
    assert report.damaged == {} and report.busy == []
    for lock in (cache.root / ".locks").glob("*.lock"):
        FileLock(str(lock)).acquire(timeout=0).lock.release()


def test_sigkill_at_random_points_of_an_export_never_leaves_damage(
    tiny_classifier: Path, tmp_path: Path, use_plugins: Any
) -> None:
    cache = ExportCache(tmp_path / "cache")
    log = tmp_path / "exports.log"
    rng = random.Random(16)
    # The fake export takes ~1 s (FAKE_EXPORT_LOG) and loading, hashing and validating 1-3 s more: spread the
    # kills over the whole export, from loading the PyTorch model to validating the committed entry.
    delays = sorted(rng.uniform(0.0, 5.0) for _ in range(12))
    outcomes = []
    for delay in delays:
        process = _exporter(tiny_classifier, cache.root, log)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(60)
        temps = [p for p in (cache.root / ".tmp").glob("*")] if (cache.root / ".tmp").is_dir() else []
        outcomes.append("entry" if list(cache.entries()) else ("temp" if temps else "nothing"))
        _assert_sound(cache)
        report = cache.clear()
        assert report.busy == []
        assert not (cache.root / ".tmp").is_dir() or list((cache.root / ".tmp").iterdir()) == []  # reclaimed
    print("outcomes of the kills:", outcomes)
    assert outcomes.count("temp") >= 2  # the kills did land inside exports
    model = OptimizedModel.from_pretrained(
        tiny_classifier, accelerator=use_plugins(alpha="alpha").get("alpha"), export_cache=cache
    )
    assert model.artifact.parent.parent == cache.root
    _assert_sound(cache)


def test_two_processes_exporting_at_once_share_one_artifact(tiny_classifier: Path, tmp_path: Path) -> None:
    log = tmp_path / "exports.log"
    processes = [_exporter(tiny_classifier, tmp_path / "cache", log) for _ in range(2)]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr
    artifacts = {json.loads(stdout.strip().splitlines()[-1])["artifact"] for stdout, _ in results}
    assert len(artifacts) == 1
    assert len(log.read_text().split()) == 1  # exported once; the other process waited and reused it
    assert len(list(ExportCache(tmp_path / "cache").entries())) == 1


def test_four_threads_exporting_one_model_share_one_artifact(
    tiny_classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_plugins: Any
) -> None:
    log = tmp_path / "exports.log"
    monkeypatch.setenv("FAKE_EXPORT_LOG", str(log))
    backend = use_plugins(alpha="alpha").get("alpha")
    cache = ExportCache(tmp_path / "cache")
    artifacts: list[Path] = []
    errors: list[BaseException] = []

    def export() -> None:
        try:
            artifacts.append(
                OptimizedModel.from_pretrained(tiny_classifier, accelerator=backend, export_cache=cache).artifact
            )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=export) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(artifacts)) == 1 and len(artifacts) == 4
    assert len(log.read_text().split()) == 1
    _assert_sound(cache)
