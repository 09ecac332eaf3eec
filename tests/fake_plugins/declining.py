"""Fake backend 'declining': every task of the table but one, which it declares with its reason."""

from acceleron import Backend as CoreBackend
from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "declining"
    priority = 40
    unsupported_tasks = {"fill-mask": "its runtime lacks the vocabulary projection"}
    supported_tasks = CoreBackend.supported_tasks  # the table less the declared tasks


@hookimpl
def acceleron_backends():
    return [Backend()]
