"""Static quantization inside `If` branches, each branch quantized as a model of its own.

A branch reads tensors of the enclosing graph by name and has no inputs of its own, so it cannot
be calibrated where it stands (ONNX Runtime exposes no tensor inside a subgraph). The outer
calibration pass records what each branch reads and the `If`'s condition; each branch then
becomes a standalone model (those reads as inputs, the weights it reads as initializers, its
outputs as outputs) quantized by the same static pipeline on the runs that took it, with the
fidelity guard on that model's outputs when the outer one has it. Its nodes go back into the
branch, new tensor names prefixed so that they never meet a name of the outer graph, new
weights stored in the branch. ONNX Runtime fuses QDQ inside branches as at the top level
(QLinearConv in a branch, measured), so a model whose compute lives in `If` branches (a
voice-activity model with a branch per sample rate) runs integer like any other.

Loop and Scan bodies stay float: their inputs change per iteration, which one outer run does
not show.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper

from edgequant.config import PTQConfig
from edgequant.data import Runs
from edgequant.errors import EdgeQuantWarning, NothingToQuantizeError
from edgequant.graph.index import drop_unread_initializers, rename_reads, subgraph_reads
from edgequant.model import Model

BRANCHES = ("then_branch", "else_branch")


@dataclass(frozen=True)
class Branch:
    """One branch of a top-level `If`: the node, which branch, its condition, the non-constant
    outer tensors the branch reads."""

    node: str
    attr: str
    cond: str
    reads: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.node}/{self.attr}"


def branches(graph: onnx.GraphProto) -> list[Branch]:
    """The branches of the graph's top-level `If` nodes that hold compute nodes."""
    constants = {i.name for i in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    found = []
    for node in graph.node:
        if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            if attr.name in BRANCHES and any(n.op_type != "Constant" for n in attr.g.node):
                reads = [r for r in outer_reads(attr.g) if r not in constants]
                found.append(Branch(node.name, attr.name, node.input[0], tuple(reads)))
    return found


def outer_reads(body: onnx.GraphProto) -> list[str]:
    """Tensors of the enclosing graph that `body` reads by name (`graph.index.subgraph_reads`
    of a node holding it)."""
    return subgraph_reads(helper.make_node("If", [], [], graph_body=body))


def recorded_tensors(found: list[Branch]) -> tuple[str, ...]:
    """What the outer calibration pass records: every condition and branch read."""
    return tuple(dict.fromkeys(t for b in found for t in (b.cond, *b.reads)))


@dataclass
class QuantizedBranches:
    """Branch key -> quantized body, and what the model needs to run them: an opset (16-bit
    promotions need 21) and the operator domains they use (DynamicQuantizeLSTM's)."""

    bodies: dict[str, onnx.GraphProto] = field(default_factory=dict)
    opset: int = 0
    domains: dict[str, int] = field(default_factory=dict)
    # branch key -> the FP32 values of the outer initializers its body reads by name: the outer
    # graph's own quantization may rewrite one (a weight shared with a top-level layer becomes
    # int8), and then the branch gets its own float copy
    borrowed: dict[str, dict[str, onnx.TensorProto]] = field(default_factory=dict)
    # node inside a quantized body -> why it stays float there (its quantization's provenance)
    float_nodes: dict[str, str] = field(default_factory=dict)

    def splice(self, proto: onnx.ModelProto) -> None:
        """Put the bodies into their `If` nodes of `proto` (in place); outer weights only the
        float bodies read are dropped."""
        if not self.bodies:
            return
        read_before: set[str] = set()
        current = {i.name: i for i in proto.graph.initializer}
        for node in proto.graph.node:
            for attr in node.attribute:
                key = f"{node.name}/{attr.name}"
                if node.op_type == "If" and key in self.bodies:
                    read_before |= set(subgraph_reads(node))
                    attr.g.CopyFrom(self._own_copies(key, current))
        drop_unread_initializers(proto.graph, read_before)
        have = {o.domain for o in proto.opset_import}
        for domain, version in self.domains.items():
            if domain not in have:
                proto.opset_import.append(helper.make_opsetid(domain, version))

    def _own_copies(self, key: str, current: Mapping[str, onnx.TensorProto]) -> onnx.GraphProto:
        """The body of `key`, reading a float copy of its own (named after the branch) of each
        borrowed outer initializer the written model no longer holds unchanged."""
        body = onnx.GraphProto()
        body.CopyFrom(self.bodies[key])
        renames: dict[str, str] = {}
        for name, original in self.borrowed.get(key, {}).items():
            now = current.get(name)
            if now is None or now.SerializeToString() != original.SerializeToString():
                copy = onnx.TensorProto()
                copy.CopyFrom(original)
                copy.name = renames[name] = f"{key}/{name}"
                body.initializer.append(copy)
        for node in body.node:
            rename_reads(node, renames)
        return body


def quantize_branches(
    fp32: Model, config: PTQConfig, runs: list[dict[str, NDArray[Any]]], guarded: bool
) -> QuantizedBranches:
    """The quantized body of every branch that the recorded `runs` took and that has
    something to quantize; a branch that cannot be quantized stays float, with a warning that
    says why."""
    from edgequant.analysis.fidelity import FidelityGuard
    from edgequant.ptq.guarded import quantize_static_guarded
    from edgequant.ptq.static import quantize_static

    graph = fp32.proto.graph
    out = QuantizedBranches()
    for branch in branches(graph):
        then = branch.attr == BRANCHES[0]
        taken = [r for r in runs if bool(np.asarray(r[branch.cond]).all()) == then]
        if not taken:
            continue
        body = _branch_graph(graph, branch)
        sub = _standalone(fp32.proto, body, branch, taken[0])
        data = Runs([{name: r[name] for name in branch.reads} for r in taken])
        names = {n.name for n in body.node}
        sub_config = config.with_(
            exclude_nodes=tuple(n for n in config.exclude_nodes if n in names),
            layer_precisions=tuple((n, p) for n, p in config.layer_precisions if n in names),
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the outer model's guard speaks for the whole
                if guarded:
                    q = quantize_static_guarded(sub, sub_config, data, FidelityGuard(samples=16))
                else:
                    q = quantize_static(sub, sub_config, data)
        except NothingToQuantizeError:
            continue
        except Exception as exc:  # the float branch works: a failure here never loses the model
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"{branch.key} stays float: {why}", EdgeQuantWarning, stacklevel=2)
            continue
        out.bodies[branch.key] = new = _as_body(q.proto.graph, body, branch, graph)
        if q.provenance is not None:
            out.float_nodes.update(q.provenance.float_nodes)
        reads = set(outer_reads(new))
        out.borrowed[branch.key] = {i.name: i for i in graph.initializer if i.name in reads}
        for op in q.proto.opset_import:
            if op.domain in ("", "ai.onnx"):
                out.opset = max(out.opset, op.version)
            else:
                out.domains[op.domain] = op.version
    return out


def _branch_graph(graph: onnx.GraphProto, branch: Branch) -> onnx.GraphProto:
    node = next(n for n in graph.node if n.name == branch.node)
    return next(a.g for a in node.attribute if a.name == branch.attr)


def _standalone(
    outer: onnx.ModelProto,
    body: onnx.GraphProto,
    branch: Branch,
    example: Mapping[str, NDArray[Any]],
) -> Model:
    """The branch as a model: its outer reads as inputs (types from a recorded run, every
    dimension free), the outer weights it reads as initializers."""
    inputs = [
        helper.make_tensor_value_info(
            name,
            helper.np_dtype_to_tensor_dtype(np.asarray(example[name]).dtype),
            [None] * np.ndim(example[name]),
        )
        for name in branch.reads
    ]
    wanted = set(outer_reads(body))
    inits = [i for i in outer.graph.initializer if i.name in wanted]
    for node in outer.graph.node:
        if (
            node.op_type == "Constant"
            and node.output[0] in wanted
            and node.attribute[0].name == "value"
        ):
            value = onnx.TensorProto()
            value.CopyFrom(node.attribute[0].t)
            value.name = node.output[0]
            inits.append(value)
    graph = helper.make_graph(
        list(body.node), f"{branch.key}", inputs, list(body.output), [*body.initializer, *inits]
    )
    model = helper.make_model(graph, opset_imports=list(outer.opset_import))
    model.ir_version = outer.ir_version
    return Model(model, branch.key.replace("/", "_"))


def _as_body(
    quantized: onnx.GraphProto, body: onnx.GraphProto, branch: Branch, outer: onnx.GraphProto
) -> onnx.GraphProto:
    """The quantized standalone graph as a branch again: no inputs, the original outputs, every
    name it made prefixed with the branch's key (a name must be unique in the whole model,
    subgraphs included), initializers the outer graph already holds unchanged read from there."""
    outer_inits = {i.name: i for i in outer.initializer}
    keep = {o.name for o in body.output} | set(branch.reads)
    own_names = {n.name for n in body.node}
    own_inits = []
    renames: dict[str, str] = {}
    for init in quantized.initializer:
        same = outer_inits.get(init.name)
        if same is not None and same.SerializeToString() == init.SerializeToString():
            continue  # read from the outer graph, as before
        renames[init.name] = f"{branch.key}/{init.name}"
        own_inits.append(init)
    for node in quantized.node:
        for out in node.output:
            if out and out not in keep:
                renames[out] = f"{branch.key}/{out}"
    nodes = []
    for node in quantized.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        rename_reads(copy, renames)
        for i, out in enumerate(copy.output):
            copy.output[i] = renames.get(out, out)
        if node.name not in own_names:  # a Q/DQ node the writer added
            copy.name = f"{branch.key}/{node.name}"
        nodes.append(copy)
    for init in own_inits:
        init.name = renames[init.name]
    return helper.make_graph(nodes, body.name, [], list(body.output), own_inits)
