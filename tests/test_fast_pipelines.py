"""Length-sorted batching: fewer padded tokens, the same results in the caller's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import transformers

from acceleron import pipeline
from acceleron.fast_pipelines import LengthSortedTextClassificationPipeline
from acceleron.testing import WORDS, outputs_close

SENTENCES = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(1 + (i * 7) % 23)) for i in range(40)]


def _record_lengths(pipe: Any) -> list[int]:
    lengths: list[int] = []
    forward = pipe.model.forward

    def recording(**inputs: Any) -> Any:
        lengths.append(int(inputs["input_ids"].shape[1]))
        return forward(**inputs)

    pipe.model.forward = recording
    return lengths


def test_text_classification_gets_the_length_sorted_class(tiny_classifier: Path) -> None:
    pipe = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    assert type(pipe) is LengthSortedTextClassificationPipeline
    stock = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch", length_sorted=False)
    assert type(stock) is transformers.TextClassificationPipeline


@pytest.mark.parametrize(
    "kwargs", [{}, {"top_k": None}, {"function_to_apply": "sigmoid"}, {"truncation": True, "max_length": 6}]
)
def test_results_equal_the_stock_pipeline_in_the_callers_order(tiny_classifier: Path, kwargs: dict) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    expected = stock(SENTENCES, batch_size=8, **kwargs)
    got = ours(SENTENCES, batch_size=8, **kwargs)
    assert outputs_close(got, expected, atol=1e-6)


def test_batches_are_padded_less(tiny_classifier: Path) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    stock = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch", length_sorted=False)
    sorted_lengths, stock_lengths = _record_lengths(ours), _record_lengths(stock)
    ours(SENTENCES, batch_size=8)
    stock(SENTENCES, batch_size=8)
    assert sorted_lengths == sorted(sorted_lengths)
    assert sum(sorted_lengths) < sum(stock_lengths)


def test_single_inputs_and_unbatched_calls_take_the_stock_path(tiny_classifier: Path) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    assert outputs_close(ours(SENTENCES[3]), stock(SENTENCES[3]), atol=1e-6)
    assert outputs_close(ours(SENTENCES[:5]), stock(SENTENCES[:5]), atol=1e-6)
    pair = {"text": "great film", "text_pair": "bad plot"}
    assert outputs_close(ours([pair, pair, pair], batch_size=2), stock([pair, pair, pair], batch_size=2), atol=1e-6)


def test_a_batch_size_given_at_construction_is_used(tiny_classifier: Path) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch", batch_size=8)
    lengths = _record_lengths(ours)
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    assert outputs_close(ours(SENTENCES), stock(SENTENCES, batch_size=8), atol=1e-6)
    assert len(lengths) == 5 and lengths == sorted(lengths)


def test_a_callers_padding_wins(tiny_classifier: Path) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    lengths = _record_lengths(ours)
    ours(SENTENCES[:16], batch_size=8, padding="max_length", max_length=32, truncation=True)
    assert lengths == [32, 32]


def test_batches_padded_from_one_tokenisation_equal_the_tokenizers_padding(tiny_classifier: Path) -> None:
    from acceleron.fast_pipelines import _pad_values, _padded

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_classifier))
    encoded = tokenizer(SENTENCES, truncation=True)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    pad_values = _pad_values(tokenizer, encoded, {"truncation": True})
    assert pad_values is not None and set(pad_values) == set(encoded.keys())
    chunk = [3, 0, 17, 9, 25]
    expected = tokenizer([SENTENCES[i] for i in chunk], padding=True, truncation=True, return_tensors="pt")
    got = _padded(encoded, chunk, lengths, pad_values)
    assert set(got) == set(expected.keys())
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and got[key].equal(tensor), key


def test_left_padding_tokenizers_take_the_stock_path(tiny_classifier: Path) -> None:
    # Left padding moves BERT's tokens to other positions, so regrouping the batches would change scores.
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    ours.tokenizer.padding_side = stock.tokenizer.padding_side = "left"
    lengths = _record_lengths(ours)
    assert outputs_close(ours(SENTENCES, batch_size=8), stock(SENTENCES, batch_size=8), atol=1e-6)
    assert lengths != sorted(lengths)


def test_a_padding_it_cannot_reproduce_is_left_to_the_tokenizer(tiny_classifier: Path) -> None:
    from acceleron.fast_pipelines import _pad_values

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_classifier))
    encoded = tokenizer(SENTENCES[:3])
    assert _pad_values(tokenizer, encoded, {"padding": "max_length", "max_length": 32}) is None
    assert _pad_values(tokenizer, encoded, {"pad_to_multiple_of": 8}) is None
    tokenizer.pad_token = None
    assert _pad_values(tokenizer, encoded, {}) is None


@pytest.mark.parametrize("kwargs", [{}, {"function_to_apply": "sigmoid"}, {"function_to_apply": "none"}])
def test_batched_scores_are_exactly_the_stock_postprocess(tiny_classifier: Path, kwargs: dict) -> None:
    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    per_row = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    per_row._top_labels = lambda logits, score, params: None  # type: ignore[method-assign]
    calls = []
    postprocess = ours.postprocess
    ours.postprocess = lambda *args, **kw: calls.append(1) or postprocess(*args, **kw)  # type: ignore[method-assign]
    got = ours(SENTENCES, batch_size=8, **kwargs)
    assert got == per_row(SENTENCES, batch_size=8, **kwargs)  # same batches, same logits: equal floats
    assert len(calls) == 5  # one stock check per batch of 8, not one call per sentence
    stock = transformers.pipeline("text-classification", model=str(tiny_classifier))
    assert outputs_close(got, stock(SENTENCES, batch_size=8, **kwargs), atol=1e-6)


def test_a_scoring_rule_that_disagrees_with_transformers_falls_back(
    tiny_classifier: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acceleron.fast_pipelines as fast

    ours = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    per_row = pipeline("text-classification", model=str(tiny_classifier), accelerator="torch")
    per_row._top_labels = lambda logits, score, params: None  # type: ignore[method-assign]
    monkeypatch.setattr(fast, "_batch_scoring", lambda config, params: lambda values: -values)
    assert ours(SENTENCES, batch_size=8) == per_row(SENTENCES, batch_size=8)
