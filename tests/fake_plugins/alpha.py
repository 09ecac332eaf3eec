"""Fake backend 'alpha' (priority 50, available: True)."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "alpha"
    aliases = ("alpha-alias",)
    priority = 50
    available = True


@hookimpl
def acceleron_backends():
    return [Backend()]
