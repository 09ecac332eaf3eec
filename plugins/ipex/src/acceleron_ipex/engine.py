"""Which engine runs: real IPEX or PyTorch's own CPU path, decided from package metadata alone.

Importing intel-extension-for-pytorch next to a torch of another minor version crashes the
process, so the choice is made from installed versions *before* anything is imported: the
``ipex`` engine only when IPEX's major.minor equals torch's, the ``torch`` engine otherwise.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from acceleron.backend import distribution_version

logger = logging.getLogger("acceleron_ipex")

IPEX_DISTRIBUTIONS = ("intel-extension-for-pytorch", "intel_extension_for_pytorch")
ENGINES = ("torch", "ipex")

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")
_warned = False
_warn_lock = threading.Lock()


@dataclass(frozen=True)
class EngineChoice:
    """The engine that runs here and why, with the versions it was decided from."""

    engine: str
    reason: str
    torch_version: str | None
    ipex_version: str | None

    @property
    def ipex_usable(self) -> bool:
        """True when IPEX is installed and matches torch (importing it is safe)."""
        return self.engine == "ipex"


def major_minor(version: str | None) -> tuple[int, int] | None:
    """``(2, 8)`` for ``"2.8.0+cpu"``; None when the text is not a version."""
    match = _VERSION.match(version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def choose_engine() -> EngineChoice:
    """Decide the engine from the installed torch and IPEX versions. Imports neither."""
    torch_version = distribution_version("torch")
    ipex_version = distribution_version(*IPEX_DISTRIBUTIONS)
    if torch_version is None:
        return EngineChoice("torch", "torch is not installed.", None, ipex_version)
    if ipex_version is None:
        reason = f"intel-extension-for-pytorch is not installed: using the torch engine (PyTorch {torch_version})."
        return EngineChoice("torch", reason, torch_version, None)
    ipex_mm, torch_mm = major_minor(ipex_version), major_minor(torch_version)
    if ipex_mm is None or ipex_mm != torch_mm:
        shown = ".".join(map(str, ipex_mm)) if ipex_mm else ipex_version
        torch_shown = ".".join(map(str, torch_mm)) if torch_mm else torch_version
        reason = (
            f"IPEX {shown} installed but torch is {torch_shown}: using the torch engine "
            f"(IPEX imports only next to torch {shown})."
        )
        return EngineChoice("torch", reason, torch_version, ipex_version)
    reason = f"IPEX {ipex_version} matches torch {torch_version}: using the ipex engine."
    return EngineChoice("ipex", reason, torch_version, ipex_version)


def resolve_engine(requested: str, choice: EngineChoice) -> str:
    """The engine for an ``engine`` option (``auto``, ``torch`` or ``ipex``) given what is installed."""
    from acceleron.errors import InvalidOptionError

    if requested == "auto":
        return choice.engine
    if requested not in ENGINES:
        raise InvalidOptionError(f"engine must be one of auto, {', '.join(ENGINES)}; got {requested!r}.")
    if requested == "ipex" and not choice.ipex_usable:
        raise InvalidOptionError(
            f"engine='ipex' cannot run here: {choice.reason} Install intel-extension-for-pytorch with a "
            "matching torch (pip install 'torch==2.8.*' 'intel-extension-for-pytorch==2.8.*'), "
            "or pass engine='auto'."
        )
    return requested


def warn_once(engine: str, choice: EngineChoice) -> None:
    """Log, once per process, that upstream IPEX is retired and which engine runs."""
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    detail = "" if engine == choice.engine else f" (engine={engine!r} was asked for)"
    logger.warning(
        "acceleron[ipex]: Intel has retired intel-extension-for-pytorch (2.8 is the last release); "
        "running the %r engine%s. %s",
        engine,
        detail,
        choice.reason,
    )
