"""Write a QDQ ONNX model from a float model and a `QuantPlan`.

QuantizeLinear/DequantizeLinear pairs mark where integers flow; ONNX Runtime's graph optimiser
fuses DQ -> op -> Q patterns into integer kernels (QLinearConv, QLinearAdd, QGemm, ...). The
format is the one every ONNX runtime and NPU compiler reads, which is why it is our first target.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.graph.index import (
    GraphIndex,
    NameSource,
    all_reads,
    rename_reads,
    topological_sort,
)
from edgequant.primitives import bias_scale, quantize, quantize_bias
from edgequant.spec import PerChannel, PerGroup


def export_qdq(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """Return a new model with Q/DQ inserted as `plan` says; `model` is left untouched."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = NameSource(graph)
    _remove_folded(graph, plan.folded)
    index = GraphIndex.of(graph)
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    renames: dict[str, str] = {}

    for name, tq in plan.weights.items():
        q = plan.weight_codes.get(name)
        if q is None:
            values = index.array(name).astype(np.float32)
            q = quantize(values, tq.scale, tq.zero_point, tq.spec)
        q = q.astype(tq.spec.qtype.numpy_dtype)
        renames[name] = _dequantize_constant(name, q, tq, names, new_nodes, new_inits)
    int32_biases = {
        b: pair for b, pair in plan.biases.items() if plan.int32_biases or _needs_int32(b, index)
    }
    for bias, (act, weight) in int32_biases.items():
        scale = bias_scale(plan.activations[act].scale, plan.weights[weight].scale)
        q = quantize_bias(index.array(bias), scale)
        renames[bias] = _dequantize_int32(bias, q, scale, names, new_nodes, new_inits)
    act_renames = {
        name: _quantize_activation(name, tq, names, new_nodes, new_inits)
        for name, tq in plan.activations.items()
    }
    for node in graph.node:
        # an integer constant keeps its float name: every reader, in subgraphs too, reads its DQ
        rename_reads(node, renames)
        float_reader = node.name in plan.float_readers
        for i, inp in enumerate(node.input):
            if inp in act_renames and (not float_reader or inp in plan.read_quantized):
                node.input[i] = act_renames[inp]
    _outputs_dequantized(graph, new_nodes, act_renames, names)
    _drop_unread_pairs(graph, new_nodes, new_inits, set(act_renames.values()))
    used = {name for name in plan.weights} | set(int32_biases)
    kept = [i for i in graph.initializer if i.name not in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    _drop_inputs(graph, used)  # old IR versions also list initializers as (float) graph inputs
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    ordered = topological_sort([*graph.node, *new_nodes], available)
    del graph.node[:]
    graph.node.extend(ordered)
    _set_opset(out, plan.min_opset)
    return out


def _needs_int32(bias: str, index: GraphIndex) -> bool:
    """Whether a bias must be stored as int32 behind a DequantizeLinear.

    A Conv bias stays float32: ONNX Runtime's BiasQuantization pass puts it on the same int32
    grid (input scale x weight scale, `primitives.quantize_bias`) when it builds QLinearConv, so
    the model runs identically and saves the per-channel bias scale (4 bytes per output channel,
    7% of the demo model). Gemm/MatMul keep int32: ONNX Runtime fuses QGemm only with an int32
    bias (measured: with a float bias the Gemm stayed float between Q/DQ)."""
    return any(node.op_type != "Conv" for node in index.consumers.get(bias, []))


def _remove_folded(graph: onnx.GraphProto, folded: list[str]) -> None:
    """Drop each folded activation node; its producer now writes the activation's output."""
    for node_name in folded:
        node = next(n for n in graph.node if n.name == node_name)
        src, dst = node.input[0], node.output[0]
        for other in graph.node:
            for i, out in enumerate(other.output):
                if out == src:
                    other.output[i] = dst
        graph.node.remove(node)


def _outputs_dequantized(
    graph: onnx.GraphProto,
    new_nodes: list[onnx.NodeProto],
    act_renames: dict[str, str],
    names: NameSource,
) -> None:
    """A quantized graph output is read through its Q/DQ pair: the producer writes a fresh
    tensor and the DequantizeLinear writes the output's name (full-integer targets)."""
    for out in (o.name for o in graph.output if o.name in act_renames):
        inner, dq = names.new("y"), act_renames[out]
        for node in [*graph.node, *new_nodes]:
            node.input[:] = [inner if t == out else t for t in node.input]
            node.output[:] = [inner if t == out else (out if t == dq else t) for t in node.output]
            node.input[:] = [out if t == dq else t for t in node.input]


def _drop_unread_pairs(
    graph: onnx.GraphProto,
    new_nodes: list[onnx.NodeProto],
    new_inits: list[onnx.TensorProto],
    dequantized: set[str],
) -> None:
    """Remove an activation's Q/DQ pair that nothing reads (its only readers stay float, e.g.
    an `If` whose branches read the float tensor): a dangling QuantizeLinear on a Gemm's output
    stops ONNX Runtime from fusing that Gemm into its integer kernel."""
    read = all_reads(graph)
    for node in new_nodes:
        read.update(node.input)
    dead = {dq for dq in dequantized if dq not in read}
    if not dead:
        return
    dead_q = {n.input[0] for n in new_nodes if n.output[0] in dead}
    new_nodes[:] = [n for n in new_nodes if n.output[0] not in dead and n.output[0] not in dead_q]
    still = {t for n in [*graph.node, *new_nodes] for t in n.input}
    new_inits[:] = [i for i in new_inits if i.name in still]


def _quantize_activation(
    name: str,
    tq: TensorQuant,
    names: NameSource,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
) -> str:
    scale, zp = _params(tq, names, inits)
    q_out, dq_out = names.new("q"), names.new("dq")
    attrs = _axis_attrs(tq)
    nodes.append(helper.make_node("QuantizeLinear", [name, scale, zp], [q_out], q_out, **attrs))
    nodes.append(
        helper.make_node("DequantizeLinear", [q_out, scale, zp], [dq_out], dq_out, **attrs)
    )
    return dq_out


def _dequantize_constant(
    name: str,
    q: np.ndarray,
    tq: TensorQuant,
    names: NameSource,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
) -> str:
    """The integer weight keeps the float initializer's name (it replaces it)."""
    inits.append(numpy_helper.from_array(q, name))
    scale, zp = _params(tq, names, inits)
    dq_out = names.new("dq")
    nodes.append(
        helper.make_node("DequantizeLinear", [name, scale, zp], [dq_out], dq_out, **_axis_attrs(tq))
    )
    return dq_out


def _dequantize_int32(
    name: str,
    q: np.ndarray,
    scale: np.ndarray,
    names: NameSource,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
) -> str:
    """Bias as int32 with scale = input scale x weight scale. The zero-point input is left out
    (ONNX: 0 when absent); writing an int32 array of zeros per channel made up 6% of a small
    model's file, and ONNX Runtime fuses the same way without it (tested)."""
    s_name = names.new("s")
    inits.extend([numpy_helper.from_array(q, name), numpy_helper.from_array(scale, s_name)])
    attrs = {"axis": 0} if np.ndim(scale) == 1 else {}
    dq_out = names.new("dq")
    nodes.append(helper.make_node("DequantizeLinear", [name, s_name], [dq_out], dq_out, **attrs))
    return dq_out


def _params(tq: TensorQuant, names: NameSource, inits: list[onnx.TensorProto]) -> tuple[str, str]:
    s_name, z_name = names.new("s"), names.new("z")
    inits.append(numpy_helper.from_array(np.asarray(tq.scale, np.float32), s_name))
    inits.append(
        numpy_helper.from_array(np.asarray(tq.zero_point).astype(tq.spec.qtype.numpy_dtype), z_name)
    )
    return s_name, z_name


def _axis_attrs(tq: TensorQuant) -> dict[str, int]:
    gran = tq.spec.granularity
    if isinstance(gran, PerChannel):
        return {"axis": gran.axis}
    if isinstance(gran, PerGroup):
        return {"axis": gran.axis, "block_size": gran.size}
    return {}


def _drop_inputs(graph: onnx.GraphProto, names: set[str]) -> None:
    kept = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(kept)


def _set_opset(model: onnx.ModelProto, minimum: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            opset.version = minimum
