"""The ``ov`` backend: OpenVINO, registered through the ``acceleron.backends`` entry point.

Export converts the PyTorch model with ``openvino.convert_model`` and saves IR (for text-generation,
one decoder step on acceleron's flat KV-cache protocol: see ``generation.py``); load reads IR (or an
ONNX file found in the model folder) and compiles it once per model and device; ``_forward`` runs
one borrowed infer request per call. Importing this module imports neither OpenVINO nor torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron import Availability, Backend, hookimpl
from acceleron.backend import distribution_version, module_installed
from acceleron_openvino.options import EXTRA_OPTIONS, PRECISION_NAMES, RuntimeOptions, check_extra_options

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from acceleron.tasks import TaskSpec
    from acceleron_openvino.session import OpenVINOSession

logger = logging.getLogger(__name__)

TASKS = frozenset(
    {
        "feature-extraction",
        "text-classification",
        "zero-shot-classification",
        "token-classification",
        "question-answering",
        "fill-mask",
        "image-classification",
        "audio-classification",
        "text-generation",
    }
)


class OpenVINOBackend(Backend):
    """OpenVINO IR on CPU (or GPU, NPU, AUTO): float32, bfloat16, or int8 weights through NNCF."""

    name = "ov"
    aliases = ("openvino",)
    priority = 300
    install_hint = "pip install 'acceleron[openvino]'"
    runtime_modules = ("openvino", "torch", "nncf")
    extra_options = EXTRA_OPTIONS
    # int8 compresses the IR's weights; every dtype keeps its own export (and validation report).
    artifact_options = frozenset({"dtype"})
    dtypes = ("auto", "float32", "bfloat16", "int8")

    # ---- identity and capability ----

    def availability(self) -> Availability:
        if distribution_version("openvino") is None or not module_installed("openvino"):
            return Availability(False, "the openvino package is not installed (pip install openvino).")
        if distribution_version("torch") is None:
            return Availability(False, "torch is not installed; it is needed to export models.")
        return Availability(True)

    def supported_tasks(self) -> frozenset[str]:
        return TASKS

    def versions(self) -> dict[str, str]:
        return {"openvino": distribution_version("openvino") or "unknown"}

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Common checks, then ``ov``'s own; the device is checked against OpenVINO's device list now."""
        from acceleron_openvino.devices import normalize_device

        checked = check_extra_options(super().check_options(options))
        checked["device"] = normalize_device(checked["device"])
        runtime = RuntimeOptions.from_options(checked)
        if runtime.num_threads is not None and not runtime.is_cpu:
            logger.warning("acceleron[ov]: num_threads applies to the CPU only; it is ignored on %s", runtime.device)
        return checked

    def effective_dtype(self, options: Mapping[str, Any]) -> str:
        """The precision OpenVINO computes in: ``auto`` is the device's default (bfloat16 on AMX CPUs)."""
        from acceleron_openvino.devices import default_precision, native_bfloat16

        runtime = RuntimeOptions.from_options(options)
        forced = runtime.ov_config.get("INFERENCE_PRECISION_HINT")
        if forced is not None:  # a string such as "bf16", or an openvino.Type
            name = forced.get_type_name() if hasattr(forced, "get_type_name") else str(forced).lower()
            return PRECISION_NAMES.get(name, name)
        if runtime.dtype == "int8":
            return "int8"
        if runtime.dtype == "bfloat16" and not native_bfloat16(runtime.device):
            return "float32"
        if runtime.dtype == "auto":
            return default_precision(runtime.device)
        return runtime.dtype

    # ---- the three steps ----

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        from acceleron_openvino.artifacts import find_model_file

        return find_model_file(folder, file_name)

    def artifact_files(self, artifact: Path) -> list[Path]:
        from acceleron_openvino.artifacts import model_files

        return model_files(artifact)

    def export(
        self,
        model: PreTrainedModel,
        task: TaskSpec,
        example_inputs: Mapping[str, torch.Tensor],
        output_dir: Path,
        options: Mapping[str, Any],
    ) -> Path:
        from acceleron_openvino.export import compress_weights_int8, convert_pytorch, save_ir

        if task.generative:
            from acceleron_openvino.generation import convert_causal_lm

            ov_model = convert_causal_lm(model, example_inputs)
        else:
            ov_model = convert_pytorch(model, task, example_inputs)
        if options.get("dtype") == "int8":
            ov_model = compress_weights_int8(ov_model)
        return save_ir(ov_model, output_dir)

    def load(self, artifact: Path, task: TaskSpec, options: Mapping[str, Any]) -> OpenVINOSession:
        from acceleron_openvino.compile import compile_session

        started = time.perf_counter()
        session = compile_session(artifact, task, RuntimeOptions.from_options(options))
        logger.info(
            "acceleron[ov]: compiled %s for %s in %.2f s", artifact.name, session.device, time.perf_counter() - started
        )
        return session

    def _forward(
        self, session: OpenVINOSession, inputs: Mapping[str, torch.Tensor], task: TaskSpec
    ) -> dict[str, torch.Tensor]:
        return session.run(inputs)

    def describe(self, session: OpenVINOSession, options: Mapping[str, Any]) -> dict[str, Any]:
        """Device, precision, threads, streams and shapes the compiled model actually runs with."""
        from acceleron_openvino.compile import describe_session

        return describe_session(session, RuntimeOptions.from_options(options))


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [OpenVINOBackend()]
