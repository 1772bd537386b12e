"""Export a QAT model through the one exporter.

torch's ONNX exporter writes each fake-quantize op of the model (in EXPORT mode) as a
QuantizeLinear/DequantizeLinear pair carrying the learned scale and zero-point, at exactly the
position it has in the model. `plan_from_transport` reads those pairs back into a float graph plus
a `QuantPlan` (the same intermediate result PTQ produces from calibration) and `export_qdq`, the
exporter PTQ uses, writes the deployable model. No module-to-tensor name matching is needed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from edgequant.exporter import QuantPlan, TensorQuant, export_qdq
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import upgrade_opset
from edgequant.graph.rules import OP_RULES, Role
from edgequant.model import Model
from edgequant.spec import PerChannel, QType, QuantSpec, Symmetry
from edgequant.torch_onnx import OPSET, export_proto


def export(model: Any, example_input: Any, name: str = "model") -> Model:
    """The QDQ ONNX model of a prepared (and trained) QAT model."""
    from edgequant.graph.preprocess import _name_nodes
    from edgequant.qat.state import qat_state

    weight_log: list[tuple[QuantSpec, np.ndarray]] = []
    activation_log: list[QuantSpec] = []
    transport = _torch_export(model, example_input, weight_log, activation_log)
    _name_nodes(transport.graph)
    float_model, plan = plan_from_transport(transport, weight_log, activation_log)
    if plan.min_opset > OPSET:
        float_model = upgrade_opset(float_model, plan.min_opset)
    out = Model(export_qdq(float_model, plan), name)
    state = qat_state(model)
    out.provenance = {
        "method": "qat",
        "config": state.config.to_dict(),
        "float_layers": dict(state.float_layers),
        "folded_activations": plan.folded,
    }
    return out


def _torch_export(
    model: Any, example_input: Any, weight_log: list[Any], activation_log: list[QuantSpec]
) -> onnx.ModelProto:
    from edgequant.qat.modules import ActivationQuantizer, Mode, QuantConv, QuantLinear
    from edgequant.qat.prepare import mode

    weighted = [m for m in model.modules() if isinstance(m, QuantConv | QuantLinear)]
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    for m in weighted:
        m.export_log = weight_log
    for q in quantizers:
        q.export_log = activation_log
    try:
        with mode(model, Mode.EXPORT):
            return export_proto(model, example_input)
    finally:
        for m in [*weighted, *quantizers]:
            m.export_log = None


def plan_from_transport(
    transport: onnx.ModelProto,
    weight_log: list[tuple[QuantSpec, np.ndarray]] | None = None,
    activation_log: list[QuantSpec] | None = None,
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Strip the Q/DQ pairs of an exported fake-quant model; return the float graph and the plan.

    Activation quantizers arrive as Q/DQ pairs (8-bit containers; their specs, 4-bit included,
    in `activation_log` in forward order, which is the graph's order of the pairs); weights
    arrive as constants on their grid, with their (spec, scale) in `weight_log` (forward order)."""
    graph = transport.graph
    _constants_to_initializers(graph)
    index = GraphIndex.of(graph)
    plan = QuantPlan()
    rewire: dict[str, str] = {}
    drop: set[str] = set()
    pairs = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    if activation_log and len(activation_log) != len(pairs):
        raise ValueError(f"{len(activation_log)} logged quantizers for {len(pairs)} Q/DQ pairs")
    for i, q in enumerate(pairs):
        dq = index.consumers[q.output[0]][0]
        scale = index.array(q.input[1]).astype(np.float32).reshape(())
        zp = index.array(q.input[2]).reshape(())
        qtype = QType.UINT8 if zp.dtype == np.uint8 else QType.INT8
        spec = activation_log[i] if activation_log else QuantSpec(qtype, Symmetry.AFFINE)
        if spec.qtype.bits == 4:
            plan.min_opset = max(plan.min_opset, 21)  # int4 tensors
        plan.activations[q.input[0]] = TensorQuant(spec, scale, zp.astype(np.int32))
        rewire[dq.output[0]] = q.input[0]
        drop.update({q.name, dq.name})
    kept = [n for n in graph.node if n.name not in drop]
    for node in kept:
        for i, inp in enumerate(node.input):
            node.input[i] = rewire.get(inp, inp)
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_constants(graph)
    _weights_from_log(graph, plan, weight_log or [])
    index = GraphIndex.of(graph)
    _share_through_data_movement(graph, index, plan)
    _biases_and_folds(graph, index, plan)
    return transport, plan


def _weights_from_log(
    graph: onnx.GraphProto, plan: QuantPlan, log: list[tuple[QuantSpec, np.ndarray]]
) -> None:
    """Pair each weighted node's constant weight (graph order = forward order) with the
    (spec, scale) its module logged during the export."""
    index = GraphIndex.of(graph)
    weights = [
        n.input[1]
        for n in graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and index.is_constant(n.input[1])
    ]
    weights = list(dict.fromkeys(weights))
    if not log:
        return
    if len(log) % max(len(weights), 1) or not weights:
        raise ValueError(
            f"{len(log)} logged weights for {len(weights)} weighted nodes in the export"
        )
    for name, (spec, scale) in zip(weights, log[-len(weights) :], strict=True):
        aimed = replace(spec, granularity=PerChannel(0))
        plan.weights[name] = TensorQuant(
            aimed, scale.astype(np.float32), np.zeros(scale.shape, np.int32)
        )
        if spec.qtype.bits == 4:
            plan.min_opset = max(plan.min_opset, 21)  # int4 tensors


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes become initializers, which the exporter can replace by quantized ones."""
    kept = []
    for node in graph.node:
        value = (
            next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant"
            else None
        )
        if value is None:
            kept.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    del graph.node[:]
    graph.node.extend(kept)


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _share_through_data_movement(
    graph: onnx.GraphProto, index: GraphIndex, plan: QuantPlan
) -> None:
    """MaxPool/Flatten/Reshape outputs reuse their input's parameters, as PTQ does, so that ONNX
    Runtime moves integers through them."""
    for node in graph.node:
        rule = OP_RULES.get(node.op_type)
        if rule is None or rule.role is not Role.SHARED_RANGE:
            continue
        src, out = node.input[0], node.output[0]
        if (
            src in plan.activations
            and out not in plan.activations
            and out not in index.graph_outputs
        ):
            plan.activations[out] = plan.activations[src]


def _biases_and_folds(graph: onnx.GraphProto, index: GraphIndex, plan: QuantPlan) -> None:
    for node in graph.node:
        if (
            node.op_type in ("Conv", "Gemm")
            and len(node.input) > 2
            and node.input[1] in plan.weights
        ):
            bias, x = node.input[2], node.input[0]
            if index.is_constant(bias) and x in plan.activations:
                plan.biases[bias] = (x, node.input[1])
        if node.op_type == "Relu":
            src = index.producer.get(node.input[0])
            out_q = plan.activations.get(node.output[0])
            sole = len(index.consumers.get(node.input[0], [])) == 1
            clips_at_zero = (
                out_q is not None and int(np.asarray(out_q.zero_point)) == out_q.spec.qmin
            )
            foldable = src is not None and src.op_type in ("Conv", "Gemm", "Add") and sole
            if foldable and clips_at_zero and node.input[0] not in plan.activations:
                plan.folded.append(node.name)
