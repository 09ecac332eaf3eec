"""A third-party plugin installed as its own distribution passes the conformance suite."""

import pytest

from acceleron.testing import BackendConformance

pytest.importorskip("acceleron_torchscript", reason="nox installs tests/plugins/acceleron-torchscript")


class TestTorchScriptPlugin(BackendConformance):
    backend_name = "jit"
    text_architectures = ("bert", "distilbert")
