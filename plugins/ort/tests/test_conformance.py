"""The ort backend passes acceleron's conformance suite on tiny BERT, RoBERTa, DistilBERT, ViT and wav2vec2."""

from acceleron.testing import BackendConformance


class TestOrtConformance(BackendConformance):
    backend_name = "ort"
    text_architectures = ("bert", "roberta", "distilbert")
