"""The built-in torch reference backend passes the conformance suite plugins run."""

from acceleron.testing import BackendConformance


class TestTorchReference(BackendConformance):
    backend_name = "torch"
