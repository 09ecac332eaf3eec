"""acceleron's conformance suite, run against the ``ov`` backend."""

from __future__ import annotations

from acceleron.testing import BackendConformance


class TestOpenVINOFloat32(BackendConformance):
    """float32: tiny models of three text architectures, a ViT and a wav2vec2 match PyTorch within 1e-4."""

    backend_name = "ov"
    options = {"dtype": "float32"}
    text_architectures = ("bert", "roberta", "distilbert")


class TestOpenVINODefaultDtype(BackendConformance):
    """OpenVINO's default precision (bfloat16 on AMX CPUs): validated at that precision's tolerance."""

    backend_name = "ov"
    seq2seq_architectures = ("t5", "whisper")  # reduced precision: shapes, not tokens; the float32 class checks all
    options = {}
    text_architectures = ("bert",)
    # Pipeline scores against stock float32 transformers; labels must still agree exactly.
    pipeline_atol = 2e-2
