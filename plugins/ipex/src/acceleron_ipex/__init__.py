"""acceleron-ipex: the ``ipex`` accelerator for acceleron (IPEX when it matches torch, else PyTorch's CPU path).

Use it through ``acceleron.pipeline(..., accelerator="ipex")``; this package exposes the backend class
for plugin authors and tests. Importing it imports neither torch nor IPEX.
"""

from __future__ import annotations

from acceleron_ipex.plugin import IpexBackend

__version__ = "0.1.0"
__all__ = ["IpexBackend", "__version__"]
