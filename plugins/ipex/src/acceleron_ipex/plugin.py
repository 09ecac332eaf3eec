"""``IpexBackend``: the ``ipex`` accelerator (entry point ``ipex``), two engines behind one backend.

* ``ipex``: Intel Extension for PyTorch, when it is installed and its major.minor matches torch's
  (``ipex.optimize``, bfloat16 autocast, TorchScript trace + freeze);
* ``torch``: otherwise, PyTorch's own CPU path (bfloat16 weights where the CPU computes bfloat16
  natively, TorchScript trace + freeze, opt-in ``torch.compile``, dynamic int8 quantisation).

The engine is decided from package metadata, so a mismatched IPEX is never imported. Every task of
the core's table runs; the graph traced is the core's plan (``text-generation``: one decoder step on
the flat KV-cache protocol, :mod:`acceleron.kv_cache`). Options: see :class:`~acceleron_ipex.options.IpexOptions`.
Importing this module imports neither torch nor IPEX.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from acceleron import hookimpl
from acceleron.backend import Availability, Backend, Options, distribution_version
from acceleron.errors import InvalidOptionError
from acceleron_ipex import artifacts, cpu, engine
from acceleron_ipex.options import INT4_REFUSED, IpexOptions

if TYPE_CHECKING:
    from acceleron.tasks import ExportPlan, TaskSpec
    from acceleron_ipex.session import IpexSession


class IpexBackend(Backend):
    """The ``ipex`` backend (see the module docstring)."""

    name = "ipex"
    aliases = ("intel-extension-for-pytorch",)
    priority = 100
    install_hint = "pip install 'acceleron[ipex]'"
    runtime_modules = ("torch", "transformers", "intel_extension_for_pytorch")
    options_class = IpexOptions
    dtypes = ("auto", "float32", "bfloat16", "int8")
    artifact_runs_code = True  # model.ipex.pt is TorchScript: a model folder's copy loads only if trusted

    def availability(self) -> Availability:
        """Available wherever torch is installed; the reason names the engine that will run."""
        missing = [name for name in ("torch", "transformers") if distribution_version(name) is None]
        if missing:
            return Availability(False, f"{' and '.join(missing)} not installed.")
        return Availability(True, engine.choose_engine().reason)

    def versions(self) -> dict[str, str]:
        """The engine, the IPEX version it uses and what ``dtype="auto"`` means here: all shape the artifact."""
        choice = engine.choose_engine()
        return {
            "engine": choice.engine,
            "intel-extension-for-pytorch": (choice.ipex_version or "") if choice.ipex_usable else "",
            "acceleron-ipex": distribution_version("acceleron-ipex") or "",
            "auto-dtype": cpu.auto_dtype(),
        }

    def parse_options(self, options: Mapping[str, Any] | Options | None = None) -> Options:
        """The core's parsing, after refusing ``dtype="int4"`` with the backends that have it."""
        dtype = options.get("dtype") if isinstance(options, Mapping) else getattr(options, "dtype", None)
        if dtype == "int4":
            raise InvalidOptionError(INT4_REFUSED)
        return super().parse_options(options)

    def resolve_dtype(self, options: Options) -> str:
        """``auto`` is bfloat16 where the CPU computes it natively, else float32."""
        return cpu.auto_dtype() if options.dtype == "auto" else options.dtype

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        return artifacts.find_artifact(folder, file_name)

    def artifact_files(self, artifact: Path) -> list[Path]:
        return artifacts.artifact_files(artifact)

    def export(self, plan: ExportPlan, output_dir: Path, options: Options) -> Path:
        from acceleron_ipex.export import export_artifact

        return export_artifact(plan, output_dir, cast(IpexOptions, options))

    def load(self, artifact: Path, task: TaskSpec, options: Options) -> IpexSession:
        from acceleron_ipex.session import load_session

        return load_session(artifact, task, cast(IpexOptions, options))


@hookimpl
def acceleron_backends() -> list[Backend]:
    """The ``ipex`` backend. Imports neither torch nor IPEX."""
    return [IpexBackend()]
