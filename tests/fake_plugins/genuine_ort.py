"""Stands in for acceleron-ort's plugin module (a backend named ``ort``) in the reserved-name tests."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "ort"
    priority = 200


@hookimpl
def acceleron_backends():
    return [Backend()]
