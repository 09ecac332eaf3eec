"""The acceleron command, run as a user runs it: in a subprocess, with the test plugins installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "onnxruntime", "openvino", "ray")


def acceleron(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acceleron", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


def _plugins_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("acceleron_torchscript",)) and bool(
        __import__("importlib.metadata").metadata.entry_points(group="acceleron.backends", name="broken")
    )


needs_test_plugins = pytest.mark.skipif(
    not _plugins_installed(), reason="nox installs the test plugins under tests/plugins"
)


def test_import_acceleron_leaves_heavy_modules_out() -> None:
    code = f"import sys, acceleron; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_listing_backends_leaves_heavy_modules_out() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from acceleron.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['backends', '--json'])\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


@needs_test_plugins
def test_help_works_with_a_broken_plugin_installed() -> None:
    result = acceleron("--help")
    assert result.returncode == 0
    assert "backends" in result.stdout and "export" in result.stdout


@needs_test_plugins
def test_backends_json_reports_every_status() -> None:
    result = acceleron("backends", "--json")
    assert result.returncode == 0, result.stderr
    statuses = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert statuses["torch"]["status"] == "ok" and statuses["torch"]["builtin"] is True
    assert statuses["jit"]["status"] == "ok"
    assert statuses["jit"]["distribution"] == "acceleron-torchscript"
    assert statuses["ghost"]["status"] == "unavailable"
    assert "ghost-runtime" in statuses["ghost"]["reason"]
    assert statuses["broken"]["status"] == "load-failed"
    assert statuses["broken"]["distribution"] == "acceleron-broken" and statuses["broken"]["version"] == "0.0.1"
    assert "always fails to import" in statuses["broken"]["reason"]
    from acceleron.backend import distribution_version

    for name, distribution in (("ov", "acceleron-openvino"), ("ort", "acceleron-ort"), ("ipex", "acceleron-ipex")):
        expected = "ok" if distribution_version(distribution) else "not-installed"
        assert statuses[name]["status"] == expected, statuses[name]


@needs_test_plugins
def test_backends_table_is_readable() -> None:
    result = acceleron("backends")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == ["NAME", "PRIORITY", "STATUS", "DISTRIBUTION", "REASON"]


@needs_test_plugins
def test_strict_mode_makes_the_broken_plugin_an_error() -> None:
    result = acceleron("backends", env={"ACCELERON_STRICT_PLUGINS": "1"})
    assert result.returncode == 2
    assert "failed to load" in result.stderr


def test_export_then_run_then_cache(tiny_classifier: Path, tmp_path: Path) -> None:
    env = {"ACCELERON_CACHE_DIR": str(tmp_path / "cache"), "ACCELERON_PROGRESS": "1"}
    out = tmp_path / "exported"
    result = acceleron("export", str(tiny_classifier), "-o", str(out), "--accelerator", "torch", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "torch" and report["task"] == "text-classification"
    assert report["validation"]["passed"] is True
    assert "exporting" in result.stderr  # progress lines
    assert (out / "model.safetensors").is_file() and (out / "acceleron_manifest.json").is_file()

    again = acceleron("export", str(tiny_classifier), "-o", str(out), "--accelerator", "torch", env=env)
    assert again.returncode == 2 and "--force" in again.stderr

    run = acceleron("run", "--task", "sentiment-analysis", "--model", str(out), "-a", "torch", "great film", env=env)
    assert run.returncode == 0, run.stderr
    [[result_row]] = [json.loads(run.stdout)]
    assert result_row["label"] in {"NEGATIVE", "POSITIVE"}

    listing = acceleron("cache", "list", "--json", env=env)
    entries = json.loads(listing.stdout)
    assert [(e["backend"], e["task"], e["validation"]) for e in entries] == [("torch", "text-classification", "passed")]
    refused = acceleron("cache", "clear", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    cleared = acceleron("cache", "clear", "--yes", env=env)
    assert cleared.returncode == 0 and "removed 1" in cleared.stdout
    assert json.loads(acceleron("cache", "list", "--json", env=env).stdout) == []


def test_export_and_run_a_causal_lm(tmp_path: Path) -> None:
    """text-generation goes through export, the cache and run like the other tasks (task from config.json)."""
    from acceleron.testing import tiny_causal_lm

    source = tiny_causal_lm("llama", tmp_path / "tiny-llama")
    env = {"ACCELERON_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "exported"
    result = acceleron("export", str(source), "-o", str(out), "-a", "torch", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "text-generation" and report["validation"]["passed"] is True
    steps = {output["name"].split(".")[0] for output in report["validation"]["outputs"]}
    assert steps == {"prefill", "decode"}
    assert (out / "generation_config.json").is_file()

    run = acceleron(
        "run",
        "--task",
        "text-generation",
        "--model",
        str(out),
        "-a",
        "torch",
        "--arg",
        "max_new_tokens=4",
        "hi",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    [[row]] = json.loads(run.stdout)
    assert row["generated_text"].startswith("hi")
    listing = json.loads(acceleron("cache", "list", "--json", env=env).stdout)
    assert [(e["task"], e["validation"]) for e in listing] == [("text-generation", "passed")]


def test_errors_are_one_line_with_exit_code_2(tiny_classifier: Path) -> None:
    result = acceleron("run", "--task", "text-classification", "--model", str(tiny_classifier), "-a", "xyz", "hi")
    assert result.returncode == 2
    assert "acceleron: error: unknown accelerator 'xyz'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_inputs_is_refused(tiny_classifier: Path) -> None:
    result = acceleron("run", "--task", "text-classification", "--model", str(tiny_classifier), "-a", "torch")
    assert result.returncode == 2 and "no inputs" in result.stderr


def test_env_reports_versions() -> None:
    result = acceleron("env", "--json")
    info = json.loads(result.stdout)
    assert info["packages"]["torch"].startswith("2.")
    assert info["backends"]["torch"]["status"] == "ok"


def _install_metadata(site: Path, distribution: str, **entry_points: str) -> None:
    """Install ``distribution`` as metadata only, its entry points naming modules of tests/fake_plugins."""
    info = site / f"{distribution.replace('-', '_')}-6.6.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 6.6\n")
    lines = [f"{name} = fake_plugins.{module}" for name, module in entry_points.items()]
    (info / "entry_points.txt").write_text("[acceleron.backends]\n" + "\n".join(lines) + "\n")


def test_backends_survives_hanging_raising_and_squatting_plugins(tmp_path: Path) -> None:
    import time

    site = tmp_path / "site"
    _install_metadata(
        site,
        "acceleron-hostile",
        hanging_import="hanging_import",
        hanging_availability="hanging_availability",
        raising_availability="raising_availability",
        bad_priority="bad_priority",
    )
    _install_metadata(site, "acceleron-turbo", ort="impostor")
    tests = Path(__file__).parent
    path = os.pathsep.join([str(site), str(tests), os.environ.get("PYTHONPATH", "")])
    started = time.monotonic()
    result = acceleron("backends", "--json", env={"PYTHONPATH": path, "ACCELERON_PLUGIN_TIMEOUT": "1"})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60  # not forever: each hang costs one time limit
    assert "Traceback" not in result.stderr
    rows = json.loads(result.stdout)
    statuses = {(row["name"], row["distribution"]): row for row in rows}
    hostile = {name: statuses[(name, "acceleron-hostile")] for name in ("hanging_import", "hanging_availability")}
    assert all(row["status"] == "load-failed" for row in hostile.values())
    assert "importing fake_plugins.hanging_import timed out after 1 s" in hostile["hanging_import"]["reason"]
    assert "timed out after 1 s" in hostile["hanging_availability"]["reason"]
    assert "availability exploded" in statuses[("raising_availability", "acceleron-hostile")]["reason"]
    assert "priority must be an int" in statuses[("bad_priority", "acceleron-hostile")]["reason"]
    squatter = statuses[("ort", "acceleron-turbo")]
    assert squatter["status"] == "disabled" and "reserved to acceleron-ort" in squatter["reason"]
    assert statuses[("torch", "acceleron")]["status"] == "ok"
    table = acceleron("backends", env={"PYTHONPATH": path, "ACCELERON_PLUGIN_TIMEOUT": "1"})
    assert table.returncode == 0 and "reserved to acceleron-ort" in table.stdout
