"""What a model feeds its graph: declared inputs only (the core fills and drops neutral ones), clear errors."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import SENTENCES, encode, load

from acceleron.errors import AcceleronError
from acceleron.tasks import get_task


@pytest.fixture(scope="module")
def classifier(saved_classifier: Path) -> Any:
    return load(saved_classifier, export=False)


@pytest.fixture(scope="module")
def inputs(saved_classifier: Path) -> dict[str, torch.Tensor]:
    return encode(saved_classifier, SENTENCES)


def test_the_graph_declares_token_type_ids(classifier: Any) -> None:
    assert list(classifier.session.input_names) == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]


def test_missing_token_type_ids_are_filled_with_zeros(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    given = classifier(**inputs).logits
    without = classifier(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert inputs["token_type_ids"].eq(0).all()
    assert torch.equal(without, given)


def test_missing_token_type_ids_match_pytorch_given_zeros(
    classifier: Any, inputs: dict[str, torch.Tensor], tiny_classifier: Path
) -> None:
    reference = get_task("text-classification").load_torch_model(tiny_classifier)
    with torch.inference_mode():
        expected = reference(**inputs).logits
    got = classifier(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_an_input_the_graph_does_not_know_is_refused_by_name(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    position_ids = torch.arange(inputs["input_ids"].shape[1]).expand_as(inputs["input_ids"])
    with pytest.raises(AcceleronError, match=r"takes no input 'position_ids' \(it takes input_ids, attention_mask"):
        classifier(**inputs, position_ids=position_ids)


def test_a_missing_required_input_is_named(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    with pytest.raises(AcceleronError, match="needs the input 'input_ids'"):
        classifier(attention_mask=inputs["attention_mask"])


def test_an_empty_batch_is_refused_by_the_backend(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    empty = {name: tensor[:0] for name, tensor in inputs.items()}
    with pytest.raises(AcceleronError, match=r"input 'input_ids' is an empty batch \(shape \(0, \d+\)\)"):
        classifier.session._forward(empty)


def test_an_empty_batch_through_the_model_raises(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="empty batch"):
        classifier(**{name: tensor[:0] for name, tensor in inputs.items()})


@pytest.fixture(scope="module")
def distilbert(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from acceleron.cache import ExportCache

    folder = tiny_model("text-classification", "distilbert")
    return load(folder, export_cache=ExportCache(tmp_path_factory.mktemp("distil-cache")))


def test_all_zero_token_type_ids_are_dropped_for_a_graph_without_them(distilbert: Any) -> None:
    ids = torch.tensor([[2, 20, 21, 3], [2, 22, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert list(distilbert.session.input_names) == ["input_ids", "attention_mask"]
    plain = distilbert(input_ids=ids, attention_mask=mask).logits
    with_zeros = distilbert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
    assert torch.equal(plain, with_zeros)


def test_segment_ids_are_refused_by_a_graph_without_token_type_ids(distilbert: Any) -> None:
    ids = torch.tensor([[2, 20, 3, 21, 3]])
    segments = torch.tensor([[0, 0, 0, 1, 1]])
    with pytest.raises(AcceleronError, match=r"takes no input 'token_type_ids' \(it takes input_ids, attention_mask\)"):
        distilbert(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=segments)


def test_int32_inputs_are_cast_to_what_the_graph_wants(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    as_int32 = {name: tensor.to(torch.int32) for name, tensor in inputs.items()}
    assert torch.equal(classifier(**as_int32).logits, classifier(**inputs).logits)


class _Recording:
    """Wraps an InferenceSession and remembers the arrays that went in and came out."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.fed: dict[str, np.ndarray] = {}
        self.returned: list[np.ndarray] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray], run_options: Any = None) -> list[np.ndarray]:
        self.fed = feeds
        self.returned = self.session.run(names, feeds, run_options)
        return self.returned

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_tensors_cross_to_numpy_and_back_without_copies(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    recording = _Recording(classifier.session.session)
    session = copy.copy(classifier.session)
    session.session = recording
    outputs = session._forward(inputs)
    assert set(recording.fed) == set(inputs)
    for name, array in recording.fed.items():
        assert np.shares_memory(array, inputs[name].numpy()), name
    assert np.shares_memory(outputs["logits"].numpy(), recording.returned[0])


def test_eight_threads_give_the_serial_results(classifier: Any, saved_classifier: Path) -> None:
    # Batches of different sizes and lengths run at once on the one shared session.
    batches = [encode(saved_classifier, SENTENCES[: 1 + index % len(SENTENCES)]) for index in range(8)]
    serial = [classifier(**batch).logits for batch in batches]
    results: dict[int, list[torch.Tensor]] = {index: [] for index in range(8)}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(index: int) -> None:
        try:
            start.wait()
            for _ in range(5):
                results[index].append(classifier(**batches[index]).logits)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index in range(8):
        assert len(results[index]) == 5
        assert all(torch.equal(result, serial[index]) for result in results[index])


def test_the_io_binding_path_gives_the_plain_run_results(classifier: Any, inputs: dict[str, torch.Tensor]) -> None:
    # IO binding is what CUDA sessions use; on CPU it must give the same results as run().
    bound = copy.copy(classifier.session)
    bound.io_binding = True
    assert classifier.session.io_binding is False
    expected = classifier.session._forward(inputs)["logits"]
    assert torch.equal(bound._forward(inputs)["logits"], expected)
    strided = {**inputs, "input_ids": inputs["input_ids"].T.contiguous().T}
    assert not strided["input_ids"].is_contiguous()
    assert torch.equal(bound._forward(strided)["logits"], expected)
