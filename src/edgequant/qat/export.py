"""Export a QAT model through the one exporter.

torch's ONNX exporter writes each fake-quantize op of the model (in EXPORT mode) as a
QuantizeLinear/DequantizeLinear pair carrying the learned scale and zero-point, at exactly the
position it has in the model. `plan_from_transport` reads those pairs back into a float graph plus
a `QuantPlan` (the same intermediate result PTQ produces from calibration), the planner completes
it with PTQ's rules (shared ranges, int32 biases, Relu/Clip folds) and the one writer writes the
deployable model. No module-to-tensor name matching is needed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.exporter.planner import (
    fold_candidates,
    plan_biases,
    plan_folds,
    share_ranges,
    shared_outputs,
)
from edgequant.exporter.write import write
from edgequant.graph.index import GraphIndex, all_reads
from edgequant.graph.preprocess import upgrade_opset
from edgequant.model import Model
from edgequant.provenance import Provenance
from edgequant.spec import PerChannel, QType, QuantSpec, Symmetry
from edgequant.torch_onnx import OPSET, export_proto


def export(model: Any, example_input: Any, name: str = "model") -> Model:
    """The QDQ ONNX model of a prepared (and trained) QAT model."""
    from edgequant.qat.state import qat_state

    float_model, plan = plan_qat(model, example_input)
    out = Model(write(float_model, plan), name)
    state = qat_state(model)
    out.provenance = Provenance(
        method="qat",
        config=state.config,
        calibration_samples=state.calibration_samples,
        float_layers=dict(state.float_layers),
        folded_activations=list(plan.folded),
    )
    return out


def plan_qat(model: Any, example_input: Any) -> tuple[onnx.ModelProto, QuantPlan]:
    """The float graph of a prepared QAT model and the plan of its learned quantization, the
    same hand-off static PTQ produces (`ptq.static.plan_calibrated`)."""
    from edgequant.graph.preprocess import name_nodes

    weight_log: list[tuple[QuantSpec, np.ndarray] | None] = []
    activation_log: list[QuantSpec] = []
    transport = _torch_export(model, example_input, weight_log, activation_log)
    name_nodes(transport.graph)
    float_model, plan = plan_from_transport(transport, weight_log, activation_log)
    if plan.min_opset > OPSET:
        float_model = upgrade_opset(float_model, plan.min_opset)
    return float_model, plan


def _torch_export(
    model: Any, example_input: Any, weight_log: list[Any], activation_log: list[QuantSpec]
) -> onnx.ModelProto:
    from edgequant.qat.modules import ActivationQuantizer, Mode, QuantConv, QuantLinear
    from edgequant.qat.prepare import mode

    weighted = [m for m in model.modules() if isinstance(m, QuantConv | QuantLinear)]
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    for m in weighted:
        m.state.export_log = weight_log
    for q in quantizers:
        q.export_log = activation_log
    try:
        with mode(model, Mode.EXPORT):
            return export_proto(model, example_input)
    finally:
        for m in weighted:
            m.state.export_log = None
        for q in quantizers:
            q.export_log = None


def plan_from_transport(
    transport: onnx.ModelProto,
    weight_log: list[tuple[QuantSpec, np.ndarray] | None] | None = None,
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
    share_ranges(plan, shared_outputs(graph, index, plan))
    plan_biases(index, plan, graph.node)
    plan_folds(index, plan, fold_candidates(graph, index, plan), lend_unfolded=True)
    return transport, plan


def _weights_from_log(
    graph: onnx.GraphProto, plan: QuantPlan, log: list[tuple[QuantSpec, np.ndarray] | None]
) -> None:
    """Pair each weighted node's constant weight (graph order = forward order) with the
    (spec, scale) its module logged during the export (None: the layer stays float)."""
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
    for name, logged in zip(weights, log[-len(weights) :], strict=True):
        if logged is None:
            continue
        spec, scale = logged
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
    used = all_reads(graph)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
