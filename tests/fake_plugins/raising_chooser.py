"""A backend plugin whose selection hook raises (and a policy object that does the same)."""

from acceleron import hookimpl

from .common import FakeBackend


class Backend(FakeBackend):
    name = "raising_chooser"
    priority = 10


class RaisingPolicy:
    @hookimpl
    def acceleron_select_backend(self, candidates):
        raise ZeroDivisionError("policy exploded")


class NonCandidatePolicy:
    @hookimpl
    def acceleron_select_backend(self, candidates):
        return "ort"  # not a Backend, let alone one of the candidates


@hookimpl
def acceleron_backends():
    return [Backend()]


@hookimpl
def acceleron_select_backend(task, candidates):
    raise ValueError(f"selection for {task} exploded")
