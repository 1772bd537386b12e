"""Embedding tables in int8: the largest tensors of a transformer, looked up, never multiplied.

MiniLM's word embeddings are 30,522 x 384 floats, over half of the model; Conv/MatMul
quantization leaves them float. Each row (one token) gets its own symmetric int8 scale, and the
lookup becomes

    Gather(int8 table, ids) -> Cast(float) -> Mul(Gather(row scales, ids))

in standard ONNX: only the looked-up rows are dequantized, at run time, so the model shrinks
without a slower lookup. (A DequantizeLinear before the Gather would dequantize the whole table
on every run; one after it cannot take per-row scales, which vary along the gathered axis.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.config import Embeddings, PTQConfig
from edgequant.graph.index import GraphIndex, attribute, topological_sort
from edgequant.primitives import quantize, reduce_range, scale_zero_point
from edgequant.spec import PerChannel, QType, QuantSpec, Symmetry

ROW_SPEC = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
MIN_ELEMENTS = 65_536  # smaller tables (positions, token types) are not worth the extra nodes


def embed_int8(proto: onnx.ModelProto, config: PTQConfig, exclude: frozenset[str]) -> list[str]:
    """`quantize_embeddings` when the config asks for int8 tables (the default)."""
    if config.embeddings is not Embeddings.INT8:
        return []
    return quantize_embeddings(proto, exclude | frozenset(config.exclude_nodes))


def quantize_embeddings(proto: onnx.ModelProto, exclude: frozenset[str] = frozenset()) -> list[str]:
    """Rewrite, in place, every Gather on axis 0 of a float32 2-D constant table of at least
    MIN_ELEMENTS values that only Gathers read. Returns the tables quantized."""
    graph = proto.graph
    index = GraphIndex.of(graph)
    tables: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "Gather" or node.name in exclude or not index.is_constant(node.input[0]):
            continue
        if attribute(node, "axis", 0) != 0:
            continue
        tables.setdefault(node.input[0], []).append(node)
    done = []
    new_nodes: list[onnx.NodeProto] = []
    kept = {i.name: i for i in graph.initializer}
    for name, gathers in tables.items():
        values = index.array(name)
        readers = index.consumers.get(name, [])
        if (
            values.dtype != np.float32
            or values.ndim != 2
            or values.size < MIN_ELEMENTS
            or len(readers) != len(gathers)
            or name not in kept
        ):
            continue
        scale, zp = scale_zero_point(*reduce_range(values, ROW_SPEC), ROW_SPEC)
        codes = quantize(values, scale, zp, ROW_SPEC).astype(np.int8)
        kept[name].CopyFrom(numpy_helper.from_array(codes, name))
        scales = f"{name}_row_scale"
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(scale, np.float32).reshape(-1, 1), scales)
        )
        for node in gathers:
            out = node.output[0]
            q_out, s_out, f_out = (f"{out}_q8", f"{out}_scale", f"{out}_f")
            node.output[0] = q_out
            new_nodes += [
                helper.make_node("Gather", [scales, node.input[1]], [s_out], f"{node.name}_scale", axis=0),
                helper.make_node("Cast", [q_out], [f_out], f"{node.name}_cast", to=onnx.TensorProto.FLOAT),
                helper.make_node("Mul", [f_out, s_out], [out], f"{node.name}_dequantize"),
            ]  # fmt: skip
        done.append(name)
    if new_nodes:
        available = {i.name for i in graph.initializer} | {i.name for i in graph.input}
        ordered = topological_sort([*graph.node, *new_nodes], available)
        del graph.node[:]
        graph.node.extend(ordered)
    return done
