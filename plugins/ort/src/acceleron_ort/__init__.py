"""acceleron-ort: the ONNX Runtime backend of acceleron (accelerator ``"ort"``, alias ``"onnxruntime"``).

Importing this package is cheap: onnxruntime, onnx, torch and transformers load only when a model
is exported or loaded. Users rarely import it; ``acceleron.pipeline(..., accelerator="ort")`` finds
it through its entry point.
"""

from __future__ import annotations

from acceleron_ort.options import OrtOptions
from acceleron_ort.plugin import OrtBackend

__version__ = "0.1.0"

__all__ = ["OrtBackend", "OrtOptions", "__version__"]
