"""Apply bias correction (`algorithms.bias_correction`) to the weighted nodes of an ONNX graph.

The input means come from the same calibration pass that measures activation ranges. A Conv or
Gemm without a bias gets one (it is free: the integer kernel adds an int32 bias anyway); MatMul
has no bias input and is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from edgequant.algorithms.bias_correction import conv_output_shift, matmul_output_shift
from edgequant.graph.index import GraphIndex, attribute

# node, its float weight -> the weight after quantization and dequantization
QuantizedWeight = Callable[[onnx.NodeProto, NDArray[np.float32]], NDArray[np.float32]]


def correctable(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """Conv and plain Gemm nodes with constant float32 weights and a float32 data input."""
    if node.op_type not in ("Conv", "Gemm") or not index.is_constant(node.input[1]):
        return False
    if node.op_type == "Gemm" and (
        attribute(node, "transA", 0)
        or attribute(node, "alpha", 1.0) != 1.0
        or attribute(node, "beta", 1.0) != 1.0
    ):
        return False
    return index.array(node.input[1]).dtype == np.float32


def correct_biases(
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    means: dict[str, NDArray[np.float64]],
    quantized_weight: QuantizedWeight,
) -> int:
    """Subtract each node's expected output shift from its bias, in place; returns the count."""
    index = GraphIndex.of(graph)
    corrected = 0
    for node in nodes:
        mean = means.get(node.input[0])
        if mean is None or not correctable(node, index):
            continue
        w = index.array(node.input[1]).astype(np.float32)
        error = quantized_weight(node, w) - w
        if node.op_type == "Conv":
            shift = conv_output_shift(error, mean, int(attribute(node, "group", 1)))  # type: ignore[arg-type]
        else:
            error_kn = error.T if attribute(node, "transB", 0) else error  # (N, K) -> (K, N)
            shift = matmul_output_shift(error_kn, mean)
        _set_bias(graph, index, node, shift)
        corrected += 1
    return corrected


def _set_bias(
    graph: onnx.GraphProto, index: GraphIndex, node: onnx.NodeProto, shift: NDArray[np.float32]
) -> None:
    inits = {i.name: i for i in graph.initializer}
    has_bias = len(node.input) > 2 and bool(node.input[2])
    if has_bias and (
        node.input[2] not in inits or len(index.consumers.get(node.input[2], [])) != 1
    ):
        return  # a shared bias, or one computed in the graph, is not ours to change
    old = index.array(node.input[2]).astype(np.float32) if has_bias else np.zeros_like(shift)
    if old.shape != shift.shape:
        return  # a broadcast Gemm bias (shape (1,) or (M, N)): leave it
    name = node.input[2] if has_bias else f"{node.name}_bias_corrected"
    tensor = numpy_helper.from_array((old - shift).astype(np.float32), name)
    if has_bias:
        inits[name].CopyFrom(tensor)
        return
    graph.initializer.append(tensor)
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name
