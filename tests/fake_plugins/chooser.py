"""A selection policy plugin: always picks the lowest-priority candidate."""

from acceleron import hookimpl


class LowestPriorityPolicy:
    @hookimpl
    def acceleron_select_backend(self, candidates):
        return min(candidates, key=lambda backend: backend.priority)
