"""ONNX Runtime deployment: `hf-multiexit export` writes one graph per segment of a trained multi-exit model;
`ORTMultiExitModelForSequenceClassification` runs them inside the same exit loop as PyTorch. Needs the `onnx` extra
(`pip install hf-multiexit[onnx]`: onnx, onnxscript, onnxruntime)."""

from __future__ import annotations

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
except ImportError as err:
    raise ImportError(
        f"hf_multiexit.onnx needs onnx, onnxscript and onnxruntime ({err}); install them with "
        "`pip install hf-multiexit[onnx]`."
    ) from err

from .export import MANIFEST_NAME, ExportArguments, export_model
from .modeling_ort import ORTMultiExitModelForSequenceClassification, session_options

__all__ = ["MANIFEST_NAME", "ExportArguments", "ORTMultiExitModelForSequenceClassification", "export_model", "session_options"]
