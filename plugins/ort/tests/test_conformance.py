"""The ort backend passes acceleron's conformance suite on tiny BERT, RoBERTa, DistilBERT, ViT and wav2vec2."""

from acceleron.testing import BackendConformance


class TestOrtConformance(BackendConformance):
    backend_name = "ort"
    text_architectures = ("bert", "roberta", "distilbert")


class TestOrtInt4(BackendConformance):
    """dtype="int4" (weight-only 4-bit ``MatMulNBits``): exports, validates and runs; shapes and behaviour
    only (greedy tokens are compared with PyTorch in float32, above). One architecture per modality
    that has MatMuls to quantise; the vision and sentence checks compare float32 results exactly."""

    backend_name = "ort"
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
