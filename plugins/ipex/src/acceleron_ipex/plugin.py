"""The entry point module of the ``ipex`` backend (``acceleron.backends`` -> ``ipex``)."""

from __future__ import annotations

from acceleron import hookimpl
from acceleron.backend import Backend
from acceleron_ipex.backend import IpexBackend


@hookimpl
def acceleron_backends() -> list[Backend]:
    """The ``ipex`` backend. Imports neither torch nor IPEX."""
    return [IpexBackend()]
