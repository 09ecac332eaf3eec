"""availability() never returns (within any test's patience): a stuck metadata call, a network mount."""

import threading

from acceleron import hookimpl

from .common import FakeBackend

RELEASE = threading.Event()  # a test may set it to let the abandoned thread finish


class Backend(FakeBackend):
    name = "hanging_availability"
    priority = 1000

    def availability(self):
        RELEASE.wait(120)
        return super().availability()


@hookimpl
def acceleron_backends():
    return [Backend()]
