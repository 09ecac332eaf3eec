"""A backend whose export crashes after writing part of its files."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "failing"
    fail_export = True


@hookimpl
def acceleron_backends():
    return [Backend()]
