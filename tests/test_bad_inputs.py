"""Bad input, table by table: what a user can get wrong, and the exact exception each mistake raises.

Through ``pipeline()``, ``OptimizedModel.from_pretrained`` and a model call (the torch reference
backend, so no runtime is needed), and through the ``acceleron`` command (exit code 2, one
``acceleron: error:`` line, never a traceback).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from acceleron import OptimizedModel, pipeline
from acceleron.backend import max_threads
from acceleron.errors import InvalidOptionError
from acceleron.plugins import get_plugin_manager

# ---- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [10**9, max_threads() + 1])
def test_an_absurd_thread_count_is_refused_by_every_backend(threads: int) -> None:
    # torch and IPEX die in libgomp on 10**9 threads (no exception): the core refuses it for all.
    backends = get_plugin_manager().backends()
    assert backends, "at least the torch reference is installed"
    for backend in backends:
        with pytest.raises(InvalidOptionError, match=f"num_threads={threads} is more than this machine can use"):
            backend.parse_options({"num_threads": threads})
    assert get_plugin_manager().get("torch").parse_options({"num_threads": max_threads()}).num_threads == max_threads()


def test_an_absurd_thread_count_is_refused_before_anything_is_exported(tiny_classifier: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(InvalidOptionError, match="at most"):
        pipeline(
            "text-classification",
            model=str(tiny_classifier),
            accelerator="torch",
            accelerator_options={"num_threads": 10**9},
            model_kwargs={"export_cache": str(cache)},
        )
    with pytest.raises(InvalidOptionError, match="at most"):
        OptimizedModel.from_pretrained(tiny_classifier, accelerator="torch", num_threads=10**9, export_cache=cache)
    assert not cache.exists()
