"""The contract every backend plugin implements.

A backend is a small object that a plugin returns from its ``acceleron_backends`` hook. It
declares who it is (name, aliases, priority, install hint), whether it can run here, which tasks
it supports, and three steps: **export** a PyTorch model to its artifact, **load** an artifact
into a runtime session, and **_forward** model inputs through that session. Everything else
(task knowledge, caching, validation, pipelines) lives in the core.

Rules: importing the plugin module and calling :meth:`Backend.availability` must not import the
heavy runtime (list it in ``runtime_modules``; the conformance suite checks). Import the runtime
inside :meth:`export`, :meth:`load` and :meth:`_forward`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acceleron.errors import InvalidOptionError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from acceleron.modeling import OptimizedModel
    from acceleron.tasks import TaskSpec

#: Options every backend understands; each maps them to its runtime or warns that it cannot.
COMMON_OPTIONS = frozenset({"device", "dtype", "num_threads"})

DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")


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
    #: Backend-specific option names accepted besides :data:`COMMON_OPTIONS`.
    extra_options: ClassVar[frozenset[str]] = frozenset()
    #: Options whose value changes the exported artifact; they are part of the cache key.
    artifact_options: ClassVar[frozenset[str]] = frozenset()
    #: Dtypes accepted by the ``dtype`` option (``auto`` is the backend's documented default).
    dtypes: ClassVar[tuple[str, ...]] = ("auto", "float32")

    # ---- identity and capability -------------------------------------------------------

    @abstractmethod
    def availability(self) -> Availability:
        """Can this backend run here? Read package metadata only; never import the runtime."""

    @abstractmethod
    def supported_tasks(self) -> frozenset[str]:
        """Canonical names of the tasks this backend can export and run."""

    def versions(self) -> dict[str, str]:
        """Versions of the runtime packages that shape the artifact (part of the cache key)."""
        return {}

    def owns(self, model: object) -> bool:
        """Is ``model`` a model instance of this backend? Used to route a passed model."""
        return getattr(model, "backend_name", None) == self.name

    def model_class(self) -> type[OptimizedModel]:
        """The :class:`~acceleron.OptimizedModel` subclass the router loads models with."""
        from acceleron.modeling import model_class_for

        return model_class_for(self.name)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate user options; returns them with defaults filled in. Unknown keys raise."""
        known = COMMON_OPTIONS | self.extra_options
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidOptionError(
                f"backend {self.name!r} does not know the option(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(sorted(known))}."
            )
        checked = dict(options)
        dtype = checked.get("dtype") or "auto"
        if dtype not in self.dtypes:
            raise InvalidOptionError(
                f"backend {self.name!r} does not support dtype={dtype!r}; choose one of {', '.join(self.dtypes)}."
            )
        checked["dtype"] = dtype
        threads = checked.get("num_threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InvalidOptionError(f"num_threads must be a positive integer, got {threads!r}.")
        device = checked.get("device")
        checked["device"] = "cpu" if device is None else str(device)
        return checked

    def effective_dtype(self, options: Mapping[str, Any]) -> str:
        """The precision the runtime computes in for these options (chooses the validation tolerance)."""
        dtype = str(options.get("dtype") or "auto")
        return "float32" if dtype == "auto" else dtype

    # ---- the three steps -----------------------------------------------------------------

    @abstractmethod
    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        """The artifact this backend can load from ``folder`` (root or its own subfolder), or None.

        With several candidates and no ``file_name``, raise :class:`~acceleron.errors.AcceleronError`
        naming them.
        """

    @abstractmethod
    def export(
        self,
        model: PreTrainedModel,
        task: TaskSpec,
        example_inputs: Mapping[str, torch.Tensor],
        output_dir: Path,
        options: Mapping[str, Any],
    ) -> Path:
        """The export hook: write the artifact for ``model`` into ``output_dir``; return its path.

        ``example_inputs`` come from the task table (names, dtypes, shapes); dynamic axes are
        ``task.dynamic_axes(list(example_inputs))``. Raise :class:`~acceleron.errors.ExportError`
        with the cause when conversion fails; the core discards ``output_dir``.
        """

    @abstractmethod
    def load(self, artifact: Path, task: TaskSpec, options: Mapping[str, Any]) -> Any:
        """Load an artifact into a runtime session, created once per model."""

    @abstractmethod
    def _forward(self, session: Any, inputs: Mapping[str, torch.Tensor], task: TaskSpec) -> dict[str, torch.Tensor]:
        """Run ``inputs`` through ``session``; return the task's outputs as torch tensors by name.

        Must be safe to call from several threads at once on one session.
        """

    def artifact_files(self, artifact: Path) -> list[Path]:
        """Every file the artifact consists of (e.g. ``model.onnx`` and its external data)."""
        return [artifact]

    def input_dtype(self, options: Mapping[str, Any]) -> str:
        """The torch dtype name floating inputs must have (pipelines cast pixel values to it)."""
        return "float32"

    def describe(self, session: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        """What the session actually runs with (device, dtype, threads, ...), for reports."""
        return {"device": options.get("device", "cpu"), "dtype": self.effective_dtype(options)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} priority={self.priority}>"
