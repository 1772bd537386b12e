"""The one exporter: float ONNX graph + per-tensor quantization parameters -> QDQ ONNX."""

from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.exporter.qdq import export_qdq

__all__ = ["QuantPlan", "TensorQuant", "export_qdq"]
