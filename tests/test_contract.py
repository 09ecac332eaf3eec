"""The plugin contract's guarantees: one-way imports, work done once, cache keys right by construction."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_plugins.common import FakeBackend

import acceleron
from acceleron import OptimizedModel, pipeline
from acceleron.backend import Options, Session
from acceleron.cache import ExportCache
from acceleron.plugins import PluginManager
from acceleron.reference import TorchBackend
from acceleron.tasks import ExportPlan, TaskSpec

Install = Callable[..., PluginManager]
CORE = Path(acceleron.__file__).parent


def _runtime_imports(path: Path) -> set[str]:
    """Every ``acceleron.*`` module a file imports, at module or function level (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("acceleron"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("acceleron"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (CORE.parent / (candidate.replace(".", "/") + ".py")).is_file() or (
                    CORE.parent / candidate.replace(".", "/")
                ).is_dir()
                found.add(candidate if is_module else node.module)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_core_imports_form_no_cycle() -> None:
    graph = {_module_name(path): _runtime_imports(path) for path in CORE.rglob("*.py")}
    # The package itself only names its modules lazily; importing it pulls in nothing.
    assert graph["acceleron"] == set(), graph["acceleron"]
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


class CountingBackend(FakeBackend):
    """A backend that exports (the torch reference loads checkpoints as they are), counting what it is asked."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"availability": 0, "supported_tasks": 0, "export": 0, "load": 0}

    def availability(self) -> Any:
        self.calls["availability"] += 1
        return super().availability()

    def supported_tasks(self) -> frozenset[str]:
        self.calls["supported_tasks"] += 1
        return super().supported_tasks()

    def export(self, plan: ExportPlan, output_dir: Path, options: Options) -> Path:
        self.calls["export"] += 1
        return super().export(plan, output_dir, options)

    def load(self, artifact: Path, task: TaskSpec, options: Options) -> Any:
        self.calls["load"] += 1
        return super().load(artifact, task, options)

    def reset(self) -> dict[str, int]:
        calls, self.calls = self.calls, dict.fromkeys(self.calls, 0)
        return calls


def test_one_pipeline_resolves_checks_and_loads_once(tiny_classifier: Path, tmp_path: Path) -> None:
    backend = CountingBackend()
    cache = ExportCache(tmp_path / "cache")
    first = pipeline(
        "text-classification", str(tiny_classifier), accelerator=backend, model_kwargs={"export_cache": cache}
    )
    # A first export compiles once: the session validated after the commit is the one that serves.
    assert backend.reset() == {"availability": 1, "supported_tasks": 1, "export": 1, "load": 1}
    second = pipeline(
        "text-classification", str(tiny_classifier), accelerator=backend, model_kwargs={"export_cache": cache}
    )
    assert backend.reset() == {"availability": 1, "supported_tasks": 1, "export": 0, "load": 1}
    assert first.model.backend is backend and second.model.backend is backend
    assert first("great fun") == second("great fun")


def test_a_backend_instance_needs_no_registration(tiny_classifier: Path, tmp_path: Path) -> None:
    class Unregistered(TorchBackend):
        name = "unregistered"

    backend = Unregistered()
    model = OptimizedModel.from_pretrained(
        tiny_classifier, accelerator=backend, export=True, export_cache=tmp_path / "c"
    )
    assert model.backend is backend
    assert model.manifest["backend"] == "unregistered"


class DtypeBlindOptions(Options):
    """Options of a plugin that lists nothing as artifact-shaping: dtype still keys the cache."""


def test_dtype_keys_the_cache_even_when_the_plugin_lists_nothing(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path
) -> None:
    fake = use_plugins(alpha="alpha").get("alpha")
    assert "dtype" not in type(fake).__dict__ and fake.options_class is Options
    cache = ExportCache(tmp_path / "cache")
    f32 = OptimizedModel.from_pretrained(tiny_classifier, accelerator=fake, dtype="float32", export_cache=cache)
    bf16 = OptimizedModel.from_pretrained(tiny_classifier, accelerator=fake, dtype="bfloat16", export_cache=cache)
    assert f32.artifact.parent != bf16.artifact.parent
    assert len(list(cache.entries())) == 2
    assert [e.manifest["options"]["dtype"] for e in cache.entries()].count("bfloat16") == 1


def test_a_reloaded_artifact_runs_and_reports_the_options_it_was_made_with(
    use_plugins: Install, tiny_classifier: Path, tmp_path: Path
) -> None:
    fake = use_plugins(alpha="alpha").get("alpha")
    made = OptimizedModel.from_pretrained(tiny_classifier, accelerator=fake, dtype="bfloat16")
    saved = made.save_pretrained(tmp_path / "saved")
    reloaded = OptimizedModel.from_pretrained(saved, accelerator=fake, export=False)  # the caller's default: auto
    assert reloaded.options.compute_dtype == "bfloat16"
    assert reloaded.report()["runtime"]["dtype"] == "bfloat16"


def test_the_plugins_code_is_part_of_the_cache_key(tiny_classifier: Path) -> None:
    from acceleron.exporting import export_key_parts
    from acceleron.sources import resolve_source
    from acceleron.tasks import get_task

    backend = TorchBackend()
    parts = export_key_parts(
        resolve_source(tiny_classifier), get_task("text-classification"), backend, backend.parse_options({})
    )
    assert parts["versions"]["plugin"]["package"] == "acceleron"
    assert len(parts["versions"]["plugin"]["code"]) == 16
    assert parts["versions"]["acceleron"]["code"] == parts["versions"]["plugin"]["code"]


def test_a_session_is_typed_and_describes_itself(tiny_classifier: Path) -> None:
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator="torch", dtype="bfloat16")
    assert isinstance(model.session, Session)
    assert model.session.compute_dtype == "bfloat16" and model.session.input_dtype == "bfloat16"
    assert model.session.describe()["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
