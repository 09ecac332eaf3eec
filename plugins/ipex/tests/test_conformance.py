"""The acceleron conformance suite for the ``ipex`` backend: float32, the default dtype, and bfloat16."""

from __future__ import annotations

from acceleron.testing import BackendConformance

ARCHITECTURES = ("bert", "roberta", "distilbert")


class TestIpexFloat32(BackendConformance):
    """float32: a frozen TorchScript trace that matches PyTorch (tolerance 1e-4 here, 1e-5 in test_exactness)."""

    backend_name = "ipex"
    text_architectures = ARCHITECTURES
    options = {"dtype": "float32"}


class TestIpexDefaultDtype(BackendConformance):
    """dtype='auto': bfloat16 on CPUs with AMX or AVX-512-BF16, float32 elsewhere."""

    backend_name = "ipex"
    seq2seq_architectures = ("t5", "whisper")  # reduced precision: shapes, not tokens; the float32 class checks all
    text_architectures = ARCHITECTURES
    pipeline_atol = 0.02  # scores of bfloat16 logits; labels must still agree


class TestIpexBfloat16(BackendConformance):
    """bfloat16 asked for explicitly, so the bfloat16 path runs on every CPU."""

    backend_name = "ipex"
    seq2seq_architectures = ("t5", "whisper")  # reduced precision: shapes, not tokens; the float32 class checks all
    text_architectures = ("bert",)
    options = {"dtype": "bfloat16"}
    pipeline_atol = 0.02
