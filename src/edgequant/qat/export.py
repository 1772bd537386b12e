"""Export a QAT model through the one exporter.

torch's ONNX exporter writes each fake-quantize op of the model (in EXPORT mode) as a
QuantizeLinear/DequantizeLinear pair carrying the learned scale and zero-point, at exactly the
position it has in the model. `plan_from_transport` reads those pairs back into a float graph plus
a `QuantPlan` (the same intermediate result PTQ produces from calibration) and `export_qdq`, the
exporter PTQ uses, writes the deployable model. No module-to-tensor name matching is needed.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.exporter import QuantPlan, TensorQuant, export_qdq
from edgequant.exporter.graph import GraphIndex, attribute
from edgequant.model import Model
from edgequant.primitives import dequantize
from edgequant.ptq.rules import OP_RULES, Role
from edgequant.spec import PerChannel, PerTensor, QType, QuantSpec, Symmetry

OPSET = 17


def export(model: Any, example_input: Any, name: str = "model") -> Model:
    """The QDQ ONNX model of a prepared (and trained) QAT model."""
    from edgequant.ptq.preprocess import _name_nodes

    transport = _torch_export(model, example_input)
    _name_nodes(transport.graph)
    float_model, plan = plan_from_transport(transport)
    out = Model(export_qdq(float_model, plan), name)
    config = getattr(model, "qat_config", None)
    out.provenance = {
        "method": "qat",
        "config": config.to_dict() if config is not None else None,
        "float_layers": dict(getattr(model, "float_layers", {})),
        "folded_activations": plan.folded,
    }
    return out


def _torch_export(model: Any, example_input: Any) -> onnx.ModelProto:
    import torch

    from edgequant.qat.modules import Mode
    from edgequant.qat.prepare import mode

    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with mode(model, Mode.EXPORT), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (example_input,),
                buf,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    return onnx.load_from_string(buf.getvalue())


def plan_from_transport(transport: onnx.ModelProto) -> tuple[onnx.ModelProto, QuantPlan]:
    """Strip the Q/DQ pairs of an exported fake-quant model; return the float graph and the plan."""
    graph = transport.graph
    index = GraphIndex.of(graph)
    plan = QuantPlan()
    rewire: dict[str, str] = {}
    drop: set[str] = set()
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        dq = index.consumers[q.output[0]][0]
        scale = index.array(q.input[1]).astype(np.float32)
        zp = index.array(q.input[2])
        tq = _tensor_quant(
            scale, zp, int(attribute(q, "axis", 1)), weight=index.is_constant(q.input[0])
        )
        src = q.input[0]
        (plan.weights if index.is_constant(src) else plan.activations)[src] = tq
        rewire[dq.output[0]] = src
        drop.update({q.name, dq.name})
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.name not in drop]:
        # a weight whose QuantizeLinear torch's constant folding already applied: integer constant
        if not index.is_constant(dq.input[0]):
            continue
        scale = index.array(dq.input[1]).astype(np.float32)
        zp = index.array(dq.input[2])
        tq = _tensor_quant(scale, zp, int(attribute(dq, "axis", 1)), weight=True)
        values = dequantize(index.array(dq.input[0]), tq.scale, tq.zero_point, tq.spec)
        name = dq.output[0]
        graph.initializer.append(numpy_helper.from_array(values, name))
        plan.weights[name] = tq
        drop.add(dq.name)
    kept = [n for n in graph.node if n.name not in drop]
    for node in kept:
        for i, inp in enumerate(node.input):
            node.input[i] = rewire.get(inp, inp)
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_constants(graph)
    index = GraphIndex.of(graph)
    _share_through_data_movement(graph, index, plan)
    _biases_and_folds(graph, index, plan)
    return transport, plan


def _tensor_quant(scale: np.ndarray, zp: np.ndarray, axis: int, weight: bool) -> TensorQuant:
    qtype = QType.UINT8 if zp.dtype == np.uint8 else QType.INT8
    granularity = PerChannel(axis) if scale.ndim == 1 and scale.size > 1 else PerTensor()
    symmetry = Symmetry.SYMMETRIC if weight else Symmetry.AFFINE
    shape = scale.shape if granularity != PerTensor() else ()
    return TensorQuant(
        QuantSpec(qtype, symmetry, granularity),
        scale.reshape(shape),
        zp.astype(np.int32).reshape(shape),
    )


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
