"""availability() raises: a plugin bug that must not break selection for the other backends."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "raising_availability"
    priority = 1000  # would win if it were not contained

    def availability(self):
        raise RuntimeError("availability exploded")


@hookimpl
def acceleron_backends():
    return [Backend()]
