"""Small helpers over ONNX graphs: who produces and consumes a tensor, and a stable topological sort."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper


@dataclass
class GraphIndex:
    """Lookup tables of one graph, built once."""

    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    initializers: dict[str, onnx.TensorProto]
    graph_inputs: set[str]
    graph_outputs: set[str]
    by_name: dict[str, onnx.NodeProto]

    @classmethod
    def of(cls, graph: onnx.GraphProto) -> GraphIndex:
        producer: dict[str, onnx.NodeProto] = {}
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                producer[out] = node
            for inp in node.input:
                if inp:
                    consumers[inp].append(node)
        inits = {i.name: i for i in graph.initializer}
        constants = {
            n.output[0]: n.attribute[0].t
            for n in graph.node
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        }
        inits.update(constants)
        return cls(
            producer,
            dict(consumers),
            inits,
            {i.name for i in graph.input if i.name not in inits},
            {o.name for o in graph.output},
            {n.name: n for n in graph.node},
        )

    def node(self, name: str) -> onnx.NodeProto:
        """The node called `name`."""
        return self.by_name[name]

    def is_constant(self, name: str) -> bool:
        return name in self.initializers

    def array(self, name: str) -> NDArray[np.generic]:
        return numpy_helper.to_array(self.initializers[name])


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def topological_sort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's algorithm, always taking the earliest ready node: deterministic, and the identity
    on graphs that are already sorted."""
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        deps = {produced_by[x] for x in node.input if x and x not in available and x in produced_by}
        waiting[i] = len(deps)
        for d in deps:
            users[d].append(i)
    import heapq

    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[onnx.NodeProto] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle")
    return order
