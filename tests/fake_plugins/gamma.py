"""Fake backend 'gamma' (priority 90, available: False)."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "gamma"
    aliases = ("gamma-alias",)
    priority = 90
    available = False


@hookimpl
def acceleron_backends():
    return [Backend()]
