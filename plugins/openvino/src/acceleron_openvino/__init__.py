"""acceleron-openvino: the ``ov`` backend of acceleron (OpenVINO IR, exported straight from PyTorch).

Installed, it registers itself through the ``acceleron.backends`` entry point; use it with
``acceleron.pipeline(..., accelerator="ov")`` (or ``"openvino"``), or pick it automatically with
``accelerator=None``. Importing this package imports neither OpenVINO nor torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
