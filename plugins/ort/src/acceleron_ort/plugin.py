"""``OrtBackend``, the ONNX Runtime backend, and the hook the ``ort`` entry point names.

Importing this module imports neither onnxruntime, onnx, torch nor transformers: the export,
quantisation and session modules that need them are imported inside the methods that use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from acceleron.backend import Availability, Backend, Options, distribution_version, module_installed
from acceleron.hookspecs import hookimpl
from acceleron_ort.artifacts import external_data_files, find_onnx
from acceleron_ort.options import OrtOptions

if TYPE_CHECKING:
    from acceleron.tasks import ExportPlan, TaskSpec
    from acceleron_ort.session import OrtSession

#: Distributions that provide the ``onnxruntime`` module; any one of them will do.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
    "onnxruntime-training",
    "ort-nightly",
    "ort-nightly-gpu",
)


class OrtBackend(Backend):
    """Exports with ``torch.onnx.export``, runs on ``onnxruntime.InferenceSession``; options: :class:`OrtOptions`."""

    name = "ort"
    aliases = ("onnxruntime",)
    priority = 200
    install_hint = "pip install 'acceleron[ort]'"
    runtime_modules = ("onnxruntime", "onnx", "torch", "transformers")
    options_class = OrtOptions
    dtypes = ("auto", "float32", "int8", "int4")

    def availability(self) -> Availability:
        runtime = distribution_version(*ORT_DISTRIBUTIONS)
        if runtime is None or not module_installed("onnxruntime"):
            return Availability(False, "no ONNX Runtime distribution (onnxruntime, onnxruntime-gpu, ...) is installed.")
        if distribution_version("onnx") is None or not module_installed("onnx"):
            return Availability(False, "the onnx package is not installed.")
        return Availability(True)

    def versions(self) -> dict[str, str]:
        versions = {
            "onnxruntime": distribution_version(*ORT_DISTRIBUTIONS),
            "onnx": distribution_version("onnx"),
            "onnxscript": distribution_version("onnxscript"),
        }
        return {name: version for name, version in versions.items() if version is not None}

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        return find_onnx(folder, file_name)

    def artifact_files(self, artifact: Path) -> list[Path]:
        return [artifact, *external_data_files(artifact)]

    # The core passes the options parse_options made, an OrtOptions (hence the casts).

    def prepare_plan(self, plan: ExportPlan, options: Options) -> ExportPlan:
        """Trace with eager attention (``attention="eager"``, the default, and always with ``optimize=True``:
        the pattern onnxruntime's attention fusion knows); ``attention="model"`` keeps the model's own."""
        ort_options = cast(OrtOptions, options)
        if ort_options.attention == "model" and not ort_options.optimize:
            return plan
        from acceleron_ort.fusion import with_eager_attention

        return with_eager_attention(plan)

    def export(self, plan: ExportPlan, output_dir: Path, options: Options) -> Path:
        """``<graph>.onnx`` per graph (+ ``.data`` for large or dynamo exports); returns the main one."""
        from acceleron_ort.export import export_plan

        return export_plan(plan, output_dir, cast(OrtOptions, options))

    def load(self, artifact: Path, task: TaskSpec, options: Options) -> OrtSession:
        from acceleron_ort.session import OrtSession

        return OrtSession.open(artifact, task, cast(OrtOptions, options))


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [OrtBackend()]
