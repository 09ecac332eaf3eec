"""The contract every backend plugin implements: a :class:`Backend`, its :class:`Options`, its :class:`Session`.

A backend is a small object a plugin returns from its ``acceleron_backends`` hook. It says who it
is (name, aliases, priority rank, install hint), whether it can run here, and does three things:

* **export** (the export hook): convert the core's :class:`~acceleron.tasks.ExportPlan` (float32
  PyTorch graphs with names, dynamic axes and example inputs) into its artifact files;
* **load**: turn an artifact into a :class:`Session`, once per model;
* **_forward** (the session's override): run one forward on its runtime.

Everything else (which tasks exist, how their graphs look, how inputs are prepared, caching,
validation, pipelines) is the core's. Options are parsed once per load into a typed
:class:`Options` (a frozen dataclass a plugin may extend) that says which fields key the export cache.

Rules: importing the plugin module and calling :meth:`Backend.availability` must not import the
heavy runtime (list it in ``runtime_modules``; the conformance suite checks). Import the runtime
inside :meth:`Backend.export` and :meth:`Backend.load`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acceleron.errors import InvalidOptionError
from acceleron.tasks import TASKS

if TYPE_CHECKING:
    import torch

    from acceleron.decoding import DecodeState
    from acceleron.kv_cache import CacheLayout
    from acceleron.tasks import ExportPlan, TaskSpec


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; ``reason`` says why not, in one sentence."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def distribution_version(*names: str) -> str | None:
    """The version of the first installed distribution among ``names``, from metadata only."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def module_installed(name: str) -> bool:
    """True when ``name`` can be imported, found without importing it (or its parent packages' code)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def source_digest(package: str) -> str:
    """A digest of the ``.py`` files of an imported top-level package (its code, for cache keys).

    An export made by other code must not be served: a plugin's version alone misses editable
    installs and unreleased changes, the source does not.
    """
    module = sys.modules.get(package)
    files = getattr(module, "__file__", None)
    if not files:
        return ""
    root = Path(files).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def _distribution_of(package: str) -> tuple[str, str] | None:
    names = importlib.metadata.packages_distributions().get(package) or []
    for name in names:
        version = distribution_version(name)
        if version is not None:
            return name, version
    return None


# ---- options -------------------------------------------------------------------------------------


def max_threads() -> int:
    """The largest ``num_threads`` a backend accepts: 4 per logical CPU, and at least 64.

    More threads than cores never runs faster, and an absurd count is not refused by the runtimes:
    torch and IPEX die in libgomp (the process exits, no exception) and ONNX Runtime reports a
    "corrupt" model. Four per logical CPU leaves room for deliberate oversubscription; the floor
    of 64 lets a setting tuned on a bigger machine still load on a laptop or a small container.
    """
    return max(64, 4 * (os.cpu_count() or 1))


def check_threads(threads: object) -> None:
    """Raise :class:`InvalidOptionError` unless ``threads`` is None or an int in 1..:func:`max_threads`."""
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InvalidOptionError(f"num_threads must be a positive integer, got {threads!r}.")
    limit = max_threads()
    if threads > limit:
        raise InvalidOptionError(
            f"num_threads={threads} is more than this machine can use: at most {limit} here (4 per logical CPU, "
            f"of which there are {os.cpu_count()}, and never fewer than 64). Pass a smaller number, or leave "
            "num_threads out for the runtime's default."
        )


@dataclass(frozen=True)
class Options:
    """A backend's options, parsed once per load. Plugins subclass it (a frozen dataclass) to add fields.

    ``dtype`` is what the caller asked for (``auto`` included); ``compute_dtype`` is what the runtime
    computes in, resolved by :meth:`Backend.resolve_dtype` when parsing. A subclass validates its own
    fields in ``__post_init__`` (raise :class:`~acceleron.errors.InvalidOptionError`).
    """

    device: str = "cpu"
    dtype: str = "auto"
    num_threads: int | None = None
    #: Set by :meth:`Backend.parse_options`, not by callers.
    compute_dtype: str = "float32"

    #: Fields whose value changes the exported artifact; they key the export cache and are recorded in
    #: the manifest. ``dtype`` is one unless a plugin's subclass says otherwise.
    artifact_fields: ClassVar[frozenset[str]] = frozenset({"dtype"})

    @classmethod
    def settable(cls) -> frozenset[str]:
        """The option names a caller may pass."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.init) - {"compute_dtype"}

    def artifact_key(self) -> dict[str, Any]:
        """The artifact-shaping fields and their values (``dtype`` as the precision computed in)."""
        return {
            name: self.compute_dtype if name == "dtype" else getattr(self, name)
            for name in sorted(self.artifact_fields)
        }

    def fixed_by_artifact(self, recorded: Mapping[str, Any]) -> frozenset[str]:
        """The artifact fields whose recorded value (``recorded``, from a manifest) a loaded artifact imposes.

        Default: all of them. A backend whose artifact runs in several of them (a float IR that
        computes in float32 or bfloat16 alike) returns fewer.
        """
        return self.artifact_fields

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- sessions ----------------------------------------------------------------------------------


class Session(ABC):
    """A loaded artifact, ready to run. :meth:`Backend.load` returns one; plugins subclass it.

    ``input_names`` are the inputs the artifact declares (the core prepares exactly those),
    ``output_names`` the outputs it returns. Must be safe to call from several threads at once.
    """

    #: The torch dtype name floating inputs must have (pipelines cast pixel values to it).
    input_dtype: str = "float32"
    #: Whether the forward computes with torch's threads in the calling thread (torch, IPEX). False
    #: (a runtime with its own threads) lets ``generate()`` run its own small torch operations on one
    #: thread, out of the runtime's way (:mod:`acceleron.threads`). True, the default, changes nothing.
    computes_with_torch: bool = True

    def __init__(self, *, input_names: Sequence[str], output_names: Sequence[str], options: Options) -> None:
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.options = options

    @property
    def compute_dtype(self) -> str:
        """The precision the runtime computes in."""
        return self.options.compute_dtype

    @abstractmethod
    def _forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ``_forward`` override: run prepared inputs (exactly ``input_names``) on the runtime.

        Return the outputs as torch tensors by name: floating ones in float32, except a KV cache
        (``present.*``), which may stay in :attr:`input_dtype` (it is fed back as the next past).
        """

    def start_decoding(self, layout: CacheLayout, batch_size: int) -> DecodeState | None:
        """A new generation's KV cache kept by the runtime (:class:`acceleron.decoding.DecodeState`), or None.

        Override it when the runtime can hold the cache between steps (a stateful request, bound
        buffers). None (the default) has the core run the flat protocol: the past goes in and the
        present comes out of :meth:`_forward` at every step. Either way :meth:`_forward` must keep
        serving the flat protocol: validation and callers that hand a cache in use it.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """What the session actually runs with (device, dtype, threads, ...), for reports."""
        return {
            "device": self.options.device,
            "dtype": self.compute_dtype,
            "num_threads": self.options.num_threads,
            "inputs": list(self.input_names),
        }


# ---- the backend -------------------------------------------------------------------------------


class Backend(ABC):
    """Base class of a backend. Subclass it in a plugin and return an instance from the hook."""

    #: Canonical id; must equal the plugin's entry point name in ``acceleron.backends``.
    name: ClassVar[str]
    #: Other names users may type (case-insensitive), e.g. ``("onnxruntime",)`` for ``ort``.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Higher wins when ``accelerator=None``. OpenVINO 300, ONNX Runtime 200, IPEX 100.
    priority: ClassVar[int] = 0
    #: What to run to get this backend, shown in errors.
    install_hint: ClassVar[str] = ""
    #: False for backends that are only used when asked for by name (the ``torch`` reference).
    auto_select: ClassVar[bool] = True
    #: Modules that importing the plugin and calling :meth:`availability` must leave unimported.
    runtime_modules: ClassVar[tuple[str, ...]] = ()
    #: The typed options of this backend (a subclass of :class:`Options` for backend-specific fields).
    options_class: ClassVar[type[Options]] = Options
    #: Dtypes accepted by the ``dtype`` option (``auto`` is the backend's documented default).
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float32")
    #: Tasks of the core's table this backend's runtime cannot run (see :meth:`supported_tasks`): a
    #: mapping of each to the reason, in a sentence (``acceleron backends`` and the refusal show it),
    #: or a set of names.
    unsupported_tasks: ClassVar[Mapping[str, str] | frozenset[str]] = frozenset()
    #: True when loading an artifact executes code from it (TorchScript, pickles): such an artifact is
    #: loaded from a model folder only with ``trust_remote_code=True`` (the export cache's own are trusted).
    artifact_runs_code: ClassVar[bool] = False

    # ---- identity and capability -------------------------------------------------------

    @abstractmethod
    def availability(self) -> Availability:
        """Can this backend run here? Read package metadata only; never import the runtime."""

    def supported_tasks(self) -> frozenset[str]:
        """Every task the core can plan, less :attr:`unsupported_tasks`."""
        return frozenset(TASKS) - frozenset(self.unsupported_tasks)

    def unsupported_reason(self, task: str) -> str:
        """Why this backend declares ``task`` unsupported ("" when no reason was given)."""
        declared = self.unsupported_tasks
        return str(declared.get(task, "")) if isinstance(declared, Mapping) else ""

    def versions(self) -> dict[str, str]:
        """Versions of the runtime packages that shape the artifact (part of the cache key)."""
        return {}

    def host_fingerprint(self) -> str | None:
        """For artifacts that only run where they were made (compiled for this CPU): what identifies
        this host's relevant features. Part of the cache key; None (the default) for portable artifacts."""
        return None

    def plugin_version(self) -> dict[str, str]:
        """The plugin's distribution, version and code digest (part of the cache key)."""
        package = type(self).__module__.split(".")[0]
        found = _distribution_of(package)
        info = {"package": package, "code": source_digest(package)}
        if found is not None:
            info.update(distribution=found[0], version=found[1])
        return info

    def owns(self, model: object) -> bool:
        """Is ``model`` a model instance of this backend? Used to route a passed model."""
        other = getattr(model, "backend", None)
        return other is self or getattr(other, "name", None) == self.name

    # ---- options ---------------------------------------------------------------------------

    def parse_options(self, options: Mapping[str, Any] | Options | None = None) -> Options:
        """Check the caller's options once and return them typed. Unknown names and bad values raise."""
        if isinstance(options, self.options_class):
            check_threads(options.num_threads)  # a hand-built Options skips the checks below
            return options
        if isinstance(options, Options):
            options = options.to_dict()
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise InvalidOptionError(
                f"backend options must be a mapping such as {{'num_threads': 2}}, got {type(options).__name__}"
            )
        values = {name: value for name, value in options.items() if value is not None}
        values.pop("compute_dtype", None)
        known = self.options_class.settable()
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidOptionError(
                f"backend {self.name!r} does not know the option(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(sorted(known))}."
            )
        dtype = str(values.get("dtype") or "auto")
        if dtype not in self.dtypes:
            raise InvalidOptionError(
                f"backend {self.name!r} does not support dtype={dtype!r}; choose one of {', '.join(self.dtypes)}."
            )
        values["dtype"] = dtype
        check_threads(values.get("num_threads"))
        values["device"] = str(values.get("device") or "cpu")
        try:
            parsed = self.options_class(**values)
        except TypeError as error:
            raise InvalidOptionError(f"backend {self.name!r}: {error}") from error
        return dataclasses.replace(parsed, compute_dtype=self.resolve_dtype(parsed))

    def resolve_dtype(self, options: Options) -> str:
        """The precision the runtime computes in for these options (``auto`` resolved)."""
        return "float32" if options.dtype == "auto" else options.dtype

    # ---- the three steps -----------------------------------------------------------------

    def prepare_plan(self, plan: ExportPlan, options: Options) -> ExportPlan:
        """Change the core's plan for this backend's tracer (another cache wrapper, say). Default: as is."""
        return plan

    @abstractmethod
    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        """The artifact this backend can load from ``folder`` (root or its own subfolder), or None.

        With several candidates and no ``file_name``, raise :class:`~acceleron.errors.AcceleronError`
        naming them.
        """

    @abstractmethod
    def export(self, plan: ExportPlan, output_dir: Path, options: Options) -> Path:
        """The export hook: write the artifact of ``plan`` into ``output_dir``; return the main file.

        ``plan`` holds float32 weights and float32 example inputs whatever ``options.dtype`` is; a
        reduced-precision artifact is this method's own conversion. Each of ``plan.graphs`` is exported
        (its ``module`` takes ``example_args`` positionally and returns a tuple ordered as
        ``output_names``). Extra files go anywhere inside ``output_dir`` and are listed by
        :meth:`artifact_files`. Raise :class:`~acceleron.errors.ExportError` when conversion fails;
        the core discards ``output_dir``.
        """

    @abstractmethod
    def load(self, artifact: Path, task: TaskSpec, options: Options) -> Session:
        """Load an artifact into a :class:`Session`, once per model."""

    def artifact_files(self, artifact: Path) -> list[Path]:
        """Every file the artifact consists of (e.g. ``model.onnx`` and its external data)."""
        return [artifact]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} priority={self.priority}>"
