"""Multiply-accumulates per node, from shapes that ONNX shape inference gives at batch 1.

Used to say which fraction of a model's compute runs in integer: a model with one float Conv
among thirty integer ones may still spend most of its time in that Conv.
"""

from __future__ import annotations

import contextlib
import math
import tempfile

import onnx
from onnx import shape_inference

from edgequant.graph.index import attribute, subgraphs

_MAC_OPS = frozenset({"Conv", "ConvInteger", "Gemm", "MatMul", "MatMulInteger"})
# gates per hidden unit: each step multiplies [x, h] by W and R for every gate
_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Node name (its first output if unnamed) -> multiply-accumulates at batch 1 for
    Conv/Gemm/MatMul and their integer forms, and LSTM/GRU/RNN (others are 0). Nodes inside
    If/Loop/Scan bodies count too (every branch of an If; a Loop body once)."""
    shapes = tensor_shapes(model)
    out: dict[str, int] = {}
    for node in all_nodes(model.graph):
        if node.op_type in _RECURRENT_GATES:
            macs = _recurrent_macs(node, shapes)
            if macs is not None:
                out[_key(node)] = macs
            continue
        if node.op_type not in _MAC_OPS or not node.output:
            continue
        y = shapes.get(node.output[0])
        a = shapes.get(node.input[0])
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if y is None or w is None:
            continue
        if node.op_type.startswith("Conv"):
            # y: (N, C_out, *spatial); w: (C_out, C_in / groups, *kernel)
            k = math.prod(w[1:])
        elif node.op_type == "Gemm":  # K from B when A's length stays symbolic
            k = w[1] if attribute(node, "transB", 0) else w[0]
        elif a is not None:
            k = a[-1]  # (..., K) x (K, N)
        elif len(w) >= 2:
            k = w[-2]
        else:
            continue
        out[_key(node)] = int(math.prod(y) * k)
    return out


def _recurrent_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """LSTM/GRU/RNN: every time step and direction multiplies the input by W (gates x H, I) and
    the hidden state by R (gates x H, H): seq * batch * directions * gates * H * (I + H)."""
    x = shapes.get(node.input[0])
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    r = shapes.get(node.input[2]) if len(node.input) > 2 else None
    if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
        return None
    seq, batch = (x[1], x[0]) if attribute(node, "layout", 0) else (x[0], x[1])
    if node.op_type == "DynamicQuantizeLSTM":  # weights stored transposed: (D, I, 4H), (D, H, 4H)
        directions, inputs, gates_h = w
        return int(seq * batch * directions * gates_h * (inputs + r[1]))
    directions, gates_h, inputs = w
    return int(seq * batch * directions * gates_h * (inputs + r[2]))


def weight_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Weight tensor name -> MACs of the layer that reads it (also the integer initializer
    behind its DequantizeLinear): finds the MACs of a node a runtime fused and renamed."""
    macs = node_macs(model)
    producer = {o: n for n in all_nodes(model.graph) for o in n.output}
    out: dict[str, int] = {}
    for node in all_nodes(model.graph):
        if _key(node) in macs and len(node.input) > 1:
            weight = node.input[1]
            out[weight] = macs[_key(node)]
            dq = producer.get(weight)
            if dq is not None and dq.op_type == "DequantizeLinear":
                out[dq.input[0]] = macs[_key(node)]
    return out


def _key(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor whose shape inference resolves (in control-flow bodies
    too), symbolic dims set to 1. When that contradicts the graph (a symbolic length a Gemm
    needs at 512), only the leading (batch) dims are set and the others stay symbolic."""
    inferred = None
    for leading_only in (False, True):
        proto = _at_batch_one(model, leading_only)
        inferred = None if leading_only else _symbolic_shapes(proto)
        if inferred is None:
            try:
                inferred = shape_inference.infer_shapes(proto, data_prop=True, strict_mode=True)
            except Exception:  # contradicts the graph, or an op it does not know
                continue
        break
    if inferred is None:  # what lenient inference resolves, else what the graph declares
        proto = _at_batch_one(model, False)
        try:
            inferred = shape_inference.infer_shapes(proto, data_prop=True)
        except Exception:
            inferred = proto
    shapes: dict[str, tuple[int, ...]] = {}
    for graph in _all_graphs(inferred.graph):
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        for init in graph.initializer:
            shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def all_nodes(graph: onnx.GraphProto | onnx.NodeProto) -> list[onnx.NodeProto]:
    """A graph's nodes with, after each control-flow node, the nodes of its bodies (for a
    node: itself, then its bodies' nodes)."""
    nodes = [graph] if isinstance(graph, onnx.NodeProto) else list(graph.node)
    out: list[onnx.NodeProto] = []
    for node in nodes:
        out.append(node)
        for body in subgraphs(node):
            out.extend(all_nodes(body))
    return out


def _all_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [graph, *(g for n in graph.node for body in subgraphs(n) for g in _all_graphs(body))]


def _at_batch_one(model: onnx.ModelProto, leading_only: bool) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    for vi in proto.graph.input:
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and (axis == 0 or not leading_only):
                dim.dim_value = 1
    return proto


def _symbolic_shapes(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """ONNX Runtime's symbolic shape inference: it follows shapes computed at run time
    (Shape -> Gather -> Reshape in transformers), which ONNX's own inference leaves unknown."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # When inference stays incomplete it saves a debug copy of the model, with its weights as
    # uuid-named external files, into the working directory: run it inside a scratch folder so
    # that nothing lands in the user's directory.
    with (
        tempfile.TemporaryDirectory(prefix="edgequant-shapes-") as scratch,
        contextlib.chdir(scratch),
    ):
        try:
            return SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
        except Exception:  # an operator it does not know: ONNX's inference instead
            return None


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that shape inference types as float32/float16 (activations and constants)."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    graph = inferred.graph
    names = {
        vi.name
        for vi in [*graph.input, *graph.value_info, *graph.output]
        if vi.type.tensor_type.elem_type in floats
    }
    names |= {i.name for i in graph.initializer if i.data_type in floats}
    return names
