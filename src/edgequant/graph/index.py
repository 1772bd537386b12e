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
            for inp in dict.fromkeys([*node.input, *subgraph_reads(node)]):
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


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of a control-flow node (If branches, Loop and Scan bodies)."""
    out: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def subgraph_reads(node: onnx.NodeProto) -> list[str]:
    """Outer-scope tensors the node's subgraphs read (ONNX lets a branch read any tensor of the
    enclosing graph by name): they are inputs of the node as much as its listed ones."""
    reads: list[str] = []
    for graph in subgraphs(node):
        local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
        for inner in graph.node:
            for name in [*inner.input, *subgraph_reads(inner)]:
                if name and name not in local:
                    reads.append(name)
            local.update(inner.output)
    return list(dict.fromkeys(reads))


def all_reads(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name the graph's nodes read, inside their subgraphs included, and its outputs."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        used.update(subgraph_reads(node))
    return used


def drop_unread_initializers(graph: onnx.GraphProto, among: set[str] | None = None) -> None:
    """Remove initializers nothing reads (in subgraphs included); only those in `among` when
    given (a rewrite drops what it replaced, never what the model itself left unread)."""
    unread = {i.name for i in graph.initializer} - all_reads(graph)
    if among is not None:
        unread &= among
    if unread:
        kept = [i for i in graph.initializer if i.name not in unread]
        del graph.initializer[:]
        graph.initializer.extend(kept)


def rename_reads(node: onnx.NodeProto, renames: dict[str, str]) -> None:
    """Point `node`'s inputs, and its subgraphs' reads of outer tensors, at new names."""
    for i, name in enumerate(node.input):
        if name in renames:
            node.input[i] = renames[name]
    for graph in subgraphs(node):
        local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
        outer = {k: v for k, v in renames.items() if k not in local}
        for inner in graph.node:
            rename_reads(inner, {k: v for k, v in outer.items() if k not in local})
            local.update(inner.output)


def topological_sort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's algorithm, always taking the earliest ready node: deterministic, and the identity
    on graphs that are already sorted. A control-flow node waits for the outer tensors its
    subgraphs read, too."""
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        reads = [*node.input, *subgraph_reads(node)]
        deps = {produced_by[x] for x in reads if x and x not in available and x in produced_by}
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


class NameSource:
    """Fresh tensor/node names that never collide with names already in the graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = {i.name for i in graph.initializer} | {i.name for i in graph.input}
        for node in graph.node:
            self.taken.update(node.output)
            self.taken.add(node.name)
        self.counter = 0

    def new(self, prefix: str) -> str:
        """Short names (`dq7`, `s12`): the long layer names are kept on the original tensors;
        repeating them on every Q/DQ tensor was 30% of a small model's file."""
        self.counter += 1
        name = f"{prefix}{self.counter}"
        while name in self.taken:
            self.counter += 1
            name = f"{prefix}{self.counter}"
        self.taken.add(name)
        return name

    def named(self, base: str) -> str:
        """`base` itself if free, else `base_1`, `base_2`, ...: readable names for new nodes."""
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name
