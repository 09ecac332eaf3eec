"""Finding and listing the artifact on disk: a frozen TorchScript module or the weights, plus a JSON recipe.

``model.ipex.pt``             traced and frozen TorchScript (``kind="torchscript"``), or
``model.ipex.safetensors``    the float32 weights, rebuilt at load time (``kind="weights"``: torch.compile,
                              or a model whose trace does not generalise to other shapes);
``ipex_recipe.json``          how to load and run it: inputs, outputs, engine, dtype, compile mode.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from acceleron.errors import AcceleronError

TORCHSCRIPT_FILE = "model.ipex.pt"
WEIGHTS_FILE = "model.ipex.safetensors"
RECIPE_FILE = "ipex_recipe.json"
FORMAT = 1
KINDS = ("torchscript", "weights")


@dataclass(frozen=True)
class Recipe:
    """How an artifact was made and how to run it."""

    kind: str
    engine: str
    dtype: str
    inputs: list[str]
    outputs: list[str]
    task: str
    auto_class: str
    compile: str | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    #: Why the weights were saved instead of a trace (empty for traces and compile mode).
    note: str = ""
    #: The core plan's graph this artifact holds ("" for the main one; ``decoder`` of an encoder-decoder, say).
    graph: str = ""
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def write_recipe(folder: Path, recipe: Recipe) -> Path:
    path = folder / RECIPE_FILE
    path.write_text(recipe.to_json() + "\n", encoding="utf-8")
    return path


def read_recipe(folder: Path) -> Recipe:
    """The recipe next to an artifact; raises :class:`AcceleronError` saying how to get a good one."""
    path = folder / RECIPE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AcceleronError(
            f"cannot read the ipex recipe {path} ({error}); export the model again with export=True."
        ) from error
    if data.get("format") != FORMAT or data.get("kind") not in KINDS:
        raise AcceleronError(
            f"{path} is an ipex recipe of an unknown format ({data.get('format')!r}, kind {data.get('kind')!r}); "
            "upgrade acceleron-ipex or export the model again with export=True."
        )
    known = set(Recipe.__dataclass_fields__)
    return Recipe(**{key: value for key, value in data.items() if key in known})


def artifact_file(kind: str) -> str:
    """The file name of an artifact of ``kind``."""
    return TORCHSCRIPT_FILE if kind == "torchscript" else WEIGHTS_FILE


def find_artifact(folder: Path, file_name: str | None = None) -> Path | None:
    """The ipex artifact in ``folder``, or None. The recipe next to it names the file, so stale files never win."""
    if not (folder / RECIPE_FILE).is_file():
        return None
    if file_name:
        path = folder / file_name
        return path if path.is_file() else None
    path = folder / artifact_file(read_recipe(folder).kind)
    return path if path.is_file() else None


def artifact_files(artifact: Path) -> list[Path]:
    """The artifact's files: the module or weights, the recipe next to it (and the config weights are rebuilt with)."""
    config = artifact.parent / "config.json"
    extra = [config] if artifact.name == WEIGHTS_FILE and config.is_file() else []
    return [artifact, artifact.parent / RECIPE_FILE, *extra]
