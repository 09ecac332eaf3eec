"""Progress lines for long work (exports), on stderr unless the application configured logging.

Set ``ACCELERON_PROGRESS=0`` to silence them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("acceleron.progress")
_configured = False


def _ensure_handler() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    if os.environ.get("ACCELERON_PROGRESS", "1").strip().lower() in {"0", "false", "no", "off"}:
        logger.disabled = True
        return
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("acceleron: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def note(message: str) -> None:
    """One progress line."""
    _ensure_handler()
    logger.info(message)


@contextmanager
def stage(message: str) -> Iterator[None]:
    """Report the start of a stage and, when it ends, how long it took."""
    _ensure_handler()
    logger.info("%s ...", message)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        logger.info("%s: failed after %.1fs", message, time.perf_counter() - started)
        raise
    logger.info("%s: done in %.1fs", message, time.perf_counter() - started)
