"""Which ONNX operators run in integer in ONNX Runtime, and how each one is quantized.

One table, read by node selection and by the plan builder. Roles:
- WEIGHTED: activation input(s) and a constant weight (QLinearConv, QGemm, QLinearMatMul/
  MatMulIntegerToFloat after ORT's QDQ fusion);
- ELEMENTWISE: two activation inputs, own output range (QLinearAdd, QLinearMul);
- OWN_RANGE: activation inputs, own output range (QLinearAveragePool, QLinearGlobalAveragePool,
  QLinearConcat);
- SHARED_RANGE: data movement whose output reuses the input's scale and zero-point, so ONNX Runtime
  drops the Q/DQ pair and moves integers (MaxPool, Reshape, Flatten, Transpose, ...).
Relu and Clip(0, c) directly after a quantized operator are folded: a uint8 quantizer with zero
point 0 clips at zero exactly as Relu does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import onnx

from edgequant.graph.index import attribute


class Role(enum.Enum):
    WEIGHTED = "weighted"
    ELEMENTWISE = "elementwise"
    OWN_RANGE = "own_range"
    SHARED_RANGE = "shared_range"


@dataclass(frozen=True)
class OpRule:
    role: Role
    data_inputs: tuple[int, ...] | None = (0,)  # None: every input
    weight_input: int | None = None
    bias_input: int | None = None


OP_RULES: dict[str, OpRule] = {
    "Conv": OpRule(Role.WEIGHTED, (0,), weight_input=1, bias_input=2),
    "Gemm": OpRule(Role.WEIGHTED, (0,), weight_input=1, bias_input=2),
    "MatMul": OpRule(Role.WEIGHTED, (0,), weight_input=1),
    "Add": OpRule(Role.ELEMENTWISE, (0, 1)),
    "Mul": OpRule(Role.ELEMENTWISE, (0, 1)),
    "AveragePool": OpRule(Role.OWN_RANGE),
    "GlobalAveragePool": OpRule(Role.OWN_RANGE),
    "Concat": OpRule(Role.OWN_RANGE, None),
    "MaxPool": OpRule(Role.SHARED_RANGE),
    "Reshape": OpRule(Role.SHARED_RANGE),
    "Flatten": OpRule(Role.SHARED_RANGE),
    "Transpose": OpRule(Role.SHARED_RANGE),
    "Squeeze": OpRule(Role.SHARED_RANGE),
    "Unsqueeze": OpRule(Role.SHARED_RANGE),
}
FOLDABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})


def plain_gemm(node: onnx.NodeProto) -> bool:
    """A Gemm that is x @ W (+ b): no transA, alpha and beta 1. Only these fuse into ORT's
    integer kernels or rewrite as MatMul; others stay float."""
    return not (
        attribute(node, "transA", 0)
        or attribute(node, "alpha", 1.0) != 1.0
        or attribute(node, "beta", 1.0) != 1.0
    )


# A calibrated range beyond this is a sentinel (attention masks add -3.4e38), not a signal:
# quantizing it would give scales of 1e36 and destroy the model, as ORT's quantizer does.
RANGE_LIMIT = 1e10
