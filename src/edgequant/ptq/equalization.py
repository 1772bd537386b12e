"""Apply cross-layer equalisation (`algorithms.equalization`) to Conv pairs of an ONNX graph.

A pair is Conv A -> [Relu] -> Conv B where A's output feeds nothing else, A and B own their
(constant) weights, and B is an ordinary (group 1) or depthwise convolution. Relu commutes with a
positive per-channel scale; Clip(0, 6) and other activations do not, so they end a chain. In a
MobileNetV2 block both (expand, depthwise) and (depthwise, project) are pairs; as in the paper,
pairs are equalised in turn until the scales stop changing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.algorithms.equalization import equalize_pair
from edgequant.graph.index import GraphIndex, attribute
from edgequant.model import Model

MAX_ROUNDS = 50
CONVERGED = 1e-4  # max |log s| of a round


@dataclass(frozen=True)
class ConvPair:
    first: onnx.NodeProto
    second: onnx.NodeProto
    depthwise_second: bool


def equalize_model(model: Model, exclude_nodes: frozenset[str] = frozenset()) -> tuple[Model, int]:
    """A copy of `model` with every equalisable Conv pair equalised; returns it and the pair count."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    index = GraphIndex.of(graph)
    pairs = [
        p for p in conv_pairs(graph, index) if not {p.first.name, p.second.name} & exclude_nodes
    ]
    weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer}
    for _ in range(MAX_ROUNDS):
        change = 0.0
        for pair in pairs:
            w1, w2 = pair.first.input[1], pair.second.input[1]
            b1 = pair.first.input[2] if len(pair.first.input) > 2 and pair.first.input[2] else None
            new_w1, new_b1, new_w2, s = equalize_pair(
                weights[w1],
                weights[b1] if b1 else None,
                weights[w2],
                depthwise2=pair.depthwise_second,
            )
            weights[w1], weights[w2] = new_w1, new_w2
            if b1 and new_b1 is not None:
                weights[b1] = new_b1
            change = max(change, float(np.abs(np.log(s)).max(initial=0.0)))
        if change < CONVERGED:
            break
    touched = {n for p in pairs for n in p.first.input[1:] + p.second.input[1:2] if n}
    for init in graph.initializer:
        if init.name in touched:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    out = Model(proto, model.name, model.provenance)
    return out, len(pairs)


def conv_pairs(graph: onnx.GraphProto, index: GraphIndex) -> list[ConvPair]:
    """Every Conv -> [Relu] -> Conv pair that equalisation may rescale, in graph order."""
    pairs = []
    inits = {i.name for i in graph.initializer}
    for node in graph.node:
        if not _own_weights(node, index, inits):
            continue
        tensor = node.output[0]
        nxt = _single_consumer(tensor, index)
        if nxt is not None and nxt.op_type == "Relu":
            tensor = nxt.output[0]
            nxt = _single_consumer(tensor, index)
        if nxt is None or not _own_weights(nxt, index, inits) or nxt.input[0] != tensor:
            continue
        w2 = index.array(nxt.input[1])
        channels = index.array(node.input[1]).shape[0]
        groups = int(attribute(nxt, "group", 1))
        depthwise = groups == channels and w2.shape[0] == channels and w2.shape[1] == 1
        if groups == 1 or depthwise:
            pairs.append(ConvPair(node, nxt, depthwise))
    return pairs


def _own_weights(node: onnx.NodeProto, index: GraphIndex, inits: set[str]) -> bool:
    """A float Conv whose weight (and bias) are initializers used by this node only."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    params = [n for n in node.input[1:] if n]
    return all(
        n in inits and len(index.consumers.get(n, [])) == 1 and index.array(n).dtype == np.float32
        for n in params
    )


def _single_consumer(tensor: str, index: GraphIndex) -> onnx.NodeProto | None:
    users = index.consumers.get(tensor, [])
    if len(users) != 1 or tensor in index.graph_outputs:
        return None
    return users[0]
