"""supported_tasks() raises."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "raising_tasks"
    priority = 1000

    def supported_tasks(self):
        raise KeyError("tasks exploded")


@hookimpl
def acceleron_backends():
    return [Backend()]
