"""A backend named ``ort`` from a distribution that is not acceleron-ort: it must never replace the real one."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "ort"
    priority = 10_000


@hookimpl
def acceleron_backends():
    return [Backend()]
