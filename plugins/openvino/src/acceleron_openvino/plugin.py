"""The ``ov`` backend: OpenVINO, registered through the ``acceleron.backends`` entry point.

Export converts each graph of the core's plan with ``openvino.convert_model`` and saves IR
(``prepare_plan`` swaps the flat-cache step of text-generation for its OpenVINO-safe tracing, see
``generation.py``); load reads IR (or an ONNX file found in the model folder) and compiles it once
per model and device into a session that runs one borrowed infer request per call. Importing this
module imports neither OpenVINO nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from acceleron import Availability, Backend, hookimpl
from acceleron.backend import Options, distribution_version, module_installed
from acceleron_openvino.options import OpenVINOOptions, precision_name

if TYPE_CHECKING:
    from acceleron.tasks import ExportPlan, TaskSpec
    from acceleron_openvino.session import OpenVINOSession


def _ov(options: Options) -> OpenVINOOptions:
    if not isinstance(options, OpenVINOOptions):
        raise TypeError(f"the ov backend needs OpenVINOOptions (Backend.parse_options), got {type(options).__name__}")
    return options


class OpenVINOBackend(Backend):
    """OpenVINO IR on CPU (or GPU, NPU, AUTO): float32, bfloat16, or int8/int4 weights through NNCF."""

    name = "ov"
    aliases = ("openvino",)
    priority = 300
    install_hint = "pip install 'acceleron[openvino]'"
    runtime_modules = ("openvino", "torch", "nncf")
    options_class = OpenVINOOptions
    dtypes = ("auto", "float32", "bfloat16", "int8", "int4")
    # Found with tiny YOLOS and DPT models on openvino 2026.4: they export, validate and run, but the
    # compiled-model cache (CACHE_MODE=OPTIMIZE_SIZE) gives them back with broken Reshape patterns
    # on the next load, so every later process would fail.
    unsupported_tasks = {
        task: (
            "OpenVINO's compiled-model cache (CACHE_MODE=OPTIMIZE_SIZE) reloads these graphs (YOLOS, DPT) "
            "with broken Reshape patterns, so a second load fails; use accelerator='ort' or 'ipex'"
        )
        for task in ("object-detection", "depth-estimation")
    }

    def availability(self) -> Availability:
        if distribution_version("openvino") is None or not module_installed("openvino"):
            return Availability(False, "the openvino package is not installed (pip install openvino).")
        if distribution_version("torch") is None:
            return Availability(False, "torch is not installed; it is needed to export models.")
        return Availability(True)

    def versions(self) -> dict[str, str]:
        return {"openvino": distribution_version("openvino") or "unknown"}

    def resolve_dtype(self, options: Options) -> str:
        """int8 or int4, else a precision forced through ``ov_config``, else ``dtype`` on this device: ``auto`` is
        the device's default (bfloat16 on AMX CPUs); bfloat16 without native support runs float32."""
        from acceleron_openvino.devices import default_precision, native_bfloat16

        options = _ov(options)
        forced = options.ov_config.get("INFERENCE_PRECISION_HINT")
        if options.dtype in ("int8", "int4"):
            return options.dtype
        if forced is not None:
            return precision_name(forced)
        if options.dtype == "auto":
            return default_precision(options.device)
        if options.dtype == "bfloat16" and not native_bfloat16(options.device):
            return "float32"
        return options.dtype

    def prepare_plan(self, plan: ExportPlan, options: Options) -> ExportPlan:
        from acceleron_openvino.generation import direct_past

        return direct_past(plan)

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        from acceleron_openvino.artifacts import find_model_file

        return find_model_file(folder, file_name)

    def artifact_files(self, artifact: Path) -> list[Path]:
        from acceleron_openvino.artifacts import model_files

        return model_files(artifact)

    def export(self, plan: ExportPlan, output_dir: Path, options: Options) -> Path:
        from acceleron_openvino.export import export_plan

        return export_plan(plan, output_dir, _ov(options))

    def load(self, artifact: Path, task: TaskSpec, options: Options) -> OpenVINOSession:
        from acceleron_openvino.session import load_session

        return load_session(artifact, task, _ov(options))


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [OpenVINOBackend()]
