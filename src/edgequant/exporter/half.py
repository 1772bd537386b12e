"""Float16 in the graph: the whole model (ONNX Runtime's converter) or chosen layers (by hand).

Only the writer (`exporter.write`) calls these; methods say what they want in a `QuantPlan`.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.graph.index import all_reads, rename_reads, topological_sort

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def half_model(proto: onnx.ModelProto, keep_float: tuple[str, ...]) -> onnx.ModelProto:
    """The model with float16 weights and compute, float32 inputs and outputs, by ONNX Runtime's
    own converter (onnxruntime.transformers.float16), which knows which operators must stay in
    float32; `keep_float` nodes stay float32 too."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about values clamped to the fp16 range
        out = convert_float_to_float16(
            proto,
            keep_io_types=True,
            node_block_list=list(keep_float),
            disable_shape_infer=False,
        )
    assert isinstance(out, onnx.ModelProto)
    drop_round_trips(out.graph)
    sort_nodes(out)  # the converter appends its input Casts after the nodes that read them
    return out


def drop_round_trips(graph: onnx.GraphProto) -> None:
    """Remove float32 -> float16 -> float32 Cast pairs between two float32 nodes.

    ORT's converter casts around every node on its block list, even between two blocked nodes:
    a tensor kept float32 because float16 cannot hold it (a spectrogram's powers, ~1e12) went
    through float16 anyway and became Inf. Readers of the float32 copy read the original."""
    nodes = list(graph.node)

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return int(next(helper.get_attribute_value(a) for a in node.attribute if a.name == "to"))

    halves = {n.output[0]: n.input[0] for n in nodes if cast_to(n) == FLOAT16}
    outputs = {o.name for o in graph.output}
    renames = {
        n.output[0]: halves[n.input[0]]
        for n in nodes
        if cast_to(n) == FLOAT and n.input[0] in halves and n.output[0] not in outputs
    }
    if not renames:
        return
    kept = [n for n in nodes if not (cast_to(n) == FLOAT and n.output[0] in renames)]
    for node in kept:
        rename_reads(node, renames)
    del graph.node[:]
    graph.node.extend(kept)
    read = all_reads(graph)
    kept = [n for n in kept if not (cast_to(n) == FLOAT16 and n.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(kept)


def to_fp16_layers(proto: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    """Run only `layers` in half precision: their float weights become float16, a Cast goes on
    each activation input and each output (none between two such layers).

    Written by hand because ONNX Runtime's converter, given every other node on its block list,
    still casts float16 -> float32 around every blocked node (204 Casts on the 150-node demo
    model), which breaks every DequantizeLinear -> Conv fusion of the quantized layers."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    chosen = [n for n in graph.node if n.name in set(layers)]
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    halves: dict[str, str] = {}  # float32 tensor -> its float16 twin
    casts: list[onnx.NodeProto] = []
    taken = {o for n in graph.node for o in n.output} | set(inits)

    def fresh(base: str) -> str:
        name, k = f"{base}_fp16", 0
        while name in taken:
            k += 1
            name = f"{base}_fp16_{k}"
        taken.add(name)
        return name

    for node in chosen:  # outputs first: a chosen layer reads another's float16 output directly
        for i, name in enumerate(node.output):
            half = fresh(name)
            node.output[i] = half
            halves[name] = half
            casts.append(helper.make_node("Cast", [half], [name], f"{half}_to_fp32", to=FLOAT))
    for node in chosen:
        for i, name in enumerate(node.input):
            if not name:
                continue
            init = inits.get(name)
            if init is not None and init.data_type == FLOAT and users.get(name) == 1:
                init.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(init).astype(np.float16), name
                ))  # fmt: skip
            elif (init is None or init.data_type == FLOAT) and name not in halves:
                halves[name] = fresh(name)
                casts.append(
                    helper.make_node("Cast", [name], [halves[name]], f"{name}_to_fp16", to=FLOAT16)
                )
            if name in halves:
                node.input[i] = halves[name]
    graph.node.extend(casts)
    sort_nodes(out)
    return out


def sort_nodes(proto: onnx.ModelProto) -> None:
    graph = proto.graph
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    ordered = topological_sort(list(graph.node), available)
    del graph.node[:]
    graph.node.extend(ordered)
