"""Fake backend 'beta' (priority 80, available: True)."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "beta"
    aliases = ("beta-alias",)
    priority = 80
    available = True


@hookimpl
def acceleron_backends():
    return [Backend()]
