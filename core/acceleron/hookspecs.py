"""Hook specifications: the whole plugin surface of acceleron.

A plugin is a module (or object) named by an entry point in the group ``acceleron.backends``;
the entry point's name is the canonical id of the backend it provides. The module implements
hooks with :data:`hookimpl`::

    from acceleron import hookimpl

    @hookimpl
    def acceleron_backends():
        return [MyBackend()]

pluggy lets an implementation take fewer arguments than its spec, so specs grow new arguments
instead of new hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from acceleron.backend import Backend

PROJECT = "acceleron"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def acceleron_backends() -> Sequence[Backend]:
    """Return the backend this plugin provides, as a one-element sequence.

    Called once, when the plugin is first needed (plugins load lazily, by name). The backend's
    ``name`` must equal the entry point name; a mismatch marks the plugin ``load-failed``.
    Must not import the backend's runtime (see :class:`acceleron.Backend`).

    Since 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def acceleron_select_backend(task: str, candidates: Sequence[Backend], model: object) -> Backend | None:
    """Choose the backend for ``pipeline(..., accelerator=None)``.

    :param task: the canonical task name.
    :param candidates: installed backends that are available here, allow ``auto_select`` and
        support ``task``, best first (user priority order, then ``priority``). Never empty.
    :param model: what the user passed as ``model`` (an id, a path, or None).

    Return one of ``candidates``, or None to defer. The first non-None result wins; the core's
    default policy (the first candidate) is registered ``trylast``, so any plugin overrides it.

    Since 0.1.
    """
    raise NotImplementedError
