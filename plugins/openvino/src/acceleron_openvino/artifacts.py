"""Finding and reading the models the ``ov`` backend loads: OpenVINO IR, or ONNX converted at load.

Search order in a model folder: IR at the root, IR in ``openvino/``, ONNX at the root, ONNX in
``onnx/``. A folder with several candidates at the first place that has any must name one with
``file_name``, unless one of them has the default name (``openvino_model.xml``, ``model.onnx``),
which is the file exporters write next to auxiliary graphs such as ``openvino_tokenizer.xml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from acceleron.errors import AcceleronError, ArtifactNotFoundError

if TYPE_CHECKING:
    import openvino


def ir_name(graph_name: str) -> str:
    """The IR file of a plan's graph: ``openvino_model.xml`` for the main one, as OpenVINO exporters name it."""
    return f"openvino_{graph_name}.xml"


IR_NAME = ir_name("model")
IR_SUFFIX = ".xml"
ONNX_SUFFIX = ".onnx"
ONNX_NAME = "model.onnx"
#: (subfolder, suffix, default name), in search order.
SEARCH_ORDER = (
    ("", IR_SUFFIX, IR_NAME),
    ("openvino", IR_SUFFIX, IR_NAME),
    ("", ONNX_SUFFIX, ONNX_NAME),
    ("onnx", ONNX_SUFFIX, ONNX_NAME),
)


def find_model_file(folder: Path, file_name: str | None = None) -> Path | None:
    """The IR (or ONNX file) to load from ``folder``, or None when it holds none."""
    if file_name is not None:
        for subfolder, _, _ in SEARCH_ORDER:
            candidate = folder / subfolder / file_name
            if candidate.is_file() and candidate.suffix in (IR_SUFFIX, ONNX_SUFFIX):
                return candidate
        return None
    for subfolder, suffix, default in SEARCH_ORDER:
        candidates = sorted((folder / subfolder).glob(f"*{suffix}"))
        if not candidates:
            continue
        if len(candidates) == 1:
            return candidates[0]
        if (folder / subfolder / default).is_file():
            return folder / subfolder / default
        names = ", ".join(path.relative_to(folder).as_posix() for path in candidates)
        raise AcceleronError(f"{folder} holds several {suffix} models ({names}); pass file_name= with the one to load.")
    return None


def weights_file(artifact: Path) -> Path:
    """The ``.bin`` that goes with an IR ``.xml``."""
    return artifact.with_suffix(".bin")


def model_files(artifact: Path) -> list[Path]:
    """Every file the model consists of: IR xml and bin, or an ONNX file and its external data."""
    if artifact.suffix == IR_SUFFIX:
        return [artifact, weights_file(artifact)]
    folder = artifact.parent
    external = {
        folder / f"{artifact.name}.data",
        folder / f"{artifact.name}_data",
        folder / f"{artifact.stem}.data",
        folder / f"{artifact.stem}.onnx_data",
    }
    return [artifact, *sorted(path for path in external if path.is_file())]


def read_model(artifact: Path) -> openvino.Model:
    """Read an IR or ONNX file; a missing ``.bin`` or an unreadable file raises with the cause."""
    from acceleron_openvino.devices import get_core

    if not artifact.is_file():
        raise ArtifactNotFoundError(f"{artifact} does not exist; export the model again with export=True.")
    if artifact.suffix == IR_SUFFIX and not weights_file(artifact).is_file():
        raise ArtifactNotFoundError(
            f"the OpenVINO IR {artifact.name} in {artifact.parent} has no weights file {weights_file(artifact).name} "
            "beside it; copy the .bin next to the .xml, or export again with export=True."
        )
    try:
        return get_core().read_model(str(artifact))
    except RuntimeError as error:
        kind = "OpenVINO IR" if artifact.suffix == IR_SUFFIX else "ONNX model"
        raise AcceleronError(
            f"OpenVINO cannot read the {kind} {artifact} (is it corrupt or truncated?): {error_reason(error)}. "
            "Replace the file, or export again with export=True."
        ) from error


def error_reason(error: Exception) -> str:
    """The informative part of an OpenVINO exception: its last non-empty line (the rest is a C++ trace)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
