"""Plan and write: selection of what to quantize, per-layer precision, the one planner
(`planner`), the plan it produces (`plan`) and the one writer (`write`, with `qdq` and `half`)."""

from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.exporter.write import write

__all__ = ["QuantPlan", "TensorQuant", "write"]
