"""``generate()``'s own torch work on one thread, while the backend's runtime computes on its own threads.

``generate()`` runs a few torch operations per token around the backend's step: an argmax or a
sample over the vocabulary, logits processors, the end-of-sequence check. A vocabulary of 49,152
scores is above ATen's grain size, so each of them starts an OpenMP parallel region on torch's
threads. On a busy machine a region waits for every one of its threads to get a core, and torch's
threads compete with the runtime's own (OpenVINO's, ONNX Runtime's) for the same cores. Measured on
a 2-core Xeon with another job beside it (SmolLM2-135M, OpenVINO int4, 2 runtime threads, ms per
token): the runtime's step alone 17, ``generate()`` 78 with torch on 2 threads, 21 with torch on 1.

:func:`serial_torch_ops` sets the calling thread's OpenMP team size to 1 for the duration and puts it
back. It calls the OpenMP runtime torch loaded (``omp_set_num_threads``), which changes only the
calling thread's setting. ``torch.set_num_threads`` also changes a process-wide default, so a thread
whose first torch operation happens meanwhile would keep one thread for good. Where torch's parallel
backend is not OpenMP, or its runtime cannot be found, it changes nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


@functools.cache
def _openmp() -> ctypes.CDLL | None:
    """torch's OpenMP runtime, already loaded in this process, or None."""
    import torch

    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    folder = Path(torch.__file__).parent / "lib"
    candidates = sorted(folder.glob("libgomp*.so*")) + sorted(folder.glob("libiomp5*.so*"))
    # RTLD_NOLOAD: only a library torch has loaded already (the one its threads run on), never a second copy.
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1)
    for path in candidates:
        try:
            library = ctypes.CDLL(str(path), mode=mode)
            get, set_ = library.omp_get_max_threads, library.omp_set_num_threads
        except (OSError, AttributeError):
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        set_.restype, set_.argtypes = None, [ctypes.c_int]
        # The same runtime as torch's: its setting is what torch reads.
        if get() == torch.get_num_threads():
            return library
    logger.debug("acceleron: torch's OpenMP runtime not found in %s; generate() keeps torch's threads", folder)
    return None


@contextmanager
def serial_torch_ops() -> Iterator[None]:
    """Run the calling thread's torch operations on one thread inside the block (other threads keep theirs)."""
    import torch

    library = _openmp()
    # torch first: in a thread that has not used its threads yet, this is where torch sets them up
    # (from its process-wide default), which would otherwise undo the setting below at the first op.
    previous = torch.get_num_threads()
    if library is None or previous == 1:
        yield
        return
    library.omp_set_num_threads(1)
    try:
        yield
    finally:
        library.omp_set_num_threads(previous)
