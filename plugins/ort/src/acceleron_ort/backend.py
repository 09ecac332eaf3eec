"""``OrtBackend``: the ONNX Runtime backend, through acceleron's plugin contract.

Importing this module imports neither onnxruntime, onnx, torch nor transformers: the export,
quantisation and session modules that need them are imported inside the methods that use them.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acceleron.backend import Availability, Backend, distribution_version, module_installed
from acceleron_ort.artifacts import DEFAULT_FILE_NAME, external_data_files, find_onnx
from acceleron_ort.options import (
    ARTIFACT_OPTIONS,
    DEFAULT_EXPORTER,
    DEFAULT_GRAPH_OPTIMIZATION,
    EXTRA_OPTIONS,
    check_ort_options,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from acceleron.tasks import TaskSpec
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

SUPPORTED_TASKS = frozenset(
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


class OrtBackend(Backend):
    """Exports with ``torch.onnx.export`` and runs on ``onnxruntime.InferenceSession``.

    Options (besides ``device``, ``dtype`` in auto/float32/int8 and ``num_threads``) are listed in
    :mod:`acceleron_ort.options`.
    """

    name = "ort"
    aliases = ("onnxruntime",)
    priority = 200
    install_hint = "pip install 'acceleron[ort]'"
    runtime_modules = ("onnxruntime", "onnx", "torch", "transformers")
    extra_options = EXTRA_OPTIONS
    artifact_options = ARTIFACT_OPTIONS
    dtypes = ("auto", "float32", "int8")

    # ---- identity and capability ----

    def availability(self) -> Availability:
        runtime = distribution_version(*ORT_DISTRIBUTIONS)
        if runtime is None or not module_installed("onnxruntime"):
            return Availability(False, "no ONNX Runtime distribution (onnxruntime, onnxruntime-gpu, ...) is installed.")
        if distribution_version("onnx") is None or not module_installed("onnx"):
            return Availability(False, "the onnx package is not installed.")
        return Availability(True)

    def supported_tasks(self) -> frozenset[str]:
        return SUPPORTED_TASKS

    def versions(self) -> dict[str, str]:
        versions = {
            "onnxruntime": distribution_version(*ORT_DISTRIBUTIONS),
            "onnx": distribution_version("onnx"),
            "onnxscript": distribution_version("onnxscript"),
        }
        return {name: version for name, version in versions.items() if version is not None}

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return check_ort_options(super().check_options(options))

    # ---- artifacts ----

    def find_artifact(self, folder: Path, file_name: str | None = None) -> Path | None:
        return find_onnx(folder, file_name)

    def artifact_files(self, artifact: Path) -> list[Path]:
        return [artifact, *external_data_files(artifact)]

    # ---- export ----

    def export(
        self,
        model: PreTrainedModel,
        task: TaskSpec,
        example_inputs: Mapping[str, torch.Tensor],
        output_dir: Path,
        options: Mapping[str, Any],
    ) -> Path:
        """Export to ``output_dir/model.onnx`` (+ ``model.onnx.data`` for large or dynamo exports).

        ``optimize=True`` fuses transformer ops; ``dtype="int8"`` quantises the float32 export.
        """
        from acceleron_ort import exporting, fusion

        exporter = str(options.get("exporter") or DEFAULT_EXPORTER)
        optimize = bool(options.get("optimize"))
        int8 = self.effective_dtype(options) == "int8"
        # int8 quantises a float32 export written aside, which is removed afterwards.
        folder = output_dir / "float32" if int8 else output_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / DEFAULT_FILE_NAME
        with fusion.eager_attention(model) if optimize else nullcontext():
            exporting.torch_to_onnx(model, task, example_inputs, path, exporter=exporter, opset=options.get("opset"))
        exporting.store_weights(path)
        fused = fusion.fuse(path, model.config, external_data=bool(external_data_files(path))) if optimize else {}
        if int8:
            from acceleron_ort.quantize import quantize_int8, quantize_weights_int8

            target = output_dir / DEFAULT_FILE_NAME
            if task.generative:
                quantize_weights_int8(path, target)
            else:
                quantize_int8(path, target, external_data=bool(external_data_files(path)))
            shutil.rmtree(folder)
            path = target
            exporting.store_weights(path)
        exporting.write_metadata(
            path,
            {
                "task": task.name,
                "dtype": "int8" if int8 else "float32",
                "exporter": exporter,
                "fused": ",".join(sorted(fused)),
                "torch": distribution_version("torch") or "",
            },
        )
        exporting.check_onnx(path)
        return path

    # ---- runtime ----

    def load(self, artifact: Path, task: TaskSpec, options: Mapping[str, Any]) -> OrtSession:
        from acceleron_ort.session import OrtSession

        return OrtSession.create(artifact, task.output_names, options, generative=task.generative)

    def _forward(
        self, session: OrtSession, inputs: Mapping[str, torch.Tensor], task: TaskSpec
    ) -> dict[str, torch.Tensor]:
        return session.run(inputs)

    def describe(self, session: OrtSession, options: Mapping[str, Any]) -> dict[str, Any]:
        settings = session.session.get_session_options()
        return {
            "device": str(options.get("device") or "cpu"),
            "provider": session.provider,
            "io_binding": session.io_binding,
            "dtype": session.metadata.get("dtype") or self.effective_dtype(options),
            "num_threads": settings.intra_op_num_threads or "onnxruntime default (one per physical core)",
            "graph_optimization": str(options.get("graph_optimization") or DEFAULT_GRAPH_OPTIMIZATION),
            "exporter": session.metadata.get("exporter"),
            "fused": session.metadata.get("fused") or None,
            "inputs": [graph_input.name for graph_input in session.inputs],
        }
