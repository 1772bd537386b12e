"""The one writer: a float ONNX model + a `QuantPlan` -> the deployable model.

Every method (static PTQ, QAT, dynamic, weight-only INT4, int8 embeddings, FP16 whole or per
layer) describes what it wants in a plan, and only this module (with `qdq` and `half`, which it
calls) writes quantization into a graph, in one order: Q/DQ pairs, integer weights and biases;
dynamic MatMuls; float16 layers; int8 embedding tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.exporter.half import half_model, to_fp16_layers
from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.exporter.qdq import export_qdq
from edgequant.graph.index import GraphIndex, NameSource, drop_unread_initializers, topological_sort
from edgequant.primitives import quantize


def write(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """A new model with `plan` written into `model`'s graph; `model` is left untouched."""
    if plan.half_model:
        return half_model(model, plan.keep_float)
    out = export_qdq(model, plan)
    if plan.dynamic:
        _write_dynamic(out.graph, plan.dynamic)
    if plan.half_nodes:
        out = to_fp16_layers(out, list(plan.half_nodes))
    if plan.embeddings:
        _write_embeddings(out.graph, plan.embeddings)
    return out


def _write_dynamic(graph: onnx.GraphProto, dynamic: Mapping[str, TensorQuant]) -> None:
    """Each planned MatMul(x, W) becomes, in place,

        DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zp, W_zp) -> Cast -> Mul(x_s * W_s)

    which ONNX Runtime fuses into DynamicQuantizeMatMul (a VNNI kernel). W_q gets a new name:
    another reader of the float weight keeps reading floats."""
    index = GraphIndex.of(graph)
    names = NameSource(graph)
    stored: dict[str, tuple[str, str, str]] = {}
    inits: list[onnx.TensorProto] = []
    chains: dict[str, list[onnx.NodeProto]] = {}
    for node_name, tq in dynamic.items():
        node = index.node(node_name)
        x, weight = node.input[0], node.input[1]
        if weight not in stored:
            dtype = tq.spec.qtype.numpy_dtype
            values = index.array(weight).astype(np.float32)
            stored[weight] = (names.named(f"{weight}_q"), names.new("s"), names.new("z"))
            q_name, s_name, z_name = stored[weight]
            inits += [
                numpy_helper.from_array(
                    quantize(values, tq.scale, tq.zero_point, tq.spec).astype(dtype), q_name
                ),
                numpy_helper.from_array(np.asarray(tq.scale, np.float32), s_name),
                numpy_helper.from_array(np.asarray(tq.zero_point).astype(dtype), z_name),
            ]
        w_q, w_s, w_z = stored[weight]
        x_q, x_s, x_z, acc, acc_f, scale = (names.new(p) for p in ("xq", "xs", "xz", "i", "f", "s"))
        chains[node_name] = [
            helper.make_node("DynamicQuantizeLinear", [x], [x_q, x_s, x_z], names.named(f"{node_name}/quantize_input")),
            helper.make_node("MatMulInteger", [x_q, w_q, x_z, w_z], [acc], names.named(f"{node_name}/integer")),
            helper.make_node("Cast", [acc], [acc_f], names.named(f"{node_name}/cast"), to=TensorProto.FLOAT),
            helper.make_node("Mul", [x_s, w_s], [scale], names.named(f"{node_name}/scale")),
            helper.make_node("Mul", [acc_f, scale], [node.output[0]], names.named(f"{node_name}/rescale")),
        ]  # fmt: skip
    nodes = [n for node in graph.node for n in chains.get(node.name, [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    drop_unread_initializers(graph)


def _write_embeddings(graph: onnx.GraphProto, tables: Mapping[str, TensorQuant]) -> None:
    """Each planned table becomes int8 with one scale per row, and each Gather of it

        Gather(int8 table, ids) -> Cast(float) -> Mul(Gather(row scales, ids))

    in standard ONNX: only the looked-up rows are dequantized, at run time, so the model shrinks
    without a slower lookup. (A DequantizeLinear before the Gather would dequantize the whole
    table on every run; one after it cannot take per-row scales, which vary along the gathered
    axis.)"""
    index = GraphIndex.of(graph)
    kept = {i.name: i for i in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    for name, tq in tables.items():
        values = index.array(name).astype(np.float32)
        codes = quantize(values, tq.scale, tq.zero_point, tq.spec).astype(np.int8)
        kept[name].CopyFrom(numpy_helper.from_array(codes, name))
        scales = f"{name}_row_scale"
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(tq.scale, np.float32).reshape(-1, 1), scales)
        )
        for node in index.consumers.get(name, []):  # all Gathers (`plan_embeddings` checks)
            out = node.output[0]
            q_out, s_out, f_out = (f"{out}_q8", f"{out}_scale", f"{out}_f")
            node.output[0] = q_out
            new_nodes += [
                helper.make_node("Gather", [scales, node.input[1]], [s_out], f"{node.name}_scale", axis=0),
                helper.make_node("Cast", [q_out], [f_out], f"{node.name}_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [f_out, s_out], [out], f"{node.name}_dequantize"),
            ]  # fmt: skip
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    ordered = topological_sort([*graph.node, *new_nodes], available)
    del graph.node[:]
    graph.node.extend(ordered)
