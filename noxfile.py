"""Every check the project runs, one place: ``./nox`` (or ``nox``) runs the default sessions.

Sessions:
  tests           core tests, no backend plugin installed (the test plugins under tests/plugins are)
  plugin-<name>   one backend plugin alone, in its own venv: its own tests
  all             every plugin together: the core tests again, then every plugin's tests
  reliability     tests/reliability: SIGKILLs during exports, cache damage, concurrency (tiny models)
  lint, types     ruff and mypy
  packaging       build every wheel; a fresh venv installs 'acceleron[<extra>]' from them
  ray             acceleron[ray]: bulk runs over tables, and Ray Data on a local two-CPU Ray (tiny models)
  demo, bench     the demo and the benchmark on real models (see README)
  bench-anchors   opt-in, not a default: the generation benchmark with llama.cpp and onnxruntime-genai next to ours
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
PLUGINS = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml"))
TEST_PLUGINS = sorted(str(p.parent) for p in (ROOT / "tests" / "plugins").glob("*/pyproject.toml"))
EXTRAS = {"ort": "ort", "openvino": "openvino", "ipex": "ipex"}  # plugin folder -> extra name
ENTRY_POINTS = {"ort": "ort", "openvino": "ov", "ipex": "ipex"}  # plugin folder -> backend name
#: A plugin's optional extras that work with the pinned torch (ipex's extra needs torch 2.8: its own session).
PLUGIN_EXTRAS = {"ort": "[dynamo]", "openvino": "[int8]"}
TEST_DEPS = ("pytest", "pillow", "matplotlib")
#: What acceleron.testing.assets needs to convert SmolLM2 from its GGUF file (demo, bench, real-model tests).
REAL_MODEL_DEPS = ("gguf", "accelerate")
#: The last IPEX release and the only torch it imports next to. IPEX is retired: these never move.
REAL_IPEX = ("torch==2.8.0", "intel-extension-for-pytorch==2.8.0")
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

nox.options.sessions = [
    "lint",
    "types",
    "tests",
    *(f"plugin-{name}" for name in PLUGINS),
    "all",
    "reliability",
    "ray",
]
#: The reliability suite has its own session (minutes of subprocesses); the others skip it.
SKIP_RELIABILITY = f"--ignore={ROOT / 'tests' / 'reliability'}"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True


def _plugin_args(*names: str) -> list[str]:
    """pip arguments installing the named plugins (default: all) editable, with their usable extras."""
    return [
        arg for name in names or PLUGINS for arg in ("-e", f"{ROOT / 'plugins' / name}{PLUGIN_EXTRAS.get(name, '')}")
    ]


def _install_core(session: nox.Session, *extra: str) -> None:
    session.install(*CONSTRAINTS, "-e", str(ROOT), *TEST_DEPS, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Core tests with no backend plugin installed."""
    _install_core(session, *(arg for path in TEST_PLUGINS for arg in ("-e", path)))
    session.run("pytest", "tests", SKIP_RELIABILITY, *session.posargs, env=ENV)


def _plugin_session(name: str) -> None:
    def run_plugin_tests(session: nox.Session) -> None:
        _install_core(session, *_plugin_args(name))
        session.run("pytest", str(ROOT / "plugins" / name / "tests"), *session.posargs, env=ENV)

    run_plugin_tests.__doc__ = f"The {name} plugin alone, in its own venv: its tests, conformance suite included."
    nox.session(name=f"plugin-{name}")(run_plugin_tests)


for _name in PLUGINS:
    _plugin_session(_name)


@nox.session(name="all")
def all_plugins(session: nox.Session) -> None:
    """Every plugin together: the core tests again, then each plugin's tests."""
    plugin_args = _plugin_args()
    _install_core(session, *plugin_args, *(arg for path in TEST_PLUGINS for arg in ("-e", path)))
    session.run("pytest", "tests", SKIP_RELIABILITY, *session.posargs, env=ENV)
    for name in PLUGINS:  # one run each: plugin test folders share module names (conftest, test_real_models)
        session.run("pytest", str(ROOT / "plugins" / name / "tests"), *session.posargs, env=ENV)


@nox.session(name="ray")
def ray_session(session: nox.Session) -> None:
    """acceleron[ray]: the bulk predictor and `acceleron run --input`, then Ray Data on a local Ray (num_cpus=2)."""
    test_plugins = [arg for path in TEST_PLUGINS for arg in ("-e", path)]
    session.install(*CONSTRAINTS, "-e", f"{ROOT}[ray]", *TEST_DEPS, *test_plugins)
    tests = ("tests/test_bulk.py", "tests/test_bulk_cli.py", "tests/test_ray.py")
    session.run("pytest", *(str(ROOT / path) for path in tests), *session.posargs, env=ENV)


@nox.session
def reliability(session: nox.Session) -> None:
    """Faults and hostile files on tiny models: SIGKILLs during exports, cache damage, concurrency."""
    _install_core(session, *(arg for path in TEST_PLUGINS for arg in ("-e", path)))
    session.run("pytest", str(ROOT / "tests" / "reliability"), *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    plugin_args = _plugin_args()
    session.install(*CONSTRAINTS, "mypy", "-e", str(ROOT), *plugin_args)
    sources = ["core/acceleron", *(f"plugins/{name}/src" for name in PLUGINS)]
    session.run("mypy", *sources)


@nox.session
def packaging(session: nox.Session) -> None:
    """Build every wheel, then install 'acceleron[<extra>]' from them and check the plugin is in place."""
    session.install(*CONSTRAINTS, "build")
    dist = Path(session.create_tmp()) / "dist"
    session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT), silent=True)
    for name in PLUGINS:
        session.run(
            "python", "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT / "plugins" / name), silent=True
        )
    session.log("built: " + ", ".join(sorted(p.name for p in dist.glob("*.whl"))))
    venv = Path(session.create_tmp()) / "fresh"
    session.run("python", "-m", "venv", "--clear", str(venv))
    python = str(venv / "bin" / "python")
    pip = (python, "-m", "pip", "install", "-q", *CONSTRAINTS, "--find-links", str(dist))
    session.run(*pip, "acceleron", external=True)
    _check_backends(session, python, expect_ok=set())
    expected: set[str] = set()
    for name in PLUGINS:
        session.run(*pip, f"acceleron[{EXTRAS[name]}]", external=True)
        expected.add(ENTRY_POINTS[name])
        _check_backends(session, python, expect_ok=expected)


def _check_backends(session: nox.Session, python: str, expect_ok: set[str]) -> None:
    output = session.run(python, "-m", "acceleron", "backends", "--json", external=True, silent=True, env=ENV)
    statuses = {entry["name"]: entry["status"] for entry in json.loads(str(output))}
    installed = {name for name, status in statuses.items() if status == "ok"} - {"torch"}
    if installed != expect_ok:
        session.error(f"expected backends {sorted(expect_ok)} to be ok, got {statuses}")
    session.log(f"backends ok: {sorted(installed) or 'none'} (as expected)")


@nox.session
def demo(session: nox.Session) -> None:
    """The README's first command: real models on every backend that exists."""
    plugin_args = _plugin_args()
    session.install(*CONSTRAINTS, "-e", str(ROOT), *plugin_args, *REAL_MODEL_DEPS)
    session.run("python", str(ROOT / "examples" / "demo.py"), *session.posargs, env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmark of every installed backend against eager PyTorch."""
    plugin_args = _plugin_args()
    # ctranslate2: faster-whisper's engine, measured next to ours by the asr workload
    session.install(*CONSTRAINTS, "-e", str(ROOT), *plugin_args, "matplotlib", "ctranslate2", *REAL_MODEL_DEPS)
    env = {**ENV, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    session.run("python", str(ROOT / "benchmarks" / "bench.py"), *session.posargs, env=env)


#: The anchors of the generation benchmark (benchmarks/anchors.py). llama-cpp-python is an sdist: pip
#: builds it (CMake, many minutes on two cores). openvino-genai goes with the pinned openvino.
ANCHOR_DEPS = ("llama-cpp-python==0.3.36", "onnxruntime-genai==0.18.0", "openvino-genai==2026.4.1.0")


@nox.session(name="bench-anchors")
def bench_anchors(session: nox.Session) -> None:
    """The generation benchmark on SmolLM2 with its anchors (llama.cpp, onnxruntime-genai) in the same rounds.

    Not a default session (the anchors are big installs, llama.cpp a long build): ``./nox -s bench-anchors``,
    extra arguments go to bench.py (e.g. ``-- --repeats 5``). llama-cpp-python is built with
    ``CMAKE_ARGS=-DGGML_NATIVE=ON`` unless CMAKE_ARGS is set; to reuse a wheel built before, point
    ``PIP_FIND_LINKS`` at its folder.
    """
    plugin_args = _plugin_args()
    env = {"CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=ON")}
    session.install(*CONSTRAINTS, "-e", str(ROOT), *plugin_args, "matplotlib", *REAL_MODEL_DEPS, env=env)
    session.install(*CONSTRAINTS, *ANCHOR_DEPS, env=env)
    env = {**ENV, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    args = ["--workload", "generation", "--anchors", "all", "--threads-list", "1,2", *session.posargs]
    session.run("python", str(ROOT / "benchmarks" / "bench.py"), *args, env=env)


@nox.session(name="plugin-ipex-real")
def plugin_ipex_real(session: nox.Session) -> None:
    """The ipex plugin's tests on real IPEX 2.8 + torch 2.8 (PyPI's CUDA build: ~4 GB, ~13 min here).

    Not a default session: IPEX is retired, so this pair never changes; run it when the ipex plugin
    changes (``./nox -s plugin-ipex-real``).
    """
    kept = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.partition("==")[0].strip().lower() != "torch"
    ]
    constraints = Path(session.create_tmp()) / "constraints-real-ipex.txt"
    constraints.write_text("\n".join(kept) + "\n")
    plugin = ROOT / "plugins" / "ipex"
    session.install("-c", str(constraints), *REAL_IPEX, "-e", str(ROOT), "-e", str(plugin), *TEST_DEPS)
    # Fail loudly if the ipex engine would not run: a suite that silently ran the torch engine proves nothing.
    check = (
        "from acceleron_ipex.engine import choose_engine; choice = choose_engine(); "
        "print(choice.reason); raise SystemExit(choice.engine != 'ipex')"
    )
    session.run("python", "-c", check, env=ENV)
    session.run("pytest", str(plugin / "tests"), *session.posargs, env=ENV)
