"""The module the ``ort`` entry point names: registers :class:`~acceleron_ort.OrtBackend`."""

from __future__ import annotations

from acceleron.backend import Backend
from acceleron.hookspecs import hookimpl
from acceleron_ort.backend import OrtBackend


@hookimpl
def acceleron_backends() -> list[Backend]:
    return [OrtBackend()]
