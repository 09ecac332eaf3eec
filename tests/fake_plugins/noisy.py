"""A backend whose outputs are off by 0.5: validation must catch it."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "noisy"
    noise = 0.5


@hookimpl
def acceleron_backends():
    return [Backend()]
