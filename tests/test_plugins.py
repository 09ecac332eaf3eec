"""Plugin discovery, isolation, environment switches and backend selection."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from acceleron import plugins
from acceleron.errors import (
    BackendNotInstalledError,
    BackendUnavailableError,
    PluginLoadError,
    TaskNotSupportedError,
    UnknownBackendError,
)
from acceleron.selection import select_backend
from acceleron.status import BackendStatus, backend_statuses

Install = Callable[..., plugins.PluginManager]


def test_discovery_reads_names_without_importing(use_plugins: Install) -> None:
    manager = use_plugins(alpha="alpha", beta="beta")
    assert {"alpha", "beta", "torch"} <= set(manager.records())
    assert "fake_plugins.alpha" not in sys.modules
    manager.load("alpha")
    assert "fake_plugins.alpha" in sys.modules
    assert "fake_plugins.beta" not in sys.modules


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(use_plugins: Install) -> None:
    manager = use_plugins(broken="broken", alpha="alpha")
    statuses = {s.name: s for s in backend_statuses(manager)}
    assert statuses["broken"].status == "load-failed"
    assert "imaginary_runtime" in statuses["broken"].reason
    assert statuses["alpha"].status == "ok"
    assert select_backend(manager, "text-classification").name == "alpha"


def test_asking_for_a_broken_plugin_names_its_error(use_plugins: Install) -> None:
    manager = use_plugins(broken="broken")
    with pytest.raises(PluginLoadError, match="'broken'.*failed to load.*imaginary_runtime"):
        manager.get("broken")


def test_strict_mode_reraises_plugin_errors(use_plugins: Install) -> None:
    manager = use_plugins(env={plugins.ENV_STRICT: "1"}, broken="broken")
    with pytest.raises(PluginLoadError, match="imaginary_runtime"):
        backend_statuses(manager)


def test_a_misspelt_hook_is_caught(use_plugins: Install) -> None:
    manager = use_plugins(misspelt="misspelt")
    status = {s.name: s for s in backend_statuses(manager)}["misspelt"]
    assert status.status == "load-failed"
    assert "acceleron_backend" in status.reason


def test_entry_point_name_must_be_the_backend_name(use_plugins: Install) -> None:
    manager = use_plugins(misnamed="misnamed")
    status = {s.name: s for s in backend_statuses(manager)}["misnamed"]
    assert status.status == "load-failed"
    assert "named 'alpha' but its entry point is 'misnamed'" in status.reason


def test_autoload_can_be_disabled(use_plugins: Install) -> None:
    manager = use_plugins(env={plugins.ENV_DISABLE_AUTOLOAD: "1"}, alpha="alpha")
    statuses = {s.name: s.status for s in backend_statuses(manager)}
    assert statuses["alpha"] == "disabled"
    assert statuses["torch"] == "ok"  # built-ins stay
    assert "fake_plugins.alpha" not in sys.modules


def test_allow_list_keeps_only_named_plugins(use_plugins: Install) -> None:
    manager = use_plugins(env={plugins.ENV_ALLOW: "beta"}, alpha="alpha", beta="beta")
    assert select_backend(manager, "text-classification").name == "beta"
    assert {s.name: s.status for s in backend_statuses(manager)}["alpha"] == "disabled"


def test_block_list_removes_a_plugin(use_plugins: Install) -> None:
    manager = use_plugins(env={plugins.ENV_BLOCK: "beta"}, alpha="alpha", beta="beta")
    assert select_backend(manager, "text-classification").name == "alpha"
    with pytest.raises(BackendUnavailableError, match="disabled by ACCELERON_DISABLE_PLUGINS"):
        manager.get("beta")


def test_highest_priority_available_backend_wins(use_plugins: Install) -> None:
    # gamma has the highest priority but is unavailable; beta (80) beats alpha (50).
    manager = use_plugins(alpha="alpha", beta="beta", gamma="gamma")
    assert select_backend(manager, "text-classification").name == "beta"


def test_user_priority_order_overrides_priorities(use_plugins: Install) -> None:
    manager = use_plugins(env={plugins.ENV_PRIORITY: "alpha-alias,beta"}, alpha="alpha", beta="beta")
    assert select_backend(manager, "text-classification").name == "alpha"


def test_selection_is_logged(use_plugins: Install, caplog: pytest.LogCaptureFixture) -> None:
    manager = use_plugins(alpha="alpha", gamma="gamma")
    with caplog.at_level(logging.DEBUG, logger="acceleron.selection"):
        select_backend(manager, "text-classification")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debugs = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("accelerator 'alpha'" in m for m in infos)
    assert any("'gamma' passed over" in m and "unavailable" in m for m in debugs)
    assert any("'torch' passed over" in m and "by name" in m for m in debugs)


def test_a_selection_plugin_overrides_the_default_policy(use_plugins: Install) -> None:
    from fake_plugins.chooser import LowestPriorityPolicy

    manager = use_plugins(alpha="alpha", beta="beta")
    manager.register(LowestPriorityPolicy())
    assert select_backend(manager, "text-classification").name == "alpha"


def test_the_torch_reference_is_never_auto_selected(use_plugins: Install) -> None:
    manager = use_plugins()
    with pytest.raises(BackendNotInstalledError):
        select_backend(manager, "text-classification")
    assert manager.get("torch").name == "torch"


def test_nothing_installed_lists_every_install_command(use_plugins: Install) -> None:
    manager = use_plugins()
    with pytest.raises(ImportError) as raised:
        select_backend(manager, "text-classification")
    message = str(raised.value)
    for extra in ("openvino", "ort", "ipex"):
        assert f"pip install 'acceleron[{extra}]'" in message


def test_nothing_installed_also_mentions_broken_plugins(use_plugins: Install) -> None:
    manager = use_plugins(broken="broken")
    with pytest.raises(BackendNotInstalledError, match="failed to load:\n  broken"):
        select_backend(manager, "text-classification")


def test_no_backend_supporting_the_task_says_who_lacks_what(use_plugins: Install) -> None:
    manager = use_plugins(alpha="alpha", beta="beta")
    expected = "beta does not support fill-mask (it supports: feature-extraction, text-classification); alpha does"
    with pytest.raises(TaskNotSupportedError, match=re.escape(expected)):
        select_backend(manager, "fill-mask")


def test_only_unavailable_backends_say_why(use_plugins: Install) -> None:
    manager = use_plugins(gamma="gamma")
    with pytest.raises(BackendUnavailableError, match="gamma runtime missing"):
        select_backend(manager, "text-classification")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("ort", "ort"),
        ("ONNXRuntime", "ort"),
        ("OpenVINO", "ov"),
        ("ov", "ov"),
        ("IPEX", "ipex"),
        ("Beta-Alias", "beta"),
    ],
)
def test_names_and_aliases_resolve_case_insensitively(use_plugins: Install, given: str, canonical: str) -> None:
    assert use_plugins(beta="beta").resolve_name(given) == canonical


def test_unknown_accelerator_lists_known_and_installed(use_plugins: Install) -> None:
    manager = use_plugins(alpha="alpha")
    with pytest.raises(UnknownBackendError) as raised:
        manager.resolve_name("xyz")
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert "unknown accelerator 'xyz'" in message
    assert "known: alpha, ipex, ort, ov, torch" in message
    assert "installed: alpha, torch" in message
    assert "pip install 'acceleron[ort]'" in message


def test_a_known_but_missing_backend_says_how_to_install(use_plugins: Install) -> None:
    manager = use_plugins()
    with pytest.raises(BackendNotInstalledError, match=r"'ov' is not installed.*pip install 'acceleron\[openvino\]'"):
        manager.get("openvino")


def test_an_unavailable_backend_asked_by_name_says_why(use_plugins: Install) -> None:
    manager = use_plugins(gamma="gamma")
    with pytest.raises(BackendUnavailableError, match="cannot run here: gamma runtime missing"):
        manager.get("gamma")


def test_accelerator_must_be_a_string(use_plugins: Install) -> None:
    with pytest.raises(TypeError, match="accelerator must be a string"):
        use_plugins().resolve_name(1)  # type: ignore[arg-type]


def test_statuses_list_not_installed_first_party_backends(use_plugins: Install) -> None:
    statuses = {s.name: s for s in backend_statuses(use_plugins(alpha="alpha"))}
    assert statuses["ort"].status == "not-installed"
    assert statuses["ort"].install_hint == "pip install 'acceleron[ort]'"
    assert statuses["torch"].builtin and not statuses["torch"].auto_select


# ---- broken third-party plugins are contained --------------------------------------------------
#
# One bad plugin (raising, hanging, lying about its priority, squatting a first-party name) must
# cost only itself: auto-selection picks among the others, and `acceleron backends` reports it.


def _status(manager: plugins.PluginManager, name: str) -> BackendStatus:
    return {s.name: s for s in backend_statuses(manager)}[name]


@pytest.mark.parametrize(
    ("module", "error"),
    [
        ("raising_availability", "availability() failed: RuntimeError: availability exploded"),
        ("raising_tasks", "supported_tasks() failed: KeyError: 'tasks exploded'"),
    ],
)
def test_a_plugin_call_that_raises_is_contained_like_a_failed_import(
    use_plugins: Install, module: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = use_plugins(**{module: module}, alpha="alpha")
    with caplog.at_level(logging.WARNING, logger="acceleron.plugins"):
        assert select_backend(manager, "text-classification").name == "alpha"
    assert any(module in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    status = _status(manager, module)
    assert status.status == "load-failed"
    assert status.reason == error
    with pytest.raises(PluginLoadError, match=re.escape(error)):
        manager.get(module)  # asked for by name: a clear error, not the plugin's raw one


def test_a_raising_plugin_call_is_an_error_in_strict_mode(use_plugins: Install) -> None:
    manager = use_plugins(env={plugins.ENV_STRICT: "1"}, raising_availability="raising_availability", alpha="alpha")
    with pytest.raises(PluginLoadError, match="availability exploded"):
        select_backend(manager, "text-classification")


def test_a_plugin_whose_selection_hook_raises_is_skipped(use_plugins: Install) -> None:
    manager = use_plugins(raising_chooser="raising_chooser", alpha="alpha")
    assert select_backend(manager, "text-classification").name == "alpha"  # the default policy decided
    status = _status(manager, "raising_chooser")
    assert status.status == "load-failed"
    assert "acceleron_select_backend hook failed: ValueError: selection for text-classification exploded" in (
        status.reason
    )
    assert select_backend(manager, "feature-extraction").name == "alpha"  # its hook is gone for good


@pytest.mark.parametrize("policy", ["RaisingPolicy", "NonCandidatePolicy"])
def test_a_broken_selection_policy_is_unregistered(
    use_plugins: Install, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    from fake_plugins import raising_chooser

    manager = use_plugins(alpha="alpha", beta="beta")
    manager.register(getattr(raising_chooser, policy)())
    with caplog.at_level(logging.WARNING, logger="acceleron.plugins"):
        assert select_backend(manager, "text-classification").name == "beta"
    assert any("selection plugin" in r.getMessage() and "unregistered" in r.getMessage() for r in caplog.records)


def test_a_non_int_priority_is_a_load_failure_not_a_broken_listing(use_plugins: Install) -> None:
    manager = use_plugins(bad_priority="bad_priority", alpha="alpha")
    status = _status(manager, "bad_priority")
    assert status.status == "load-failed"
    assert "priority must be an int (higher wins), got 'high'" in status.reason
    assert select_backend(manager, "text-classification").name == "alpha"


def test_a_hanging_availability_times_out(use_plugins: Install) -> None:
    import time

    manager = use_plugins(env={plugins.ENV_TIMEOUT: "0.5"}, hanging_availability="hanging_availability", alpha="alpha")
    started = time.monotonic()
    assert select_backend(manager, "text-classification").name == "alpha"
    statuses = {s.name: s for s in backend_statuses(manager)}
    assert time.monotonic() - started < 5
    assert statuses["hanging_availability"].status == "load-failed"
    assert "availability() of plugin 'hanging_availability' timed out after 0.5 s" in (
        statuses["hanging_availability"].reason
    )
    sys.modules["fake_plugins.hanging_availability"].RELEASE.set()  # let the abandoned thread end


def test_a_hanging_import_times_out(use_plugins: Install) -> None:
    import time

    manager = use_plugins(env={plugins.ENV_TIMEOUT: "0.5"}, hanging_import="hanging_import", alpha="alpha")
    started = time.monotonic()
    assert select_backend(manager, "text-classification").name == "alpha"
    status = _status(manager, "hanging_import")
    assert time.monotonic() - started < 5
    assert status.status == "load-failed"
    assert "importing fake_plugins.hanging_import timed out after 0.5 s" in status.reason


@pytest.mark.parametrize(("value", "seconds"), [(None, 10.0), ("2.5", 2.5), ("0", 0.0), ("soon", 10.0), ("-1", 10.0)])
def test_the_plugin_time_limit_comes_from_the_environment(value: str | None, seconds: float) -> None:
    env = {} if value is None else {plugins.ENV_TIMEOUT: value}
    assert plugins.PluginManager(env=env, entry_points=[]).timeout == seconds


def _distribution(root: Path, name: str, **entry_points: str) -> list[importlib.metadata.EntryPoint]:
    """The entry points of a distribution ``name`` installed (as metadata) under ``root``."""
    info = root / name / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"{entry} = fake_plugins.{module}" for entry, module in entry_points.items()]
    (info / "entry_points.txt").write_text("[acceleron.backends]\n" + "\n".join(lines) + "\n")
    [distribution] = importlib.metadata.distributions(path=[str(root / name)])
    return list(distribution.entry_points)


def _manager(monkeypatch: pytest.MonkeyPatch, *entry_points: importlib.metadata.EntryPoint) -> plugins.PluginManager:
    for module in ("genuine_ort", "impostor", "alpha"):
        sys.modules.pop(f"fake_plugins.{module}", None)
    manager = plugins.PluginManager(env={}, entry_points=list(entry_points))
    monkeypatch.setattr(plugins, "_manager", manager)
    return manager


def test_a_first_party_name_from_another_distribution_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    genuine = _distribution(tmp_path, "acceleron-ort", ort="genuine_ort")
    impostor = _distribution(tmp_path, "acceleron-turbo", ort="impostor", alpha="alpha")
    for order in ([*impostor, *genuine], [*genuine, *impostor]):
        with caplog.at_level(logging.WARNING, logger="acceleron.plugins"):
            manager = _manager(monkeypatch, *order)
            assert type(manager.get("ort")).__module__ == "fake_plugins.genuine_ort"
        assert "reserved to acceleron-ort; acceleron-turbo may not claim it" in caplog.text
        assert "fake_plugins.impostor" not in sys.modules
        rows = [s for s in backend_statuses(manager) if s.name == "ort"]
        assert [(s.status, s.distribution) for s in rows] == [("ok", "acceleron-ort"), ("disabled", "acceleron-turbo")]
        assert manager.get("alpha").name == "alpha"  # the rest of the distribution is not punished


def test_a_first_party_name_squatted_while_the_real_one_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = _manager(monkeypatch, *_distribution(tmp_path, "acceleron_turbo", ort="impostor", torch="impostor"))
    with pytest.raises(BackendNotInstalledError, match=re.escape("pip install 'acceleron[ort]'")):
        manager.get("ort")
    assert type(manager.get("torch")).__module__ == "acceleron.reference"
    statuses = sorted((s.name, s.status, s.distribution) for s in backend_statuses(manager))
    assert ("ort", "not-installed", "acceleron-ort") in statuses
    assert ("ort", "disabled", "acceleron_turbo") in statuses
    assert ("torch", "disabled", "acceleron_turbo") in statuses


def test_the_real_distribution_may_spell_its_name_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _manager(monkeypatch, *_distribution(tmp_path, "Acceleron_ORT", ort="genuine_ort"))
    assert manager.get("ort").name == "ort"
