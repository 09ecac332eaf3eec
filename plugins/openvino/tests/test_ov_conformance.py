"""acceleron's conformance suite, run against the ``ov`` backend."""

from __future__ import annotations

import pytest

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


class TestOpenVINOInt4(BackendConformance):
    """dtype="int4" (NNCF 4-bit weight compression, needs the int8 extra): exports, validates and runs;
    shapes and behaviour only (the float32 class checks tokens). One architecture per modality that has
    MatMuls to compress; the vision and sentence checks compare float32 results exactly."""

    backend_name = "ov"
    options = {"dtype": "int4"}
    text_architectures = ("bert",)
    image_architectures = ()
    audio_architectures = ()
    speech_architectures = ()
    vision_tasks = ()
    sentence_cases = ()
    seq2seq_architectures = ("t5", "whisper")
    # Pipeline scores of 4-bit weights against stock float32 transformers; labels must still agree.
    pipeline_atol = 0.1

    @pytest.fixture(autouse=True)
    def _needs_nncf(self) -> None:
        pytest.importorskip("nncf", reason="dtype='int4' needs the int8 extra (NNCF)")
