"""acceleron.threads: generate()'s torch work on one thread, in the calling thread only."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from acceleron.threads import _openmp, serial_torch_ops

pytestmark = pytest.mark.skipif(_openmp() is None, reason="torch's parallel backend here is not OpenMP")


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_one_thread_inside_only_in_the_calling_thread(two_threads: None) -> None:
    seen: dict[str, int] = {}
    inside = threading.Event()
    leave = threading.Event()

    def generating() -> None:
        with serial_torch_ops():
            seen["generating, inside"] = torch.get_num_threads()
            assert torch.arange(100_000.0).sum().item() == pytest.approx(4_999_950_000.0)
            inside.set()
            leave.wait(10)
        seen["generating, after"] = torch.get_num_threads()

    def started_meanwhile() -> None:
        seen["a thread started meanwhile"] = torch.get_num_threads()

    worker = threading.Thread(target=generating)
    worker.start()
    assert inside.wait(10)
    seen["main, meanwhile"] = torch.get_num_threads()
    other = threading.Thread(target=started_meanwhile)
    other.start()
    other.join()
    leave.set()
    worker.join()
    assert seen == {
        "generating, inside": 1,
        "main, meanwhile": 2,
        "a thread started meanwhile": 2,  # torch.set_num_threads would have left it at 1 for good
        "generating, after": 2,
    }


def test_restored_after_an_error_and_when_nested(two_threads: None) -> None:
    with pytest.raises(RuntimeError, match="boom"), serial_torch_ops():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with serial_torch_ops():
        with serial_torch_ops():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
