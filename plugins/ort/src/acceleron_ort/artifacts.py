"""Finding ONNX files in a model folder, and the external data files they reference.

A folder may hold ``model.onnx`` at its root (what acceleron writes) or in an ``onnx/`` subfolder
(the sentence-transformers layout, where ``onnx/`` often holds several variants). Only the
stdlib is imported at module level; :func:`external_data_files` imports onnx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from acceleron.errors import ArtifactNotFoundError

if TYPE_CHECKING:
    import onnx

DEFAULT_FILE_NAME = "model.onnx"
SUBFOLDER = "onnx"
#: Prefix of the ``metadata_props`` acceleron writes (dtype, exporter, ...): read at load without parsing the graph.
METADATA_PREFIX = "acceleron."
#: A fused decoder's input that keeps only the last positions' logits (0: all of them); beyond the
#: flat protocol, so the session feeds it and the core never sees it (:mod:`acceleron_ort.decoder_graph`).
KEEP_INPUT = "logits_to_keep"


def onnx_files(folder: Path) -> list[Path]:
    """Every ``.onnx`` file at the root of ``folder`` and in its ``onnx/`` subfolder."""
    found: list[Path] = []
    for base in (folder, folder / SUBFOLDER):
        if base.is_dir():
            found.extend(sorted(path for path in base.glob("*.onnx") if path.is_file()))
    return found


def _listing(folder: Path, files: list[Path]) -> str:
    return ", ".join(path.relative_to(folder).as_posix() for path in files)


def find_onnx(folder: Path, file_name: str | None = None) -> Path | None:
    """The ONNX file to load from ``folder``, or None when it holds none.

    With ``file_name``, that file (at the root or under ``onnx/``). Otherwise ``model.onnx`` at the
    root, then ``onnx/model.onnx``, then the only ``.onnx`` file there is. Several candidates and
    no ``model.onnx``, or a ``file_name`` that matches none of several files, raise
    :class:`~acceleron.errors.ArtifactNotFoundError` listing them.
    """
    candidates = onnx_files(folder)
    if file_name:
        for base in (folder, folder / SUBFOLDER):
            path = base / file_name
            if path.is_file():
                return path
        if candidates and file_name.endswith(".onnx"):
            raise ArtifactNotFoundError(
                f"{folder} has no ONNX file named {file_name!r}; it has: {_listing(folder, candidates)}. "
                "Pass one of these as file_name."
            )
        return None
    for path in (folder / DEFAULT_FILE_NAME, folder / SUBFOLDER / DEFAULT_FILE_NAME):
        if path.is_file():
            return path
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ArtifactNotFoundError(
            f"{folder} holds several ONNX files and none is named {DEFAULT_FILE_NAME}: "
            f"{_listing(folder, candidates)}. Choose one with file_name=... "
            "(pipeline(..., model_kwargs={'file_name': ...}) or from_pretrained(..., file_name=...))."
        )
    return None


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``graph``: initializers and constant attributes, subgraphs included."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            yield from attribute.tensors
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def external_locations(model: onnx.ModelProto) -> set[str]:
    """The relative paths of the external data files ``model`` refers to."""
    import onnx

    locations = set()
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def external_data_files(artifact: Path) -> list[Path]:
    """The external data files next to ``artifact`` that it references (empty when its weights are inline)."""
    import onnx

    try:
        model = onnx.load(str(artifact), load_external_data=False)
    except Exception:  # an unreadable file has no data files we could name; loading it reports the cause
        return []
    folder = artifact.parent
    return sorted(folder / location for location in external_locations(model) if (folder / location).is_file())
