"""MatMul/Gemm nodes whose weight is constant, as MatMul(x, W (K, N)) (+ Add(bias)).

Dynamic INT8 and weight-only INT4 both need the weight as a (K, N) matrix multiplied from the
right (ONNX Runtime's DynamicQuantizeMatMul and MatMulNBits fusions match MatMul only); Gemm with
transB stores (N, K). Gemm with transA, alpha or beta other than 1 is left alone (listed as
float).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.graph.index import GraphIndex, NameSource, attribute, drop_unread_initializers
from edgequant.graph.rules import plain_gemm


@dataclass(frozen=True)
class LinearNode:
    node: onnx.NodeProto
    weight_kn: np.ndarray  # (K, N) float32
    bias: str | None  # name of a constant 1-D bias of length N, or None


def linear_nodes(
    graph: onnx.GraphProto, index: GraphIndex, exclude: frozenset[str], float_nodes: dict[str, str]
) -> Iterator[LinearNode]:
    """MatMul/Gemm nodes with a constant float32 2-D weight; others are noted in `float_nodes`."""
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            if not any(index.is_constant(i) and index.array(i).ndim >= 2 for i in node.input):
                continue  # only weighted operators are worth listing
            float_nodes.setdefault(
                node.name, f"{node.op_type}: only MatMul/Gemm are quantized by this method"
            )
            continue
        reason = _reason(node, index, exclude)
        if reason:
            float_nodes[node.name] = reason
            continue
        w = index.array(node.input[1]).astype(np.float32)
        if node.op_type == "Gemm" and attribute(node, "transB", 0):
            w = w.T  # (N, K) -> (K, N)
        bias = (
            node.input[2]
            if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
            else None
        )
        if bias is not None and (
            not index.is_constant(bias) or index.array(bias).shape != (w.shape[1],)
        ):
            float_nodes[node.name] = "Gemm bias is not a constant vector of length N"
            continue
        yield LinearNode(node, np.ascontiguousarray(w), bias)


def _reason(node: onnx.NodeProto, index: GraphIndex, exclude: frozenset[str]) -> str | None:
    if node.name in exclude:
        return "excluded by the configuration"
    if not index.is_constant(node.input[1]):
        return "weight is computed at run time, not a constant"
    w = index.array(node.input[1])
    if w.dtype != np.float32 or w.ndim != 2:
        return "weight is not a 2-D float32 matrix"
    if node.op_type == "Gemm" and not plain_gemm(node):
        return "Gemm with transA/alpha/beta"
    return None


def replace_nodes(
    graph: onnx.GraphProto, old: dict[str, list[onnx.NodeProto]], inits: list[onnx.TensorProto]
) -> None:
    """Swap each named node for its replacement chain (same place), add initializers, drop unused ones."""
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.extend(old.get(node.name, [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    drop_unread_initializers(graph)


def linears_as_matmul(graph: onnx.GraphProto, linears: list[LinearNode]) -> list[onnx.NodeProto]:
    """Rewrite, in place, each Gemm of `linears` as MatMul(x, W (K, N)) -> Add(bias), the MatMul
    keeping the Gemm's name; MatMuls stay as they are. Returns the MatMul nodes in graph order.
    A transposed weight is stored once, however many Gemms share it."""
    names = NameSource(graph)
    transposed: dict[str, str] = {}
    inits: list[onnx.TensorProto] = []
    swaps: dict[str, list[onnx.NodeProto]] = {}
    for lin in linears:
        node = lin.node
        if node.op_type == "MatMul":
            continue
        weight = node.input[1]
        if attribute(node, "transB", 0):
            if weight not in transposed:
                transposed[weight] = names.named(f"{weight}_kn")
                inits.append(numpy_helper.from_array(lin.weight_kn, transposed[weight]))
            weight = transposed[weight]
        out = node.output[0]
        product = names.named(f"{out}_matmul") if lin.bias else out
        swaps[node.name] = [
            helper.make_node("MatMul", [node.input[0], weight], [product], node.name),
            *(
                [
                    helper.make_node(
                        "Add", [product, lin.bias], [out], names.named(f"{node.name}/bias")
                    )
                ]
                if lin.bias
                else []
            ),
        ]
    replace_nodes(graph, swaps, inits)
    chosen = {lin.node.name for lin in linears}
    return [n for n in graph.node if n.name in chosen]


def divisions_as_products(proto: onnx.ModelProto) -> int:
    """Rewrite, in place, each Div by a constant float32 divisor (no zero, finite) as a Mul by
    its reciprocal; return how many. ONNX Runtime fuses DQ -> Mul -> Q into QLinearMul but has
    no integer Div: hard-swish written as x * relu6(x + 3) / 6 left a float island per
    activation. x / c and x * (1 / c) differ by at most one float32 ulp, far below any 8-bit
    step; node names are kept (for --exclude and per-layer precisions)."""
    graph = proto.graph
    index = GraphIndex.of(graph)
    names = NameSource(graph)
    replaced: set[str] = set()
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Div" or len(node.input) != 2 or not index.is_constant(node.input[1]):
            continue
        divisor = index.array(node.input[1])
        if divisor.dtype != np.float32 or not np.isfinite(divisor).all() or (divisor == 0).any():
            continue
        reciprocal = names.new("reciprocal")
        values = np.reciprocal(divisor.astype(np.float32))
        graph.initializer.append(numpy_helper.from_array(values, reciprocal))
        replaced.add(node.input[1])
        rewritten += 1
        node.op_type = "Mul"
        node.input[1] = reciprocal
    drop_unread_initializers(graph, replaced)
    return rewritten
