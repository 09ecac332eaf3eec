"""A backend whose priority is a string: sorting the backends must not break on it."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "bad_priority"
    priority = "high"  # type: ignore[assignment]


@hookimpl
def acceleron_backends():
    return [Backend()]
